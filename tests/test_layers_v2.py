"""The v2 layers SumPool, GlobalSumPool, LayerNorm, Dropout, ConvTranspose, ConvLocal, Resize.

Their kernels against independent computations (the peer's goldens are in
tests/test_golden.py): the finite layers' exact second moments, the Monte Carlo
kernels of their finite nets (the harness of tests/test_monte_carlo.py; the
heavier sweeps under ``-m slow``), the index maps against the finite ops, and
malformed uses located at the offending argument.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl import SpecError
from ntkdsl.compiler.frontend import parse
from ntkdsl.compiler.layers import BUILTINS
from ntkdsl.compiler.layers.convolutions import ConvTranspose, transpose_maps
from ntkdsl.compiler.layers.resize import resize_matrix
from ntkdsl.empirical import monte_carlo_kernel

NEW = ("SumPool", "GlobalSumPool", "LayerNorm", "Dropout", "ConvTranspose", "ConvLocal",
       "Resize")


def inputs(shape, n=3, seed=0):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, *shape)))


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def test_new_layers_are_registered():
    assert set(NEW) <= set(BUILTINS)


# ---- index maps against the finite ops ---------------------------------------------

@pytest.mark.parametrize("n,k,s,pad", [(3, 3, 2, "SAME"), (4, 2, 1, "SAME"), (3, 3, 2, "VALID"),
                                        (4, 1, 3, "VALID"), (3, 3, 2, "CIRCULAR"),
                                        (4, 2, 1, "CIRCULAR"), (2, 4, 1, "CIRCULAR")])
def test_conv_transpose_index_maps_are_the_finite_layer(n, k, s, pad):
    # a one-hot filter at offset d maps input i to the outputs T_d[:, i]
    layer = ConvTranspose(out=1, kernel=k, strides=s, padding=pad)
    mats = transpose_maps(n, k, s, pad)
    for d in range(k):
        w = np.zeros((k, 1, 1))
        w[d] = np.sqrt(k)  # cancels the 1/sqrt(fan_in) of the ntk parameterisation
        y = layer.apply({"w": w}, np.eye(n)[:, :, None])[:, :, 0]  # (inputs i, outputs o)
        np.testing.assert_allclose(np.asarray(y).T, mats[d], atol=1e-12)
    assert layer.out_shape((n, 1))[0] == mats[0].shape[0]


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_resize_matrix_is_the_finite_layer(method):
    m = ntkdsl.compile(f'net n {{ Resize((2, 3), method = "{method}") }}')
    x = inputs((3, 2, 1), n=2)
    y = np.asarray(m.apply(m.init(jax.random.key(0), x.shape[1:]), x))
    r0, r1 = resize_matrix(3, 6, method), resize_matrix(2, 6, method)
    np.testing.assert_allclose(y[..., 0], np.einsum("ai,bj,nij->nab", r0, r1, x[..., 0]),
                               atol=1e-12)


# ---- kernels against exact second moments of the finite layers ------------------------

def _base_kernels(spec_tail, shape, x, x2=None, force=False):
    m = ntkdsl.compile(f"net n {{ Conv(4, 2, W_std = 1.3, b_std = 0.2); Relu; {spec_tail} }}")
    return m.kernel_fn(x, x2, ("nngp", "ntk"))


def test_sum_pools_are_avg_pools_times_window_squared():
    x = inputs((4, 4, 2))
    s = _base_kernels("SumPool((2, 1), strides = 1, padding = SAME); GlobalSumPool", (4, 4, 2), x)
    a = _base_kernels("AvgPool((2, 1), strides = 1, padding = SAME); GlobalAvgPool", (4, 4, 2), x)
    np.testing.assert_allclose(s.nngp, a.nngp * 4 * 16 ** 2, rtol=1e-12)
    np.testing.assert_allclose(s.ntk, a.ntk * 4 * 16 ** 2, rtol=1e-12)


def test_dropout_divides_the_same_sample_diagonal_by_q():
    x, x2 = inputs((5,)), inputs((5,), n=2, seed=1)
    net = "net n {{ Dense(8, b_std = 0.1); Relu; {} Dense(1, b_std = 0.3) }}"
    with_d, without = (ntkdsl.compile(net.format(d)) for d in ("Dropout(0.25);", ""))
    kd, k0 = with_d.kernel_fn(x, None), without.kernel_fn(x, None)
    q = 0.75
    # K' = W^2 D(K) + b^2 and Theta' = K' + W^2 D(Theta): only the b^2 of the diagonal
    # is not divided by q
    for a, b, bias in ((kd.nngp, k0.nngp, 0.09), (kd.ntk, k0.ntk, 0.09)):
        off = ~np.eye(3, dtype=bool)
        np.testing.assert_allclose(a[off], b[off], rtol=1e-12)
        np.testing.assert_allclose(np.diag(a), (np.diag(b) - bias) / q + bias, rtol=1e-12)
    # x2 given: other samples, other masks
    np.testing.assert_allclose(with_d.kernel_fn(x, x2).nngp, without.kernel_fn(x, x2).nngp,
                               rtol=1e-12)
    test = ntkdsl.compile(net.format('Dropout(0.25, mode = "test");'))
    np.testing.assert_allclose(test.kernel_fn(x, None).nngp, k0.nngp, rtol=1e-12)


def test_dropout_on_positions_scales_only_the_position_diagonal():
    # GlobalAvgPool reads every pair of positions: only P of the P^2 entries are scaled
    x = inputs((3, 3, 2), n=2)
    kd = _base_kernels("Dropout(0.5); GlobalAvgPool", None, x)
    k0 = _base_kernels("GlobalAvgPool", None, x)
    kf = _base_kernels("Flatten", None, x)  # the mean over positions of the diagonal
    np.testing.assert_allclose(np.diag(kd.nngp), np.diag(k0.nngp) + np.diag(kf.nngp) / 9,
                               rtol=1e-12)
    np.testing.assert_allclose(kd.nngp[0, 1], k0.nngp[0, 1], rtol=1e-12)


def test_layernorm_normalises_each_input():
    x = inputs((4, 4, 2))
    for over in ("channels", "all"):
        k = _base_kernels(f'Conv(6, 2); LayerNorm(over = "{over}", eps = 0); Flatten', None, x)
        # a normalised input has unit variance: the diagonal of the Flatten kernel is 1
        np.testing.assert_allclose(np.diag(k.nngp), 1.0, rtol=1e-12)
    fc = ntkdsl.compile("net n { Dense(3, b_std = 0.5); LayerNorm(eps = 0) }")
    xf = inputs((5,))
    k = fc.kernel_fn(xf, None, "nngp")
    np.testing.assert_allclose(k, k / np.sqrt(np.outer(np.diag(k), np.diag(k))), rtol=1e-12)


def test_conv_local_kills_cross_position_covariance():
    # with a readout that reads all pairs (GAP), ConvLocal's kernel is the mean of the
    # diagonal: the same as Flatten after it, and as Conv + Flatten (no weight sharing
    # matters only between positions)
    x = inputs((4, 4, 2))
    gap = _base_kernels("ConvLocal(5, 3, b_std = 0.2); GlobalAvgPool", None, x)
    flat = _base_kernels("ConvLocal(5, 3, b_std = 0.2); Flatten", None, x)
    conv = _base_kernels("Conv(5, 3, b_std = 0.2); Flatten", None, x)
    np.testing.assert_allclose(gap.nngp * 16, flat.nngp, rtol=1e-12)
    np.testing.assert_allclose(flat.nngp, conv.nngp, rtol=1e-12)
    np.testing.assert_allclose(gap.ntk * 16, flat.ntk, rtol=1e-12)


def test_full_and_diagonal_paths_agree():
    # force_full keeps every pair of positions everywhere: the same kernels
    from ntkdsl.compiler.analysis import plan
    from ntkdsl.compiler.kernels import build_tile_fn

    spec = """net n { Conv(4, 2); Relu; ConvTranspose(4, 3, strides = 2); Relu; ConvLocal(4, 2)
                      Relu; Resize(2); Dropout(0.2); Conv(3, 2); LayerNorm; Relu; Flatten }"""
    m = ntkdsl.compile(spec)
    x = inputs((2, 2, 2))
    with jax.enable_x64(True):
        outs = [build_tile_fn(plan(m.net, (2, 2, 2), force_full=f), 3, None, ("nngp", "ntk"))(
            x) for f in (False, True)]
    for a, b in zip(*outs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11)


def test_chunked_pairs_agree_with_one_chunk():
    from ntkdsl.compiler.analysis import plan
    from ntkdsl.compiler.kernels import build_tile_fn

    m = ntkdsl.compile("net n { Conv(4, 2); LayerNorm; Relu; Dropout(0.3); Conv(4, 2)"
                       "; LayerNorm(over = \"all\"); Erf; GlobalSumPool }")
    x = inputs((3, 3, 2), n=4)
    p = plan(m.net, (3, 3, 2))
    with jax.enable_x64(True):
        one = build_tile_fn(p, 4, None, ("nngp", "ntk"))(x)
        many = build_tile_fn(p, 4, None, ("nngp", "ntk"), chunk=3)(x)
    for a, b in zip(one, many):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11)


def test_explain_renders_every_new_layer():
    spec = """net n { Conv(4, 2); LayerNorm(over = "all"); Relu; SumPool(2); Dropout(0.1)
                      ConvTranspose(4, 2, strides = 2); ConvLocal(4, 3); Relu; Resize(2)
                      GlobalSumPool; Dense(1) }"""
    from ntkdsl.compiler.explain import explain

    text = explain(ntkdsl.compile(spec).net)
    for word in ("LayerNorm over all", "S = sum over", "dropout, keep q = 0.9", "A_T(",
                 "A_local(", "R = nearest upsampling", "sum over all pairs"):
        assert word in text, word
    fc = ntkdsl.compile("net n { Dense(3); LayerNorm(eps = 0.5); Relu; Dropout(0.5); Dense(1) }")
    assert "closed form" in explain(fc.net)


# ---- Monte Carlo ----------------------------------------------------------------------

MC = {
    "fc_layernorm_dropout": ("""net n(width = 256) { Dense(width, W_std = 1.4, b_std = 0.1)
        LayerNorm; Relu; Dropout(0.3); Dense(width, W_std = 1.3); LayerNorm(eps = 0.1); Erf
        Dense(1, b_std = 0.1) }""", (5,), 32),
    "cnn_sumpool_transpose": ("""net n(width = 256) { Conv(width, 2, W_std = 1.3)
        Relu; SumPool(2, strides = 1, padding = SAME); ConvTranspose(width, 2, strides = 2)
        Relu; GlobalSumPool; Dense(1, W_std = 0.1) }""", (2, 2, 2), 8),
    "cnn_local_resize": ("""net n(width = 256) { ConvLocal(width, 2, W_std = 1.3, b_std = 0.2)
        Relu; Resize(2, method = "linear"); Conv(width, 2); LayerNorm(over = "all"); Relu
        Dropout(0.2); GlobalAvgPool; Dense(1) }""", (2, 2, 2), 8),
}


#: the slowest case on CPU (about 45 s), run with ``-m slow``
SLOW_MC = {"cnn_local_resize"}


def mc_errors(spec, shape, n_samples, width, seed=1, x2=False):
    model = ntkdsl.compile(spec, width=width)
    x = inputs(shape)
    y = inputs(shape, n=2, seed=7) if x2 else None
    exact = model.kernel_fn(x, y, ("nngp", "ntk"))
    mc = monte_carlo_kernel(model, jax.random.key(seed), n_samples, x, y, nngp_from="readout")
    return rel(mc.nngp, exact.nngp), rel(mc.ntk, exact.ntk)


@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW_MC else [])
                                  for c in sorted(MC)])
def test_monte_carlo_matches_analytic(case):
    spec, shape, n = MC[case]
    e = mc_errors(spec, shape, n, 256)
    assert max(e) < 0.06, e


@pytest.mark.slow
def test_monte_carlo_dropout_with_x2_keeps_masks_independent():
    # the cross entries are small, so at width 256 the spread is ~0.07 of them; at 1024 ~0.015
    spec, shape, n = MC["fc_layernorm_dropout"]
    e = mc_errors(spec, shape, n, 1024, x2=True)
    assert max(e) < 0.04, e


def test_dropout_mask_does_not_depend_on_the_batch():
    m = ntkdsl.compile("net n { Dense(64); Dropout(0.5) }")
    x = inputs((5,), n=4)
    p = m.init(jax.random.key(3), (5,))
    whole = np.asarray(m.apply(p, x))
    rows = np.concatenate([np.asarray(m.apply(p, x[i:i + 1])) for i in range(4)])
    np.testing.assert_allclose(whole, rows, rtol=1e-12, atol=1e-12)
    p2 = m.init(jax.random.key(4), (5,))
    # a Dense output is never 0: the zeros are the dropped units, about half, and
    # another init draws other masks
    assert 0.3 < np.mean(whole == 0) < 0.7
    assert np.mean((np.asarray(m.apply(p2, x)) == 0) != (whole == 0)) > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(MC))
def test_monte_carlo_error_falls_with_width(case):
    spec, shape, n = MC[case]
    errs = np.array([np.mean([mc_errors(spec, shape, n, w, seed=s) for s in range(3)], axis=0)
                     for w in (64, 1024)])
    assert np.all(errs[-1] < 0.04), errs
    assert np.all(errs[-1] < errs[0] / 2), errs


# ---- malformed uses ---------------------------------------------------------------------

ERRORS = [
    ("net a { Dense(3); Dropout(1) }", 1, 27,
     "'p' (the probability of dropping a unit) must be in [0, 1), got 1"),
    ("net a { Dense(3); Dropout(-0.1) }", 1, 27,
     "'p' (the probability of dropping a unit) must be in [0, 1), got -0.1"),
    ("net a { Dense(3); Dropout(0.1, mode = 'eval') }", 1, 32,
     "'mode' must be \"train\" or \"test\", got 'eval'"),
    ("net a { Dense(3); LayerNorm(over = 'batch') }", 1, 29,
     "'over' must be \"channels\" or \"all\", got 'batch'"),
    ("net a { Dense(3); LayerNorm(eps = -1) }", 1, 29, "'eps' must be a number >= 0, got -1"),
    ("net a { Conv(3, 2); Resize(0) }", 1, 28,
     "'factor' must be a positive integer or a tuple of them, got 0"),
    ("net a { Conv(3, 2); Resize(2, method = 'cubic') }", 1, 31,
     "'method' must be \"nearest\" or \"linear\", got 'cubic'"),
    ("net a { ConvTranspose(3, 0) }", 1, 26,
     "'kernel' must be a positive integer or a tuple of them, got 0"),
    ("net a { ConvLocal(3, 2, strides = (1, 0)) }", 1, 25,
     "'strides' must be a positive integer or a tuple of them, got (1, 0)"),
    ("net a { ConvLocal(3, 2, padding = 'FULL') }", 1, 25,
     "'padding' must be SAME, VALID or CIRCULAR, got 'FULL'"),
    ("net a { Conv(3, 2); SumPool(2, padding = 'same') }", 1, 32,
     "'padding' must be SAME, VALID or CIRCULAR, got 'same'"),
]


@pytest.mark.parametrize("src,line,col,message", ERRORS)
def test_malformed_use_is_located(src, line, col, message):
    with pytest.raises(SpecError) as info:
        parse(src, filename="t.ntk")
    err = info.value
    assert (err.line, err.column, err.message) == (line, col, message), str(err)


@pytest.mark.parametrize("src,line,col,what", [
    ("net a { Dense(3); Relu; LayerNorm }", 1, 25, "LayerNorm needs a Gaussian input"),
    ("net a { Dense(3); Dropout(0.5); Relu }", 1, 33, "Relu needs a Gaussian input"),
    ("net a {\n  Dense(3)\n  Residual { Dense(3); Dropout(0.2) }\n}", 3, 3,
     "each Residual path must end in Dense or Conv"),
])
def test_non_gaussian_uses_are_located(src, line, col, what):
    with pytest.raises(SpecError) as info:
        parse(src, filename="t.ntk")
    err = info.value
    assert (err.line, err.column) == (line, col) and err.message.startswith(what), str(err)


def test_test_mode_dropout_keeps_gaussianity():
    parse("net a { Dense(3); Dropout(0.5, mode = 'test'); Relu; Dropout(0); Dense(2) }")


@pytest.mark.parametrize("spec,shape,message", [
    ("net a { Dense(3); GlobalSumPool }", (4,), "GlobalSumPool needs spatial axes"),
    ("net a { Resize(2) }", (4,), "Resize needs spatial axes"),
    ("net a { ConvTranspose(3, 2) }", (4,), "ConvTranspose needs spatial axes"),
    ("net a { ConvLocal(3, 5, padding = VALID) }", (4, 4, 1), "kernel of size 5 is larger"),
    ("net a { Resize((2, 2)) }", (4, 1), "factor has 2 entries"),
])
def test_shape_errors(spec, shape, message):
    from ntkdsl.compiler.frontend import infer_shapes

    with pytest.raises(SpecError, match=message):
        infer_shapes(parse(spec), shape)
