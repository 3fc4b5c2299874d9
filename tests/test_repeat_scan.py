"""``repeat`` compiled as a loop: equal to its unrolled form, loops only where shapes are kept.

A ``repeat N { BODY }`` is one ``Repeat`` node holding every iteration; the
kernel function scans runs of iterations with equal plans and the finite net
scans the iterations after the body keeps the shape. Each result is compared
with the same net written out N times (the unrolled form, compiled without any
loop) to 1e-12 relative to the largest entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler import kernels
from ntkdsl.compiler.analysis import count_variance_readers
from ntkdsl.compiler.layers import Repeat

RNG = np.random.default_rng(13)
TOL = 1e-12

FC_BODY = "Dense(16, W_std = 1.4, b_std = 0.1); Relu"
CNN_BODY = "Conv(3, 3, W_std = 1.3, b_std = 0.05); Erf"

#: name: (head, body, tail, input shape, repeat count)
NETS = {
    "fc": ("", FC_BODY, "Dense(2)", (5,), 50),
    # the first iteration changes the channels (2 -> 3): peeled, the rest looped
    "cnn_gap": ("", CNN_BODY, "GlobalAvgPool; Dense(2)", (3, 3, 2), 4),
    "cnn_flatten": ("Conv(3, 2)", "Relu; Conv(3, 3)", "Flatten; Dense(1)", (4, 3, 2), 4),
}


def _spec(name: str, count: int, unrolled: bool) -> str:
    head, body, tail, _, _ = NETS[name]
    middle = " ".join([f"{body};"] * count) if unrolled else f"repeat {count} {{ {body} }}"
    return f"net n {{ {head} {middle} {tail} }}"


def _pair(name: str, count: int | None = None):
    count = NETS[name][4] if count is None else count
    return (ntkdsl.compile(_spec(name, count, False)),
            ntkdsl.compile(_spec(name, count, True)))


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL * max(np.abs(b).max(), 1e-300))


def _loop_times(plan) -> list[int]:
    """``times`` of every looped plan node, depth first."""
    out = [plan.times] if plan.times > 1 else []
    for c in plan.children:
        if c is not None:
            out += _loop_times(c)
    return out


@pytest.mark.parametrize("name", sorted(NETS))
def test_kernels_equal_the_unrolled_net(name):
    rep, flat = _pair(name)
    shape = NETS[name][3]
    x1, x2 = RNG.standard_normal((4, *shape)), RNG.standard_normal((3, *shape))
    for args in ((x1,), (x1, x2)):
        a, b = rep.kernel_fn(*args), flat.kernel_fn(*args)
        _close(a.nngp, b.nngp)
        _close(a.ntk, b.ntk)
    assert _loop_times(kernels.get_plan(rep, shape)), "the repeat was not looped"
    assert not _loop_times(kernels.get_plan(flat, shape))


@pytest.mark.slow
def test_a_50_layer_cnn_equals_the_unrolled_net():
    rep, flat = _pair("cnn_gap", 50)
    x1, x2 = RNG.standard_normal((3, 3, 3, 2)), RNG.standard_normal((2, 3, 3, 2))
    for args in ((x1,), (x1, x2)):
        a, b = rep.kernel_fn(*args), flat.kernel_fn(*args)
        _close(a.nngp, b.nngp)
        _close(a.ntk, b.ntk)


def test_nngp_only_and_float32():
    rep, flat = _pair("fc", 4)
    x = RNG.standard_normal((4, 5))
    _close(rep.kernel_fn(x, get="nngp"), flat.kernel_fn(x, get="nngp"))
    a, b = rep.kernel_fn(x, get="ntk", dtype="float32"), flat.kernel_fn(x, get="ntk",
                                                                         dtype="float32")
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("name", ["fc", "cnn_gap"])
def test_chunks_replay_the_stacked_covariances(name):
    """Pairs in chunks read the covariances the loop recorded, stacked, once per chunk."""
    rep, flat = _pair(name, 6)
    shape = NETS[name][3]
    x = RNG.standard_normal((5, *shape))  # 15 pairs
    arg = x if len(shape) > 1 else kernels.fc_inputs(x, None)[:2]
    gets = ("nngp", "ntk")
    ref = kernels.build_tile_fn(kernels.get_plan(flat, shape), 5, None, gets, chunk=15)(arg)
    p = kernels.get_plan(rep, shape)
    assert _loop_times(p) and count_variance_readers(p) == 6
    for chunk in (1, 4):
        got = kernels.build_tile_fn(p, 5, None, gets, chunk=chunk)(arg)
        for a, b in zip(got, ref):
            _close(a, b)


def test_loop_only_where_the_body_keeps_the_shapes():
    # a stride-2 body changes the shape every iteration: no loop
    m = ntkdsl.compile("net s { repeat 3 { Conv(2, 3, strides = 2); Relu } Flatten; Dense(1) }")
    assert not _loop_times(kernels.get_plan(m, (16, 16, 1)))
    # the same body on 1x1 images keeps the shape after the first iteration
    assert _loop_times(kernels.get_plan(m, (1, 1, 2))) == [3]
    # Dense(16) on 16 features keeps it from the start; on 5 the first is peeled
    m = ntkdsl.compile(f"net f {{ repeat 10 {{ {FC_BODY} }} Dense(1) }}")
    assert _loop_times(kernels.get_plan(m, (16,))) == [10]
    seg = kernels.get_plan(m, (5,)).children[0].children
    assert [s.times for s in seg] == [1, 9]
    # the graph holds one Repeat node of all iterations
    (rep, _) = m.net.body.layers
    assert isinstance(rep, Repeat) and rep.count == 10 and len(rep.layers) == 20
    assert rep.body.layers == rep.layers[:2]
    # repeat 1, repeat 0 and an empty body stay plain layers
    m = ntkdsl.compile("net o { repeat 1 { Dense(3) } repeat 0 { Relu } repeat 4 { } Dense(1) }")
    assert not any(isinstance(x, Repeat) for x in m.net.walk())


def test_nested_repeats_and_residual_bodies():
    body = "repeat 3 { Dense(8, W_std = 1.3); Relu } Residual { Dense(8); Erf; Dense(8) }"
    rep = ntkdsl.compile(f"net a {{ Dense(8) repeat 3 {{ {body} }} Dense(1) }}")
    inner = " ".join(["Dense(8, W_std = 1.3); Relu;"] * 3) + \
        " Residual { Dense(8); Erf; Dense(8) }"
    flat = ntkdsl.compile("net b { Dense(8) " + " ".join([inner] * 3) + " Dense(1) }")
    x1, x2 = RNG.standard_normal((4, 6)), RNG.standard_normal((2, 6))
    assert _loop_times(kernels.get_plan(rep, (6,)))
    for args in ((x1,), (x1, x2)):
        a, b = rep.kernel_fn(*args), flat.kernel_fn(*args)
        _close(a.nngp, b.nngp)
        _close(a.ntk, b.ntk)


def _unrolled_params(net, params) -> tuple:
    """The params of a net's unrolled form from those of its Repeat form (same values)."""
    out = []
    for layer, p in zip(net.body.layers, params, strict=True):
        if not isinstance(layer, Repeat):
            out.append(p)
            continue
        peeled, stacked = p
        for q in peeled:
            out.extend(q)
        for i in range(layer.count - len(peeled)):
            out.extend(jax.tree_util.tree_map(lambda a, i=i: a[i], stacked))
    return tuple(out)


