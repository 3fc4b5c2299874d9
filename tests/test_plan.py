"""The cost planner: sizes and tile counts from the memory model, time from a calibration."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ntkdsl
from ntkdsl.diagnostics import InputError
from ntkdsl.plan import Calibration, choose_tile, make_plan, makespan

FC = """
net fc(width = 64) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu
    Dense(1, W_std = 1.5, b_std = 0.1)
}
"""


@pytest.fixture(scope="module")
def fc():
    return ntkdsl.compile(FC)


def test_sizes_and_tiles_without_calibration(fc):
    p = make_plan(fc, 1000, (10,), tile=100, calibrate_time=False)
    assert (p.blocks, p.tiles) == ((10, 10), 55)
    assert p.disk_bytes == 2 * 1000 * 1000 * 8
    assert p.wall_seconds(4) is None and "not calibrated" in p.render()
    q = make_plan(fc, 1000, (10,), n2=250, tile=100, dtype="float32", gets=("ntk",),
                  calibrate_time=False)
    assert (q.blocks, q.tiles, q.disk_bytes) == ((10, 3), 30, 1000 * 250 * 4)
    # a tile that would not fit the memory given is made smaller
    small = make_plan(fc, 20000, (10,), memory=2 << 30, calibrate_time=False)
    big = make_plan(fc, 20000, (10,), memory=64 << 30, calibrate_time=False)
    assert small.tile < big.tile and small.tile_bytes <= (2 << 30) // 4
    with pytest.raises(InputError, match="more than the"):
        make_plan(fc, 20000, (10,), memory=64 << 20, calibrate_time=False)


def test_choose_tile_bounds(fc):
    assert choose_tile(fc, (10,), 40, 40, True, 8) == 16  # never below MIN_TILE rows...
    assert choose_tile(fc, (10,), 10, 10, True, 8) == 10  # ...nor above n
    assert choose_tile(fc, (10,), 800, 800, True, 8) == 100  # about 8 blocks per side


def test_makespan():
    assert makespan([1.0] * 10, 1) == 10.0
    assert makespan([1.0] * 10, 2) == 5.0
    assert makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert makespan([1.0] * 3, 8) == 1.0


def test_calibration_fit_recovers_fixed_per_input_and_per_entry_costs():
    def grid(b1, b2):
        return 0.1 + 2e-3 * (b1 + b2) + 1e-4 * b1 * b2

    def diag(b):
        return 0.05 + 1e-3 * b + 1e-4 * b * (b + 1) / 2

    sizes = (8, 16, 32)
    cal = Calibration(sizes, tuple(grid(c, c) for c in sizes), tuple(diag(c) for c in sizes),
                      1.0, "cpu")
    assert cal.grid_time(225, 225) == pytest.approx(grid(225, 225))
    assert cal.grid_time(100, 30) == pytest.approx(grid(100, 30))
    assert cal.diag_time(225) == pytest.approx(diag(225))
    # fewer sizes than terms: the highest-order terms only, never a negative cost
    one = Calibration((16,), (grid(16, 16),), (diag(16),), 1.0, "cpu")
    assert one.grid_time(32, 32) == pytest.approx(grid(16, 16) * 4)


def test_calibrated_plan(fc):
    p = make_plan(fc, 200, (10,), tile=50, workers=2)
    cal = p.calibration
    assert cal is not None and cal.backend == "cpu" and all(s <= 50 for s in cal.sizes)
    assert p.tiles == 10 and [n for n, _ in p.tile_costs] == [4, 6]
    assert all(t > 0 for _, t in p.tile_costs)
    assert p.wall_seconds(2) <= p.wall_seconds(1)
    text = p.render(2)
    assert "wall time on 2 workers" in text and "size on disk: 625.0 KiB" in text


def test_gpu_plan_on_a_cpu_machine_is_not_timed(fc):
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("this machine has an accelerator")
    p = make_plan(fc, 100, (10,), device="gpu", memory=80 << 30)
    assert p.calibration is None and "no gpu on this machine" in p.render()


def test_bad_options(fc):
    with pytest.raises(InputError, match="n must be a positive integer"):
        make_plan(fc, 0, (10,), calibrate_time=False)
    with pytest.raises(InputError, match="device"):
        make_plan(fc, 10, (10,), device="tpu", calibrate_time=False)


def test_cli_plan(tmp_path):
    (tmp_path / "fc.ntk").write_text(FC)
    r = subprocess.run([sys.executable, "-m", "ntkdsl", "plan", "fc.ntk", "--n", "300",
                        "--input-shape", "10", "--workers", "3", "--batch-size", "100",
                        "--calibration-rows", "4"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 x 3 blocks, 6 tiles" in r.stdout and "wall time on 3 workers" in r.stdout
    assert "off-diagonal tile of 4:" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ntkdsl", "plan", "fc.ntk", "--n", "300",
                        "--input-shape", "a,b"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--input-shape" in r.stderr and "Traceback" not in r.stderr
    np.testing.assert_equal(r.stdout, "")
