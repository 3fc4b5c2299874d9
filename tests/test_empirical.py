"""Empirical NTK / NNGP of finite networks, and their Taylor expansions in the params."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

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
    Identity,
    Relu,
    Residual,
    Serial,
    Tanh,
)
from ntkdsl.empirical import (
    NetApply,
    empirical_nngp,
    empirical_ntk,
    linearize,
    taylor_expand,
)

jax.config.update("jax_enable_x64", True)


def net_of(*layers) -> Net:
    return Net("t", (), Serial(layers=tuple(layers)))


FC = net_of(Dense(out=7, W_std=1.3, b_std=0.2), Erf(), Dense(out=5, b_std=0.1), Tanh(),
            Dense(out=3, W_std=1.1, b_std=0.3))
CNN = net_of(
    Conv(out=4, kernel=3, padding="CIRCULAR", b_std=0.1), Relu(),
    AvgPool(window=2, strides=1, padding="SAME"),
    Residual(branch=Serial(layers=(Conv(out=4, kernel=(1, 2), W_std=1.2),)),
             shortcut=Serial(layers=(Conv(out=4, kernel=1, parameterization="standard"),))),
    Flatten(), Dense(out=2, W_std=1.5, b_std=0.2),
)
CASES = {"fc": (FC, (4,)), "cnn": (CNN, (4, 3, 2))}


def setup(case, n1=4, n2=2):
    net, shape = CASES[case]
    f = NetApply(net)
    params = network.init(net, jax.random.key(0), shape)
    x1 = jax.random.normal(jax.random.key(1), (n1, *shape))
    x2 = jax.random.normal(jax.random.key(2), (n2, *shape))
    return f, params, x1, x2


def full_jacobian_ntk(f, params, x1, x2):
    """Independent reference: one Jacobian of the whole batch over the flat params."""
    flat, unravel = ravel_pytree(params)

    def jac(x):
        j = jax.jacobian(lambda v: f(unravel(v), x))(flat)
        return j.reshape(x.shape[0], -1, flat.size)

    j1, j2 = jax.jit(jac)(x1), jax.jit(jac)(x2)
    return jnp.einsum("aop,bop->ab", j1, j2) / j1.shape[1]


@pytest.mark.parametrize("case", ["fc", "cnn"])
def test_implementations_agree_with_each_other_and_a_full_jacobian(case):
    f, p, x1, x2 = setup(case)
    ref = full_jacobian_ntk(f, p, x1, x2)
    for impl, bs in (("jacobian", None), ("ntvp", None), ("ntvp", 2)):
        got = empirical_ntk(f, p, x1, x2, implementation=impl, batch_size=bs)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * float(jnp.abs(ref).max()))
    # symmetric: tiles of 2 rows (off-diagonal tiles mirrored) and one tile
    sym = [empirical_ntk(f, p, x1, implementation="jacobian", batch_size=2),
           empirical_ntk(f, p, x1, implementation="ntvp"), empirical_ntk(f, p, x1)]
    ref_sym = full_jacobian_ntk(f, p, x1, x1)
    for got in sym:
        assert got.shape == (4, 4)
        np.testing.assert_allclose(got, ref_sym, rtol=0, atol=1e-10 * float(ref_sym.max()))
        np.testing.assert_array_equal(got, got.T)


def test_ntk_of_one_dense_layer_is_the_analytic_formula():
    # NTK parameterisation: dW = x / sqrt(C) * W_std, db = b_std -> Theta = W^2 x.x'/C + b^2
    net = net_of(Dense(out=3, W_std=1.7, b_std=0.4))
    x = jax.random.normal(jax.random.key(0), (4, 6))
    p = network.init(net, jax.random.key(1), (6,))
    got = empirical_ntk(NetApply(net), p, x)
    np.testing.assert_allclose(got, 1.7**2 * (x @ x.T) / 6 + 0.4**2, rtol=1e-12)
    # standard parameterisation: dW = x, db = 1
    net = net_of(Dense(out=3, W_std=1.7, b_std=0.4, parameterization="standard"))
    got = empirical_ntk(NetApply(net), network.init(net, jax.random.key(1), (6,)), x)
    np.testing.assert_allclose(got, x @ x.T + 1, rtol=1e-12)


def test_empirical_ntk_under_jit_and_vmap_over_params():
    f, _, x1, x2 = setup("cnn")
    net, shape = CASES["cnn"]
    keys = jax.random.split(jax.random.key(3), 3)
    ens = jax.vmap(lambda k: network.init(net, k, shape))(keys)
    ks = jax.jit(jax.vmap(lambda p: empirical_ntk(f, p, x1, x2)))(ens)
    one = network.init(net, keys[1], shape)
    np.testing.assert_allclose(ks[1], empirical_ntk(f, one, x1, x2, implementation="ntvp"),
                               rtol=1e-10)


def test_model_facade_and_errors():
    from ntkdsl.model import Model

    f, p, x1, x2 = setup("fc")
    m = Model(FC)
    np.testing.assert_allclose(m.empirical_ntk(p, x1, x2), empirical_ntk(f, p, x1, x2),
                               rtol=1e-12)
    with pytest.raises(InputError, match="implementation"):
        empirical_ntk(f, p, x1, implementation="fast")
    with pytest.raises(InputError, match="x2"):
        empirical_ntk(f, p, x1, x2[:, :3])
    with pytest.raises(InputError, match="batch_size"):
        empirical_ntk(f, p, x1, batch_size=0)
    with pytest.raises(InputError, match="ending in Dense"):
        empirical_nngp(net_of(Dense(out=2), Relu()), p, x1)


@pytest.mark.parametrize("case", ["fc", "cnn"])
def test_readout_nngp_is_the_readout_part_of_the_ntk(case):
    # In the NTK parameterisation, the readout's own params contribute
    # W_std^2 g.g'/C + b_std^2 to the NTK: exactly the readout kernel.
    net, _ = CASES[case]
    f, p, x1, x2 = setup(case)

    def readout_only(q, x):
        return f((*p[:-1], q), x)

    expected = empirical_ntk(readout_only, p[-1], x1, x2)
    np.testing.assert_allclose(empirical_nngp(net, p, x1, x2), expected, rtol=1e-10)
    outputs = f(p, x1)
    np.testing.assert_allclose(empirical_nngp(f, p, x1), outputs @ outputs.T / outputs.shape[1],
                               rtol=1e-12)
    np.testing.assert_allclose(empirical_nngp(net, p, x1, mode="outputs", batch_size=2),
                               outputs @ outputs.T / outputs.shape[1], rtol=1e-12)


# -- linearize / taylor_expand ---------------------------------------------------

def scaled(tree, direction, t):
    return jax.tree_util.tree_map(lambda a, d: a + t * d, tree, direction)


def direction(params, seed=5):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


@pytest.mark.parametrize("case", ["fc", "cnn"])
def test_linearize_is_first_order_and_taylor_second_order(case):
    f, p, x1, _ = setup(case)
    d = direction(p)
    f_lin = jax.jit(linearize(f, p))
    f_2 = jax.jit(taylor_expand(f, p, 2))
    np.testing.assert_allclose(f_lin(p, x1), f(p, x1), rtol=1e-13)

    def err(g, t):
        q = scaled(p, d, t)
        return float(jnp.linalg.norm(g(q, x1) - f(q, x1)))

    for g, order in ((f_lin, 2), (f_2, 3)):
        e = [err(g, t) for t in (0.02, 0.01, 0.005)]
        ratios = [e[0] / e[1], e[1] / e[2]]
        for r in ratios:  # halving delta divides the error by 2**order
            assert abs(math.log2(r) - order) < 0.25, (order, e)


def test_expansions_are_exact_when_the_net_is_polynomial_in_its_params():
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2))
    one_affine = net_of(Conv(out=3, kernel=2, b_std=0.5), AvgPool(window=2, padding="SAME"),
                        Identity(), GlobalAvgPool())
    two_affine = net_of(Conv(out=3, kernel=2, b_std=0.5), Flatten(),
                        Dense(out=2, W_std=2.0, b_std=0.1))
    for net, degree in ((one_affine, 1), (two_affine, 2)):
        f = NetApply(net)
        p = network.init(net, jax.random.key(1), x.shape[1:])
        q = scaled(p, direction(p), 3.0)  # far from p: exact, not just close
        got = taylor_expand(f, p, degree)(q, x)
        np.testing.assert_allclose(got, f(q, x), rtol=1e-11, atol=1e-11)
        lower = taylor_expand(f, p, degree - 1)(q, x)
        assert float(jnp.abs(lower - f(q, x)).max()) > 1e-3
    f = NetApply(one_affine)
    p = network.init(one_affine, jax.random.key(1), x.shape[1:])
    q = scaled(p, direction(p), 3.0)
    np.testing.assert_allclose(linearize(f, p)(q, x), f(q, x), rtol=1e-11, atol=1e-11)
    with pytest.raises(InputError, match="degree"):
        taylor_expand(f, p, -1)
