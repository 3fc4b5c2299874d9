"""The branch statements Sum, Concat and Product: front end, kernels, finite nets, rendering.

Kernels are checked against independent computations: the kernels of the branch
sub-nets compiled on their own (a sum, a channel-weighted mean ``C_b / C``, a product
with the product rule for the NTK), Residual against its ``Sum`` spelling, and the
closed form of a fully connected net against the compiled kernel function. The
peer goldens are in ``test_branches_golden.py``, the Monte Carlo convergence of the
finite nets in ``test_branches_monte_carlo.py``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import sympy

import ntkdsl
from ntkdsl.compiler.checks import infer_shapes
from ntkdsl.diagnostics import SpecError

jax.config.update("jax_enable_x64", True)

X = np.random.default_rng(0).standard_normal((4, 5))
X2 = np.random.default_rng(1).standard_normal((3, 5))
IMG = np.random.default_rng(2).standard_normal((3, 5, 5, 2))


def kernels(src: str, x=X, x2=X2):
    k = ntkdsl.compile(src).kernel_fn(x, x2, get=("nngp", "ntk"))
    return np.asarray(k.nngp), np.asarray(k.ntk)


# -- malformed uses, each located -------------------------------------------------------
MALFORMED = [
    ("net a { Dense(3) Sum { Dense(3) } }", 1, 18,
     "Sum needs at least two branches { ... } { ... }, got 1 (an empty body { } is the "
     "identity)"),
    ("net a {\n  Dense(3)\n  Sum { Dense(3) } { } { }\n}", 3, 24,
     "a Sum may have at most one identity branch { }, but branches 2 and 3 are both empty: "
     "y = x + x is not a sum of independent paths, so the kernels do not add"),
    ("net a { Dense(3) Product { Dense(3) } { } }", 1, 39,
     "a Product branch cannot be the identity (branch 2 is empty): each branch must end in "
     "an affine layer (Dense, Conv, ...) so that the branches are independent zero-mean "
     "Gaussians and their kernels multiply"),
    ("net a { Dense(3) Relu Concat { Dense(4) } { Dense(2) } Relu }", 1, 56,
     "Relu needs a Gaussian input, but its input is the output of Concat at line 1 "
     "(branches side by side, not one Gaussian): put a Dense or Conv before it"),
    ("net a { Dense(3) Relu Product { Dense(4) } { Dense(4) } Erf }", 1, 57,
     "Erf needs a Gaussian input, but its input is the output of Product at line 1 "
     "(a product of Gaussians, not a Gaussian): put a Dense or Conv before it"),
    ("net a { Dense(3) Sum { Dense(3) }\n  { Dense(3) Relu } }", 2, 3,
     "each non-identity Sum branch must end in an affine layer (Dense, Conv, ...), but "
     "branch 2 ends in Relu: otherwise the branches are not independent Gaussians and the "
     "kernel of their sum is not the sum of theirs"),
    ("net a { Dense(3) Relu Product { Dense(3) } { Dense(3) Relu } }", 1, 44,
     "each Product branch must end in an affine layer (Dense, Conv, ...), but branch 2 ends "
     "in Relu: otherwise the branches are not independent Gaussians and the kernel of their "
     "product is not the product of theirs"),
    ("net a { Dense(3) Sum { Dense(4) } { } }", 1, 18,
     "Sum branch 1 gives 4 channels but branch 2 (the identity: its input) gives 3; they "
     "must match to be added"),
    ("net a { Dense(3) Product { Dense(4) } { Dense(2) } }", 1, 18,
     "Product branch 1 gives 4 channels but branch 2 gives 2; they must match to be "
     "multiplied"),
    ("net a { Conv(3, 3) Relu Concat { Conv(4, 3, strides = 2) } { Conv(2, 1) } }", 1, 25,
     "Concat branch 1 has total stride 2 but branch 2 has 1; they must downsample alike to "
     "be concatenated"),
    ("net a { Conv(3, 3) Relu Concat { Conv(4, 3) } { Conv(2, 1) Flatten } }", 1, 25,
     "Concat branch 1 and branch 2 differ in whether spatial axes remain"),
    ("net a { Dense(3) Sum ( ) }", 1, 22, "unexpected '('; expected '{'"),
]


@pytest.mark.parametrize("src,line,col,message", MALFORMED)
def test_malformed_branches_are_located(src, line, col, message):
    with pytest.raises(SpecError) as info:
        ntkdsl.compile(src)
    err = info.value
    assert (err.line, err.column, err.message) == (line, col, message)


@pytest.mark.parametrize("src,shape,message", [
    ("net a { Conv(3, 3) Relu Concat { Conv(4, 3, padding = VALID) } { Conv(2, 1) } "
     "Conv(2, 1) }", (5, 5, 3),
     "Concat branch 1 gives shape (3, 3, 4) but branch 2 gives (5, 5, 2); they must match "
     "in all but the channel (last) axis to be concatenated"),
    ("net a { Conv(3, 3) Relu Sum { Conv(3, 3, padding = VALID) } { Conv(3, 1) } }",
     (5, 5, 3),
     "Sum branch 1 gives shape (3, 3, 3) but branch 2 gives (5, 5, 3); they must match to "
     "be added"),
])
def test_branch_shapes_that_disagree_for_an_input(src, shape, message):
    with pytest.raises(SpecError) as info:
        infer_shapes(ntkdsl.compile(src).net, shape)
    assert (info.value.line, info.value.column, info.value.message) == (1, 25, message)


def test_a_branch_in_a_block_is_located_in_the_block_with_the_call_chain():
    src = "block b { Sum { Dense(3) } { Relu } }\nnet a { Dense(3) b }"
    with pytest.raises(SpecError) as info:
        ntkdsl.compile(src)
    assert (info.value.line, info.value.column) == (1, 28)
    assert "branch 2 ends in Relu" in info.value.message
    assert "b" in str(info.value)


# -- kernels ------------------------------------------------------------------------------
def test_residual_is_sum_with_an_identity_or_shortcut_branch():
    pre = "net a { Dense(4, b_std = 0.1) Relu Dense(4) "
    for res, s in [("Residual { Relu Dense(4, W_std = 1.3) }",
                    "Sum { Relu Dense(4, W_std = 1.3) } { }"),
                   ("Residual { Relu Dense(4) } shortcut { Dense(4, W_std = 0.5) }",
                    "Sum { Relu Dense(4) } { Dense(4, W_std = 0.5) }")]:
        a, b = kernels(pre + res + " Relu Dense(1) }"), kernels(pre + s + " Relu Dense(1) }")
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)
    a = kernels("net a { Conv(3, 3) Residual { Relu Conv(3, 2) } Relu GlobalAvgPool Dense(1) }",
                IMG, None)
    b = kernels("net a { Conv(3, 3) Sum { } { Relu Conv(3, 2) } Relu GlobalAvgPool Dense(1) }",
                IMG, None)
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)


PRE_FC = "net a { Dense(3, W_std = 1.2) Relu "
def _bodies(bodies) -> str:
    return " ".join("{ " + b + " }" for b in bodies)


BR = ["Dense(6, W_std = 1.5)", "Dense(2, W_std = 0.7, b_std = 0.3)", "Dense(4) Erf Dense(6)"]


def test_sum_of_three_adds_the_branch_kernels():
    parts = [kernels(PRE_FC + b.replace("(2,", "(6,") + " }") for b in BR]
    got = kernels(PRE_FC + "Sum " + _bodies(b.replace("(2,", "(6,") for b in BR)
                  + " }")
    np.testing.assert_allclose(got, sum(np.array(p) for p in parts), rtol=1e-13)


@pytest.mark.parametrize("x2", [X2, None])
def test_concat_is_the_channel_weighted_mean(x2):
    parts = [kernels(PRE_FC + b + " }", X, x2) for b in BR]
    ident = kernels(PRE_FC + "Identity }", X, x2)  # the identity branch: 3 channels
    got = kernels(PRE_FC + "Concat " + _bodies(BR) + " { } }", X, x2)
    ws = np.array([6, 2, 6, 3]) / 17
    want = sum(w * np.array(p) for w, p in zip(ws, [*parts, ident]))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # and read by a Dense: its kernel is W^2 (that mean) + b^2
    nngp, _ = kernels(PRE_FC + "Concat " + _bodies(BR)
                      + " { } Dense(1, W_std = 1.1, b_std = 0.2) }", X, x2)
    np.testing.assert_allclose(nngp, 1.21 * want[0] + 0.04, rtol=1e-13)


def test_concat_in_a_cnn_is_the_channel_weighted_mean():
    pre = "net a { Conv(3, 3, W_std = 1.3) Relu "
    got = kernels(pre + "Concat { Conv(5, 3) } { Conv(3, 1, b_std = 0.2) } GlobalAvgPool }",
                  IMG, None)
    ga = kernels(pre + "Conv(5, 3) GlobalAvgPool }", IMG, None)
    gb = kernels(pre + "Conv(3, 1, b_std = 0.2) GlobalAvgPool }", IMG, None)
    np.testing.assert_allclose(got, 5 / 8 * np.array(ga) + 3 / 8 * np.array(gb), rtol=1e-13)


@pytest.mark.parametrize("x2", [X2, None])
def test_product_multiplies_kernels_and_the_ntk_follows_the_product_rule(x2):
    brs = [b.replace("(2,", "(6,") for b in BR]
    (k1, t1), (k2, t2), (k3, t3) = [kernels(PRE_FC + b + " }", X, x2) for b in brs]
    k, t = kernels(PRE_FC + "Product " + _bodies(brs) + " }", X, x2)
    np.testing.assert_allclose(k, k1 * k2 * k3, rtol=1e-13)
    np.testing.assert_allclose(t, t1 * k2 * k3 + k1 * t2 * k3 + k1 * k2 * t3, rtol=1e-13)


def test_force_full_reference_path_agrees():
    from ntkdsl.compiler import analysis

    src = ("net a { Conv(3, 3) Relu Concat { Conv(4, 3) } { Conv(2, 1) } { } Conv(3, 2) Relu "
           "Product { Conv(3, 3) } { Conv(3, 1, b_std = 0.1) } Flatten Dense(1) }")
    net = ntkdsl.compile(src).net
    assert not analysis.plan(net, IMG.shape[1:]).full_in  # Flatten: diagonal path
    a = kernels(src, IMG, None)
    assert np.all(np.isfinite(a))


def test_closed_form_of_fc_branches_equals_the_kernel_function():
    from ntkdsl.compiler.explain import closed_form

    src = ("net a { Dense(3, W_std = 1.2) Relu Concat { Dense(2, b_std = 0.3) } { } "
           "Dense(4) Product { Dense(2) } { Dense(2, W_std = 0.5) } Dense(1) }")
    model = ntkdsl.compile(src)
    K, Th = closed_form(model.net)
    xx, xx1, xx2 = sympy.symbols("xx xx1 xx2", real=True)
    d = sympy.Symbol("d", positive=True)
    a, b = X[0], X2[1]
    vals = {xx: float(a @ b), xx1: float(a @ a), xx2: float(b @ b), d: 5}
    nngp, ntk = kernels(src, X[:1], X2[1:2])
    assert float(K.subs(vals)) == pytest.approx(nngp[0, 0], rel=1e-12)
    assert float(Th.subs(vals)) == pytest.approx(ntk[0, 0], rel=1e-12)


# -- the finite net -----------------------------------------------------------------------
def test_finite_net_is_the_same_graph():
    src = ("net a { Dense(3) Relu Concat { Dense(4) } { } { Dense(2) Relu Dense(1) } "
           "Sum { Dense(8) } { } Product { Dense(2) } { Dense(2, b_std = 0.5) } }")
    model = ntkdsl.compile(src)
    params = model.init(jax.random.key(0), (5,))
    concat, summ, prod = model.net.body.layers[2:]
    assert params[2][1] == () and params[3][1] == ()  # identity branches have no params
    h = np.asarray(model.net.body.layers[1].apply((), _dense(model, params, X)))
    c = np.concatenate([np.asarray(concat.paths[0].apply(params[2][0], h)), h,
                        np.asarray(concat.paths[2].apply(params[2][2], h))], axis=-1)
    assert c.shape == (4, 8)
    s = np.asarray(summ.paths[0].apply(params[3][0], c)) + c
    p = np.asarray(prod.paths[0].apply(params[4][0], s)) * np.asarray(
        prod.paths[1].apply(params[4][1], s))
    np.testing.assert_allclose(np.asarray(model.apply(params, X)), p, rtol=1e-13)
    # branches get independent params
    assert not np.allclose(params[4][0][0]["w"], params[4][1][0]["w"])


def _dense(model, params, x):
    return np.asarray(model.net.body.layers[0].apply(params[0], x))


def test_finite_concat_cnn_shapes():
    model = ntkdsl.compile("net a { Conv(3, 3) Relu Concat { Conv(4, 3) } { Conv(2, 1) } { } "
                           "GlobalAvgPool Dense(1) }")
    params = model.init(jax.random.key(0), (5, 5, 2))
    assert model.apply(params, IMG).shape == (3, 1)


# -- rendering ----------------------------------------------------------------------------
def test_check_lists_each_branch_and_shapes():
    from ntkdsl.cli.check import summarize

    net = ntkdsl.compile("net a { Dense(3) Relu Concat { Dense(4) } { } Dense(1) }").net
    text = summarize(net, (5,))
    assert "Concat" in text and "branch 1:" in text and "branch 2: identity" in text
    assert "-> (7,)" in text


def test_explain_shows_the_rules_with_the_weights():
    from ntkdsl.compiler.explain import explain

    net = ntkdsl.compile("net a { Dense(3) Relu Concat { Dense(4) } { } Dense(1) "
                         "Product { Dense(2) } { Dense(2) } }").net
    text = explain(net, input_shape=(5,))
    assert "Concat: the channel-weighted mean of the branches (C_b / C)" in text
    assert "0.571429*K" in text.replace(" ", ""), text
    assert "Product of independent branches" in text
    sym = explain(net)
    assert "(C1/C)" in sym
    assert "\\frac{C_{1}}{C}" in explain(net, latex=True)
