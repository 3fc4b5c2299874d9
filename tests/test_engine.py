"""The tile engine on Dask, and crashes: a worker killed mid-run, the driver killed and rerun."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ntkdsl
from ntkdsl.engine import compute_kernel_store
from ntkdsl.store import open_kernel, read_done

FC = """
net fc(width = 64) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu
    Dense(1, W_std = 1.5, b_std = 0.1)
}
"""


@pytest.fixture(scope="module")
def model():
    return ntkdsl.compile(FC)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).standard_normal((120, 5))


@pytest.fixture(scope="module")
def reference(model, x):
    return model.kernel_fn(x, None, dtype="float64")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    from ntkdsl.engine import local_cluster

    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


def _check(ks, reference):
    for g in ("nngp", "ntk"):
        got, want = np.asarray(getattr(ks, g)[...]), np.asarray(getattr(reference, g))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_local_cluster_of_two_workers(tmp_path, model, x, reference, client):
    np.save(tmp_path / "x.npy", x)
    ks = compute_kernel_store(model, tmp_path / "x.npy", None, tmp_path / "k.zarr",
                              tile_size=16, client=client)
    _check(ks, reference)
    # the same tiles in this process give the same bits
    local = compute_kernel_store(model, tmp_path / "x.npy", None, tmp_path / "l.zarr",
                                 tile_size=16)
    assert np.array_equal(np.asarray(ks.ntk[...]), np.asarray(local.ntk[...]))
    # both workers took tiles, each compiling once (one model per job per process)
    pids = client.run(lambda: (os.getpid(), len(__import__("ntkdsl.engine").engine._MODELS)))
    assert len(pids) == 2 and all(n == 1 for _, n in pids.values())


def test_worker_killed_mid_run(tmp_path, model, x, reference, client):
    pids = list(client.run(os.getpid).values())
    path = tmp_path / "k.zarr"
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(read_done(path)) >= 10:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(len(read_done(path)))
                return
            time.sleep(0.002)

    t = threading.Thread(target=killer)
    t.start()
    ks = compute_kernel_store(model, x, None, path, tile_size=4, client=client)
    t.join()
    assert killed and killed[0] < len(ks.all_tiles()), "the worker died after the run"
    _check(ks, reference)
    assert ks.complete
    assert pids[0] not in client.run(os.getpid).values()


def _run_cli(args, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "ntkdsl", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def test_driver_killed_then_rerun_computes_only_missing_tiles(tmp_path, x, reference):
    (tmp_path / "fc.ntk").write_text(FC)
    np.save(tmp_path / "x.npy", x)
    args = ["kernel", "fc.ntk", "--x1", "x.npy", "--store", "k.zarr", "--batch-size", "4"]
    proc = _run_cli(args, tmp_path)
    done_dir = tmp_path / "k.zarr" / "done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.is_dir() and len(read_done(tmp_path / "k.zarr")) >= 5:
            break
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGSTOP)  # freeze it, so the count below is the final one
    done_before = len(read_done(tmp_path / "k.zarr"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    total = 30 * 31 // 2
    assert 5 <= done_before < total, done_before
    with pytest.raises(ntkdsl.InputError, match="unfinished"):
        open_kernel(tmp_path / "k.zarr")

    proc = _run_cli(args, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    m = re.search(r"(\d+) already done, computing (\d+)", err)
    assert m, err
    assert (int(m[1]), int(m[2])) == (done_before, total - done_before)
    assert f"computed {total - done_before} tiles" in err
    _check(open_kernel(tmp_path / "k.zarr"), reference)


@pytest.mark.slow
def test_cli_workers(tmp_path, x, reference):
    (tmp_path / "fc.ntk").write_text(FC)
    np.save(tmp_path / "x.npy", x[:40])
    r = subprocess.run([sys.executable, "-m", "ntkdsl", "kernel", "fc.ntk", "--x1", "x.npy",
                        "--store", "k.zarr", "--batch-size", "16", "--workers", "2"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "local Dask cluster of 2 worker processes" in r.stderr
    ks = open_kernel(tmp_path / "k.zarr")
    want = np.asarray(reference.ntk)[:40, :40]
    np.testing.assert_allclose(np.asarray(ks.ntk[...]), want, rtol=1e-12,
                               atol=1e-12 * np.abs(want).max())