@pytest.mark.parametrize(("name", "count"), [
    ("fc", 6), ("cnn_gap", 3),
    pytest.param("fc", 50, marks=pytest.mark.slow),
    pytest.param("cnn_gap", 50, marks=pytest.mark.slow)])
def test_finite_net_equals_the_unrolled_net_with_the_same_params(name, count):
    rep, flat = _pair(name, count)
    shape = NETS[name][3]
    x = jnp.asarray(RNG.standard_normal((3, *shape)))
    params = rep.init(jax.random.PRNGKey(0), shape)
    peeled, stacked = params[0]
    assert len(peeled) == 1  # the first iteration changes the shape
    leaf = jax.tree_util.tree_leaves(stacked)[0]
    assert leaf.shape[0] == count - 1
    flat_params = _unrolled_params(rep.net, params)
    assert jax.tree_util.tree_structure(flat_params) == jax.tree_util.tree_structure(
        flat.init(jax.random.PRNGKey(0), shape))
    _close(rep.apply(params, x), flat.apply(flat_params, x))
    # the empirical NTK of the two forms at the same params
    _close(rep.empirical_ntk(params, x), flat.empirical_ntk(flat_params, x))


def test_finite_net_without_a_kept_shape_is_unrolled():
    m = ntkdsl.compile("net s { repeat 2 { Conv(2, 3, strides = 2); Relu } Flatten; Dense(1) }")
    peeled, stacked = m.init(jax.random.PRNGKey(1), (8, 8, 1))[0]
    assert len(peeled) == 2 and stacked == ()


def test_finite_net_under_jit_grad_and_vmap():
    m = ntkdsl.compile(f"net f {{ Dense(16) repeat 3 {{ {FC_BODY} }} Dense(1) }}")
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    params = jax.vmap(lambda k: m.init(k, (4,)))(keys)
    x = jnp.asarray(RNG.standard_normal((2, 4)))
    out = jax.jit(jax.vmap(lambda p: m.apply(p, x)))(params)
    assert out.shape == (3, 2, 1)
    g = jax.grad(lambda p: jnp.sum(m.apply(p, x) ** 2))(jax.tree_util.tree_map(
        lambda a: a[0], params))
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(g))


def test_check_and_explain_show_the_unrolled_layers():
    from ntkdsl.cli.check import summarize
    from ntkdsl.compiler.explain import explain

    # a conv net: explain prints the recursion only (no sympy closed form to build)
    rep = ntkdsl.compile("net a { repeat 3 { Conv(4, 3); Relu } GlobalAvgPool; Dense(1) }")
    flat = ntkdsl.compile("net a { Conv(4, 3); Relu; Conv(4, 3); Relu; Conv(4, 3); Relu; "
                          "GlobalAvgPool; Dense(1) }")
    assert summarize(rep.net, (5, 5, 2)) == summarize(flat.net, (5, 5, 2))
    assert explain(rep.net) == explain(flat.net)


def test_leaf_params_index_every_iteration_out_of_a_repeat():
    """network.leaf_params gives each leaf layer its own params, as the unrolled net has them."""
    import jax

    from ntkdsl.compiler.network import leaf_params

    src = "net n { Input((3,)); Dense(5); repeat 4 { Dense(5); Relu }; Dense(1) }"
    m = ntkdsl.compile(src)
    p = m.init(jax.random.PRNGKey(0), (3,))
    pairs = list(leaf_params(m.net.body, p))
    assert [type(layer).__name__ for layer, _ in pairs] == (
        ["Dense"] + ["Dense", "Relu"] * 4 + ["Dense"])
    x = np.random.default_rng(0).normal(size=(2, 3))
    h = x
    for layer, q in pairs:
        h = layer.apply(q, h)
    np.testing.assert_allclose(np.asarray(h), np.asarray(m.apply(p, x)), rtol=1e-12, atol=0)
