"""``ntkdsl explain``: golden outputs (text and LaTeX), the closed form of a fully
connected net against the numeric recursion, and ``--check``.

Regenerate the goldens with ``NTKDSL_UPDATE_GOLDEN=1 pytest tests/test_explain.py``
and review the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

from ntkdsl.cli import main
from ntkdsl.compiler.explain import closed_form, explain
from ntkdsl.compiler.frontend import load

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden_explain"

CASES = [
    ("fc_relu.ntk", "fc1"),
    ("fc_erf.ntk", None),
    ("digits_cnn.ntk", "cnn_gap"),
    ("wrn.ntk", None),
]


def _load(spec, net):
    n = load(str(SPECS / spec), net=net)
    # the golden must not depend on where the repository lives
    return n.__class__(n.name, n.params, n.body, filename=spec)


@pytest.mark.parametrize("latex", [False, True], ids=["text", "latex"])
@pytest.mark.parametrize(("spec", "net"), CASES, ids=[c[0] for c in CASES])
def test_golden(spec, net, latex):
    got = explain(_load(spec, net), latex=latex)
    path = GOLDEN / f"{Path(spec).stem}{'_' + net if net else ''}.{'tex' if latex else 'txt'}"
    if os.environ.get("NTKDSL_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def _recursion(net_layers, x1, x2):
    """The FC recursion evaluated numerically with the printed pair functions."""
    from ntkdsl.compiler.layers import Dense

    d = x1.shape[-1]
    k11, k12, k22, th = x1 @ x1 / d, x1 @ x2 / d, x2 @ x2 / d, 0.0
    for layer in net_layers:
        if isinstance(layer, Dense):
            w2, b2 = layer.W_std**2, layer.b_std**2
            k11, k12, k22 = (w2 * k + b2 for k in (k11, k12, k22))
            th = k12 + w2 * th
        else:
            t, td = layer.pair_fn()(k11, k12, k22)
            k11, k12, k22, th = layer.diag_fn()(k11), t, layer.diag_fn()(k22), td * th
    return float(k12), float(th)


@pytest.mark.parametrize(("spec", "net"), [("fc_relu.ntk", "fc1"), ("fc_erf.ntk", None)])
def test_closed_form_matches_recursion(spec, net):
    n = _load(spec, net)
    K, Th = closed_form(n)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=5), rng.normal(size=5)
    vals = {"xx": x1 @ x2, "xx1": x1 @ x1, "xx2": x2 @ x2, "d": 5}
    subs = {sympy.Symbol(k, real=True) if k != "d" else sympy.Symbol(k, positive=True): v
            for k, v in vals.items()}
    leaves = [layer for layer in n.walk() if layer.combine is None]  # repeats unrolled
    k_ref, th_ref = _recursion(leaves, jnp.asarray(x1), jnp.asarray(x2))
    assert abs(float(K.subs(subs).evalf()) - k_ref) < 1e-10 * abs(k_ref)
    assert abs(float(Th.subs(subs).evalf()) - th_ref) < 1e-10 * abs(th_ref)


def test_no_closed_form_for_conv():
    assert closed_form(_load("digits_cnn.ntk", "cnn_gap")) is None


def test_cli_check(capsys):
    assert main(["explain", str(SPECS / "fc_erf.ntk"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "identities hold" in out and "0 failed" in out and "K1 = 1.44 * K0 + 0.0025" in out


def test_cli_latex(capsys):
    assert main(["explain", str(SPECS / "fc_relu.ntk"), "--net", "fc3", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "\\begin{align*}" in out and "\\end{align*}" in out


def test_cli_spec_error(tmp_path, capsys):
    p = tmp_path / "bad.ntk"
    p.write_text("net n { Dense(3) Reluu }\n")
    assert main(["explain", str(p)]) == 2
    assert "error" in capsys.readouterr().err
