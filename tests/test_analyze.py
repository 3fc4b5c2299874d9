"""``ntkdsl analyze``: the signal-propagation theory against known results and against
the compiled kernels' own recursion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.compiler.frontend import load_all
from ntkdsl.compiler.layers import Erf, Relu, Tanh
from ntkdsl.signal import analyze, find_chain, maps, propagate, warn_if_deep
from ntkdsl.signal.analysis import input_kernels

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"


def fc(act: str, w2: float, b2: float, depth: int, width: int = 8) -> ntkdsl.Model:
    """``depth`` blocks Dense -> act, then a readout with the same W, b."""
    return ntkdsl.compile(
        f"net t(depth = {depth}) {{\n defaults W_std = sqrt({w2}), b_std = sqrt({b2})\n"
        f" repeat depth {{ Dense({width}); {act} }}\n Dense(1)\n}}"
    )


# ---- known results ----------------------------------------------------------------------


def test_relu_critical_line_is_w2_equal_2():
    assert maps.critical_w2(Relu(), 0.0) == pytest.approx(2.0, rel=1e-14)
    line = maps.critical_line(Relu())
    assert line is not None and float(line.equation.rhs) == 2.0
    for w2, phase in ((1.9, "ordered"), (2.0, "critical"), (2.1, "chaotic")):
        assert analyze(fc("Relu", w2, 0.0, 3), closed_form=False).phase == phase


# Poole et al. 2016 / Schoenholz et al. 2017 (fig. 1): for tanh at b_std^2 = 0.05 the
# critical point is W_std^2 ~ 1.76 (read off the published figure, 2-3 digits: tol 0.01).
# At b = 0 the line starts at 1 / phi'(0)^2 exactly: 1 for tanh, pi/4 for erf.
def test_tanh_critical_point_published():
    assert maps.critical_w2(Tanh(), 0.05) == pytest.approx(1.76, abs=0.01)
    assert maps.critical_w2(Tanh(), 0.0) == pytest.approx(1.0, rel=1e-12)
    assert maps.critical_w2(Erf(), 0.0) == pytest.approx(math.pi / 4, rel=1e-12)


# tanh's quadrature closed forms take ~15 s to compile: its sweep runs under -m slow
@pytest.mark.parametrize("act", [pytest.param(Tanh(), marks=pytest.mark.slow), Erf()],
                         ids=["tanh", "erf"])
@pytest.mark.parametrize("b2", [0.01, 0.05, 0.1, 0.3])
def test_critical_curve_has_chi_1_one(act, b2):
    # independent of the parametric derivation: solve q* with the fixed-point search
    # at the curve's W^2 and evaluate chi_1 there
    w2 = maps.critical_w2(act, b2)
    fp = maps.variance_fixed_point(w2, b2, act)
    assert 0 < fp.q_star < math.inf and fp.stable
    chi = float(w2 * maps.diag_dot(act, fp.q_star))
    assert chi == pytest.approx(1.0, abs=1e-9)
    # the curve rises with the bias: more bias needs more weight to reach chaos
    assert maps.critical_w2(act, b2 * 1.5) > w2


def test_erf_closed_form_critical_line_matches_numerics():
    line = maps.critical_line(Erf())
    assert line is not None
    w, b = line.equation.rhs.free_symbols.pop(), None
    for b2 in (0.01, 0.05, 0.1, 0.3):
        w2 = maps.critical_w2(Erf(), b2)
        b = float(line.equation.rhs.subs(w, w2))
        assert b == pytest.approx(b2, rel=1e-8)
    assert maps.critical_line(Tanh()) is None  # quadrature: numerics only


def test_no_finite_fixed_point_is_reported():
    fp = maps.variance_fixed_point(3.0, 0.1, Relu())
    assert fp.q_star == math.inf and "grows geometrically" in fp.note
    assert fp.slope == pytest.approx(1.5, rel=1e-9)
    fp = maps.variance_fixed_point(1.0, 0.0, Relu())
    assert fp.q_star == 0.0 and "decays" in fp.note
    fp = maps.variance_fixed_point(1.0, 0.1, Relu())  # q* = b^2 / (1 - W^2/2)
    assert fp.q_star == pytest.approx(0.2, rel=1e-12) and fp.slope == pytest.approx(0.5)


# ---- the theory against the compiled kernels ----------------------------------------------


def _kernel_corr(model, x):
    k = model.kernel_fn(x, None, ("nngp", "ntk"), progress=False)
    return np.asarray(k.nngp), np.asarray(k.ntk)


@pytest.mark.parametrize(("act", "w2", "b2"), [("Erf", 1.0, 0.05), ("Erf", 3.0, 0.05),
                                               ("Relu", 1.5, 0.1)])
def test_propagation_is_the_compiled_recursion(act, w2, b2):
    """Layer by layer: the maps' kernels equal model.kernel_fn of the net cut at that depth."""
    x = np.random.default_rng(1).normal(size=(5, 7))
    k0, d0 = input_kernels(x)
    ia, ib = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    deep = fc(act, w2, b2, 6)
    prop = propagate(find_chain(deep.net), 6, k0, d0, ia, ib, end=None, record=True)
    for depth in (0, 2, 6):
        nngp, ntk = _kernel_corr(fc(act, w2, b2, depth), x)
        # `depth` blocks and the readout = the (depth + 1)-th pre-activation
        want_nngp, want_ntk = prop.layers[depth]
        np.testing.assert_allclose(nngp, want_nngp, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(ntk, want_ntk, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("w2", "b2", "phase"), [(0.5, 0.05, "ordered"), (3.0, 0.05, "chaotic")])
def test_fixed_points_and_depth_scale_match_the_kernels(w2, b2, phase):
    """Deep compiled kernels sit at (q*, c*); deviations from c* shrink by exp(-1/xi_c)."""
    x = np.random.default_rng(2).normal(size=(4, 6))
    a = analyze(fc("Erf", w2, b2, 1), closed_form=False)
    assert a.phase == phase
    depth = 20
    nngp, _ = _kernel_corr(fc("Erf", w2, b2, depth), x)
    d = np.diag(nngp)
    off = (nngp / np.sqrt(d[:, None] * d[None, :]))[np.triu_indices(4, 1)]
    # deviations shrink at least like exp(-l / xi) near the fixed point, from their start
    q1 = w2 * np.sum(x * x, axis=1) / x.shape[1] + b2
    start = float(np.max(np.abs(q1 - a.q_star))) / a.q_star
    np.testing.assert_allclose(d, a.q_star, rtol=2 * start * math.exp(-depth / a.xi_q))
    if phase == "chaotic":
        assert 0 < a.c_star < 1
    else:
        assert a.c_star == 1.0
    np.testing.assert_allclose(off, a.c_star, atol=3 * math.exp(-(depth + 1) / a.xi_c))
    # the depth scale from the recursion's own deviations deep in the net (the recursion
    # is model.kernel_fn's, test_propagation_is_the_compiled_recursion)
    k0, d0 = input_kernels(x)
    ia, ib = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    prop = propagate(find_chain(fc("Erf", w2, b2, 1).net), 60, k0, d0, ia, ib, end=None,
                     record=True)
    dev = []
    for layer in (30, 40):
        k = prop.layers[layer][0]
        dev.append(abs(k[0, 1] / math.sqrt(k[0, 0] * k[1, 1]) - a.c_star))
    xi = -10 / math.log(dev[1] / dev[0])
    assert xi == pytest.approx(a.xi_c, rel=0.02)


def test_conv_follows_the_dense_maps_on_uniform_inputs():
    """CIRCULAR padding and inputs equal at every position: the CNN is the FC theory."""
    m = ntkdsl.compile("net c { defaults W_std = 1.2, b_std = 0.3\n"
                       " repeat 2 { Conv(4, 3, padding = CIRCULAR); Erf }\n"
                       " Flatten\n Dense(1) }")
    v = np.random.default_rng(3).normal(size=(4, 1, 1, 2))
    x = np.broadcast_to(v, (4, 4, 4, 2)).copy()
    a = analyze(m, x=x, closed_form=False)
    assert a.kernel_agreement is not None and a.kernel_agreement < 1e-12


# ---- warnings ------------------------------------------------------------------------------


def test_deep_ordered_net_warned_singular_and_critical_not():
    x = np.random.default_rng(4).normal(size=(8, 5))
    a = analyze(fc("Relu", 1.0, 0.1, 60), x=x, closed_form=False, kernels=False)
    assert a.phase == "ordered"
    assert any("singular to float64" in w for w in a.warnings), a.warnings
    a = analyze(fc("Relu", 2.0, 0.0, 60), x=x, closed_form=False, kernels=False)
    assert a.phase == "critical" and a.warnings == ()


def test_deep_chaotic_net_warned():
    x = np.random.default_rng(5).normal(size=(8, 5))
    a = analyze(fc("Erf", 3.0, 0.05, 400), x=x, closed_form=False, kernels=False)
    assert a.phase == "chaotic" and a.c_spread < 1e-12
    assert any("no longer tells the inputs apart" in w and "correlation" in w
               for w in a.warnings), a.warnings


def test_warn_if_deep_prints_one_line(capsys):
    import io

    buf = io.StringIO()
    assert warn_if_deep(fc("Relu", 1.0, 0.1, 80), file=buf) is not None
    assert buf.getvalue().count("\n") == 1 and "singular" in buf.getvalue()
    buf = io.StringIO()
    assert warn_if_deep(fc("Relu", 2.0, 0.0, 80), file=buf) is None and buf.getvalue() == ""
    # a net outside the theory: silent, never an error
    wrn = ntkdsl.compile_file(SPECS / "wrn.ntk")
    assert warn_if_deep(wrn, file=buf) is None and buf.getvalue() == ""


# ---- the command line -----------------------------------------------------------------------


def _nets():
    return [(p, n.name) for p in sorted(SPECS.glob("*.ntk")) if p.name != "common.ntk"
            for n in load_all(p)]


#: example nets that are not chains of affine + nonlinearity blocks (branches, LayerNorm)
OUTSIDE_THE_THEORY = {"wrn", "inception", "unet", "unet_resize", "layernorm_mlp",
                      "transformer", "gnn", "gnn_nodes"}


@pytest.mark.parametrize(("path", "net"), _nets(), ids=lambda v: getattr(v, "name", v))
def test_every_example(path, net, capsys, tmp_path):
    rc = main(["analyze", str(path), "--net", net, "--json"])
    out, err = capsys.readouterr()
    if net in OUTSIDE_THE_THEORY:
        assert rc == 2 and "not covered" in err and "Traceback" not in err
        return
    assert rc == 0, err
    d = json.loads(out)
    for key in ("q_star", "chi_1", "phase", "c_star", "xi_q", "xi_c", "warnings"):
        assert key in d
    assert d["phase"] in ("ordered", "chaotic", "critical")
    assert isinstance(d["warnings"], list)
    assert d["chi_1"] > 0


def test_cli_text_latex_and_plot(tmp_path, capsys):
    out = tmp_path / "a.png"
    assert main(["analyze", str(SPECS / "fc_erf.ntk"), "--latex", "--plot", str(out),
                 "--depth", "4"]) == 0
    text = capsys.readouterr().out
    assert "phase" in text and "chaotic" in text and "\\operatorname{asin}" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_with_inputs_and_set(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(7).normal(size=(6, 64)))
    assert main(["analyze", str(SPECS / "fc_deep.ntk"), "--set", "depth=3", "--set",
                 "width=16", "--x", str(tmp_path / "x.npy"), "--json",
                 str(tmp_path / "a.json")]) == 0
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["depth"] == 3 and d["nngp_cond"] > 1 and d["eta_critical"] > 0
    assert d["kernel_agreement"] < 1e-12  # the theory is the FC kernel's own recursion
    capsys.readouterr()


@pytest.mark.parametrize("body", [
    "repeat 3 { Conv(4, 3); Relu; AvgPool(1) }\n GlobalAvgPool\n Dense(1)",
    "Dense(4)\n Dense(4)\n Relu\n Dense(1)",
])
def test_unsupported_nets_exit_2(tmp_path, body, capsys):
    spec = tmp_path / "n.ntk"
    spec.write_text(f"net n {{\n {body}\n}}\n")
    assert main(["analyze", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ntkdsl analyze:" in err


def test_bad_depth_exit_2(capsys):
    assert main(["analyze", str(SPECS / "fc_erf.ntk"), "--depth", "0"]) == 2
    assert "--depth" in capsys.readouterr().err
