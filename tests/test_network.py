"""Finite networks: init/apply of every non-pointwise layer against numpy references."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdsl import InputError
from ntkdsl.compiler import network
from ntkdsl.compiler.graph import Net
from ntkdsl.compiler.layers import (
    AvgPool,
    Conv,
    Dense,
    Erf,
    Flatten,
    GlobalAvgPool,
    Relu,
    Residual,
    Serial,
)

jax.config.update("jax_enable_x64", True)


def net_of(*layers) -> Net:
    return Net("t", (), Serial(layers=tuple(layers)))


def rand(seed, shape):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape))


# -- numpy references ------------------------------------------------------------

def ref_pads(n, k, s, padding):
    if padding == "VALID":
        return 0, 0
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def ref_windows(x, window, strides, padding):
    """Yield (offset, strided slice of the padded input) for every window offset."""
    pads = [ref_pads(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], window, strides)]
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
    outs = [(xp.shape[1 + i] - k) // s + 1 for i, (k, s) in enumerate(zip(window, strides))]
    for off in itertools.product(*(range(k) for k in window)):
        idx = tuple(slice(d, d + s * (o - 1) + 1, s) for d, s, o in zip(off, strides, outs))
        yield off, xp[(slice(None), *idx)]


def ref_conv(x, w, strides, padding):
    nd = x.ndim - 2
    return sum(np.tensordot(sl, w[off], axes=(nd + 1, 0))
               for off, sl in ref_windows(x, w.shape[:nd], strides, padding))


def ref_avg_pool(x, window, strides, padding):
    return sum(sl for _, sl in ref_windows(x, window, strides, padding)) / math.prod(window)


# -- init ------------------------------------------------------------------------

CNN = net_of(
    Conv(out=5, kernel=3, padding="CIRCULAR", b_std=0.3), Relu(),
    AvgPool(window=2, strides=1, padding="SAME"),
    Residual(branch=Serial(layers=(Conv(out=5, kernel=(3, 1)), Erf()))),
    Flatten(), Dense(out=3, W_std=1.5, b_std=0.1),
)


def test_init_is_deterministic_given_the_key():
    a = network.init(CNN, jax.random.key(0), (6, 5, 2))
    b = network.init(CNN, jax.random.key(0), (6, 5, 2))
    c = network.init(CNN, jax.random.key(1), (6, 5, 2))
    for u, v, w in zip(*(jax.tree_util.tree_leaves(t) for t in (a, b, c))):
        np.testing.assert_array_equal(u, v)
        assert not np.allclose(u, w)


def test_param_structure_and_no_bias_when_b_std_is_zero():
    p = network.init(CNN, jax.random.key(0), (6, 5, 2))
    shapes = jax.tree_util.tree_map(np.shape, p)
    assert shapes[0] == {"w": (3, 3, 2, 5), "b": (5,)}
    assert shapes[1] == () and shapes[2] == ()
    assert shapes[3] == (({"w": (3, 1, 5, 5)}, ()), ())
    assert shapes[5] == {"w": (6 * 5 * 5, 3), "b": (3,)}


def test_ntk_parameterisation_draws_standard_normals():
    net = net_of(Dense(out=400, W_std=3.0, b_std=2.0))
    p = network.init(net, jax.random.key(0), (300,))[0]
    assert abs(np.std(p["w"]) - 1) < 0.01 and abs(np.mean(p["w"])) < 0.01
    assert abs(np.std(p["b"]) - 1) < 0.15


def test_standard_parameterisation_scales_at_init():
    net = net_of(Conv(out=200, kernel=(3, 2), W_std=3.0, b_std=2.0, parameterization="standard"))
    p = network.init(net, jax.random.key(0), (4, 4, 50))[0]
    assert abs(np.std(p["w"]) / (3.0 / math.sqrt(50 * 6)) - 1) < 0.02
    assert abs(np.std(p["b"]) / 2.0 - 1) < 0.2


# -- apply against references ----------------------------------------------------

@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("spatial", [(), (3,), (3, 2)])
def test_dense_matches_formula(param, spatial):
    layer = Dense(out=4, W_std=1.7, b_std=0.4, parameterization=param)
    x = rand(1, (3, *spatial, 6))
    p = network.init(net_of(layer), jax.random.key(2), x.shape[1:])
    y = network.apply(net_of(layer), p, x)
    w, b = np.asarray(p[0]["w"]), np.asarray(p[0]["b"])
    if param == "ntk":
        w, b = 1.7 / math.sqrt(6) * w, 0.4 * b
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-12, atol=1e-12)


SLOW = pytest.mark.slow
PADDINGS = ("SAME", "VALID", "CIRCULAR")


@pytest.mark.parametrize(
    "padding,spatial,kernel,strides",
    [(p, (7,), 4, 2) for p in PADDINGS] + [(p, (6, 5), (3, 2), (2, 1)) for p in PADDINGS]
    + [("CIRCULAR", (4, 3, 5), 2, (1, 2, 2))]
    + [pytest.param(p, *c, marks=SLOW) for p in PADDINGS
       for c in (((7,), 3, 1), ((5, 4), 3, 1), ((4, 3, 5), 2, (1, 2, 2)))],
)
def test_conv_matches_reference(padding, spatial, kernel, strides):
    layer = Conv(out=3, kernel=kernel, strides=strides, padding=padding, W_std=1.3, b_std=0.5)
    x = rand(3, (2, *spatial, 4))
    net = net_of(layer)
    p = network.init(net, jax.random.key(4), x.shape[1:])
    y = network.apply(net, p, x)
    w = np.asarray(p[0]["w"]) * 1.3 / math.sqrt(4 * math.prod(p[0]["w"].shape[:-2]))
    ss = strides if isinstance(strides, tuple) else (strides,) * len(spatial)
    expected = ref_conv(x, w, ss, padding) + 0.5 * np.asarray(p[0]["b"])
    assert y.shape == (2, *layer.out_shape(x.shape[1:]))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "padding,spatial,window,strides",
    [(p, (7,), 2, 1) for p in PADDINGS] + [(p, (6, 5), (3, 2), (2, 1)) for p in PADDINGS]
    + [("SAME", (4, 3, 4), 2, None)]
    + [pytest.param(p, *c, marks=SLOW) for p in PADDINGS
       for c in (((7,), 3, None), ((5, 5), 3, 2), ((4, 3, 4), 2, None))],
)
def test_avg_pool_matches_reference(padding, spatial, window, strides):
    layer = AvgPool(window=window, strides=strides, padding=padding)
    x = rand(5, (2, *spatial, 3))
    y = network.apply(net_of(layer), ((),), x)
    nd = len(spatial)
    ws = window if isinstance(window, tuple) else (window,) * nd
    st = strides if strides is not None else window
    ss = st if isinstance(st, tuple) else (st,) * nd
    np.testing.assert_allclose(y, ref_avg_pool(x, ws, ss, padding), rtol=1e-12, atol=1e-12)


def test_global_avg_pool_and_flatten():
    x = rand(6, (2, 3, 4, 5))
    np.testing.assert_allclose(network.apply(net_of(GlobalAvgPool()), ((),), x),
                               x.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_array_equal(network.apply(net_of(Flatten()), ((),), x), x.reshape(2, -1))


@pytest.mark.parametrize("with_shortcut", [False, True])
def test_residual_adds_branch_and_shortcut(with_shortcut):
    branch = Serial(layers=(Conv(out=3, kernel=3), Relu(), Conv(out=3, kernel=1, b_std=0.2)))
    shortcut = Serial(layers=(Conv(out=3, kernel=1),)) if with_shortcut else None
    net = net_of(Residual(branch=branch, shortcut=shortcut))
    x = rand(7, (2, 5, 4, 3))
    p = network.init(net, jax.random.key(8), x.shape[1:])
    pb, ps = p[0]
    expected = network.apply(Net("b", (), branch), pb, x)
    expected = expected + (x if shortcut is None else network.apply(Net("s", (), shortcut), ps, x))
    np.testing.assert_allclose(network.apply(net, p, x), expected, rtol=1e-12)


# -- transformations -------------------------------------------------------------

def test_apply_is_jittable_differentiable_and_vmappable():
    x = rand(9, (3, 6, 5, 2))
    p = network.init(CNN, jax.random.key(0), x.shape[1:])

    def f(p, x):
        return network.apply(CNN, p, x)

    np.testing.assert_allclose(jax.jit(f)(p, x), f(p, x), rtol=1e-12)
    g = jax.jit(jax.grad(lambda p: jnp.sum(f(p, x) ** 2)))(p)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g))
    # directional derivative against a central difference
    d = jax.tree_util.tree_map(lambda a: jnp.asarray(rand(1, a.shape)), p)
    eps = 1e-5
    plus = jax.tree_util.tree_map(lambda a, b: a + eps * b, p, d)
    minus = jax.tree_util.tree_map(lambda a, b: a - eps * b, p, d)
    fj = jax.jit(f)
    fd = (jnp.sum(fj(plus, x) ** 2) - jnp.sum(fj(minus, x) ** 2)) / (2 * eps)
    gd = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                            jax.tree_util.tree_leaves(d)))
    np.testing.assert_allclose(gd, fd, rtol=1e-6)
    keys = jax.random.split(jax.random.key(1), 3)
    ens = jax.vmap(lambda k: network.init(CNN, k, x.shape[1:]))(keys)
    ys = jax.jit(jax.vmap(f, (0, None)))(ens, x)
    one = network.init(CNN, keys[2], x.shape[1:])
    np.testing.assert_allclose(ys[2], fj(one, x), rtol=1e-12)


# -- errors ----------------------------------------------------------------------

def test_input_errors_name_expected_and_received():
    p = network.init(CNN, jax.random.key(0), (6, 5, 2))
    with pytest.raises(InputError, match=r"params\[0\]\['w'\].*\(3, 3, 1, 5\)"):
        network.apply(CNN, p, np.ones((2, 6, 5, 1)))
    with pytest.raises(InputError, match="another input shape"):
        network.apply(CNN, p, np.ones((2, 6, 4, 2)))
    with pytest.raises(InputError, match="batch axis"):
        network.apply(CNN, p, np.ones(3))
    with pytest.raises(InputError, match="cannot take inputs"):
        network.apply(CNN, p, np.ones((2, 6, 2)))
    with pytest.raises(InputError, match="NaN"):
        network.apply(CNN, p, np.full((2, 6, 5, 2), np.nan))
    with pytest.raises(InputError, match="input shape"):
        network.init(CNN, jax.random.key(0), (6, 0, 2))
    with pytest.raises(InputError, match="cannot take inputs"):
        network.init(CNN, jax.random.key(0), (6,))
    with pytest.raises(InputError, match="structure"):
        network.apply(CNN, p[:-1], np.ones((2, 6, 5, 2)))
