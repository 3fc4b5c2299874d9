"""The paper's claims, checked by the figure scripts in examples/ (their --quick modes).

The default suite runs one cheap claim (fig. 1's weight-change slopes at a few small
widths) and the per-layer NTK against the generic empirical NTK; every script's quick
mode runs under ``pytest -m slow`` and its measured numbers are held to the claims
with tolerances that a finite, small-scale run can honestly meet.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def script(name: str):
    """Import ``examples/<name>.py`` as a module."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def outputs(tmp_path: Path, stem: str) -> dict:
    """The JSON a script wrote (and check its PNG is there)."""
    png = tmp_path / f"{stem}.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / f"{stem}.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    return json.loads(text)


# -- default suite: cheap ---------------------------------------------------------------

def test_weight_groups_see_every_dense_layer_of_a_repeat():
    """fc3's hidden layers live in a repeat (params (peeled, stacked)): all four count."""
    fig1 = script("fig1_weight_change")
    import jax

    c = script("_common")
    m = c.model("fc_relu.ntk", "fc3", width=8)
    p = m.init(jax.random.PRNGKey(0), (5,))
    g = fig1.weight_groups(m.net, p)
    shapes = {k: [tuple(w.shape) for w in v] for k, v in g.items()}
    assert shapes == {"input": [(5, 8)], "intermediate": [(8, 8), (8, 8)], "output": [(8, 1)]}


def test_layer_ntk_matches_generic_empirical_ntk():
    fig1 = script("fig1_weight_change")
    import jax

    c = script("_common")
    x, _, _, _ = c.two_class_digits(6, 0)
    for net in ("fc1", "fc3"):
        m = c.model("fc_relu.ntk", net, width=32)
        p = m.init(jax.random.PRNGKey(3), x.shape[1:])
        fast = np.asarray(fig1.layer_ntk(m.net, p, x))
        generic = np.asarray(m.empirical_ntk(p, x, implementation="ntvp"))
        np.testing.assert_allclose(fast, generic, rtol=1e-10, atol=1e-10)


def test_fig1_weight_change_slopes_small_widths():
    """Input weights move like width^-1/2, intermediate ones like width^-1 (fc3)."""
    fig1 = script("fig1_weight_change")
    c = script("_common")
    x, y, _, _ = c.two_class_digits(8, 0)
    lr = c.safe_learning_rate(c.model("fc_relu.ntk", "fc3").kernel_fn(x, x, "ntk"), 0.5)
    widths = [64, 128, 256, 512]
    rows = [fig1.run_width("fc3", w, (x, y), 64, lr, 2)[0] for w in widths]
    slope = {k: c.loglog_slope(widths, [np.mean([r[k] for r in rs]) for rs in rows])
             for k in ("input", "intermediate", "output")}
    assert abs(slope["input"] + 0.5) < 0.2, slope
    assert abs(slope["output"] + 0.5) < 0.2, slope
    assert abs(slope["intermediate"] + 1.0) < 0.2, slope


def test_loglog_slope_and_atomic_json(tmp_path):
    c = script("_common")
    w = np.array([64, 128, 256, 512])
    assert math.isclose(c.loglog_slope(w, 3.0 * w**-0.5), -0.5, abs_tol=1e-12)
    c.write_json(tmp_path / "a.json", {"x": np.arange(3), "inf": float("inf")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [0, 1, 2], "inf": "inf"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# -- the quick modes of every script (slow) ---------------------------------------------

@pytest.mark.slow
def test_fig1_quick(tmp_path):
    script("fig1_weight_change").main(["--quick", "--out", str(tmp_path)])
    res = outputs(tmp_path, "fig1_weight_change")
    for net, r in res["nets"].items():
        s = r["slopes"]
        assert abs(s["input"] + 0.5) < 0.2, (net, s)
        assert abs(s["output"] + 0.5) < 0.2, (net, s)
        if "intermediate" in s:
            assert abs(s["intermediate"] + 1.0) < 0.2, (net, s)
        # the kernel: at least as fast as the O(width^-1/2) bound, at most ~1/width
        assert -1.2 < s["ntk"] < -0.3, (net, s)
        assert r["rows"][0]["layer_ntk_vs_empirical_ntk"] < 1e-9


@pytest.mark.slow
def test_fig2_quick(tmp_path):
    script("fig2_gp_outputs").main(["--quick", "--out", str(tmp_path)])
    res = outputs(tmp_path, "fig2_gp_outputs")
    small, large = (res["widths"][str(w)] for w in res["setup"]["widths"])
    assert large["mean_gap"] < small["mean_gap"]
    assert large["var_gap"] < small["var_gap"]
    # the wide ensemble is within a few noise floors of the NTK-GP
    assert large["mean_gap"] < 3 * large["mean_noise"] + 0.05
    assert large["var_gap"] < 3 * large["var_noise"] + 0.05


@pytest.mark.slow
def test_fig3_quick(tmp_path):
    script("fig3_linearization").main(["--quick", "--out", str(tmp_path)])
    res = outputs(tmp_path, "fig3_linearization")
    # the trained linearisation is the closed form with the empirical NTK
    assert res["lin_vs_empirical_closed_form"] < 1e-8
    rmse = res["rmse_max"]["test"]
    assert rmse["lin"] < 0.15 * res["output_scale"] + 0.02
    assert res["loss_final"]["train"]["net"] < 0.01


@pytest.mark.slow
def test_fig4_quick(tmp_path):
    script("fig4_wrn").main(["--quick", "--out", str(tmp_path)])
    res = outputs(tmp_path, "fig4_wrn")
    assert all(math.isfinite(v) for v in res["rmse_final"]["test"].values())
    # the wider WRN ends closer to its linearisation (two widths, 4x apart)
    rows = res["vs_width"]
    assert rows[-1]["rmse_final"] < 0.7 * rows[0]["rmse_final"], rows


@pytest.mark.slow
def test_figS5_quick(tmp_path):
    script("figS5_rmse_scaling").main(["--quick", "--out", str(tmp_path)])
    res = outputs(tmp_path, "figS5_rmse_scaling")
    rows = res["vs_width"]["rows"]
    assert res["vs_width"]["slope_final"] < -0.2
    assert rows[-1]["rmse_final"] < rows[0]["rmse_final"]
