"""The structured empirical NTK (layer by layer from the graph) against the other two.

All three implementations and an independent whole-batch Jacobian must agree to
1e-10 relative (float64) on fully connected, convolutional, residual and branch nets.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_empirical import CASES, full_jacobian_ntk, setup

import ntkdsl
from ntkdsl import InputError
from ntkdsl.compiler import network
from ntkdsl.empirical import NetApply, _choose, empirical_ntk

jax.config.update("jax_enable_x64", True)

SPECS = {
    "branches": ("net b { Dense(6, W_std=1.2, b_std=0.1); Relu; "
                 "Concat { Dense(3, b_std=0.2); Erf } { Dense(2); Tanh } "
                 "Sum { Dense(4, W_std=1.3) } { Dense(4, parameterization='standard', b_std=0.3) } "
                 "Relu; Dense(2, W_std=1.1, b_std=0.2) }", (5,)),
    "product": ("net p { Dense(5, b_std=0.1); Relu; Product { Dense(3) } { Dense(3, b_std=0.2) } "
                "Dense(1) }", (4,)),
    "repeat_fc": ("net r { repeat 3 { Dense(6, W_std=1.5, b_std=0.1); Relu } Dense(2) }", (4,)),
    "repeat_conv": ("net q { Dense(4, b_std=0.1); Relu; Dense(3); repeat 2 { Conv(3, 2, "
                    "padding=SAME, b_std=0.1); Erf } Flatten; Dense(2) }", (4, 3, 4)),
    "cnn_spatial_dense": ("net s { Conv(3, 2, padding=SAME, b_std=0.1); Relu; Dense(4, b_std=0.2); "
                          "Erf; GlobalAvgPool; Dense(3) }", (4, 3, 2)),
}


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("case", ["fc", "cnn"])
@pytest.mark.parametrize("x2_given", [True, False])
def test_structured_agrees_with_jacobian_ntvp_and_full_jacobian(case, x2_given):
    f, p, x1, x2 = setup(case)
    x2 = x2 if x2_given else None
    ref = full_jacobian_ntk(f, p, x1, x1 if x2 is None else x2)
    got = {impl: empirical_ntk(f, p, x1, x2, implementation=impl)
           for impl in ("structured", "jacobian", "ntvp")}
    for impl, k in got.items():
        assert rel(k, ref) < 1e-10, impl
    if x2 is None:
        np.testing.assert_array_equal(np.asarray(got["structured"]),
                                      np.asarray(got["structured"]).T)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_structured_on_branch_nets_and_per_position_dense(name):
    spec, shape = SPECS[name]
    m = ntkdsl.compile(spec)
    p = m.init(jax.random.key(3), shape)
    x1 = jax.random.normal(jax.random.key(4), (5, *shape))
    x2 = jax.random.normal(jax.random.key(5), (3, *shape))
    ref = full_jacobian_ntk(m.apply, p, x1, x2)
    for impl in ("structured", "jacobian", "ntvp"):
        assert rel(m.empirical_ntk(p, x1, x2, implementation=impl), ref) < 1e-10, impl


def test_structured_tiles_equal_one_tile():
    f, p, x1, _ = setup("fc", n1=7)
    whole = empirical_ntk(f, p, x1, implementation="structured")
    tiled = empirical_ntk(f, p, x1, implementation="structured", batch_size=3)
    assert rel(tiled, whole) < 1e-13


def test_auto_picks_structured_when_the_net_is_known():
    f, p, x1, x2 = setup("fc")
    assert _choose(f, p, x1, x2, "auto", None)[0] == "structured"
    m = ntkdsl.compile("net t { Dense(8, b_std=0.1); Relu; Dense(2) }")
    q = m.init(jax.random.key(0), (3,))
    x = jnp.ones((4, 3))
    assert _choose(m.apply, q, x, None, "auto", None)[0] == "structured"
    # a bare function has no graph: the Jacobian (it fits the budget here)
    assert _choose(lambda pp, xx: m.apply(pp, xx), q, x, None, "auto", None)[0] == "jacobian"


def test_structured_needs_the_graph():
    m = ntkdsl.compile("net t { Dense(8); Relu; Dense(2) }")
    q = m.init(jax.random.key(0), (3,))
    with pytest.raises(InputError, match="layer graph"):
        empirical_ntk(lambda pp, xx: m.apply(pp, xx), q, jnp.ones((2, 3)),
                      implementation="structured")


def test_structured_under_jit_of_params():
    f, p, x1, x2 = setup("cnn")
    ref = empirical_ntk(f, p, x1, x2, implementation="jacobian")
    got = jax.jit(lambda q: empirical_ntk(f, q, x1, x2, implementation="structured"))(p)
    assert rel(got, ref) < 1e-10


def test_model_method_reaches_structured():
    net, shape = CASES["cnn"]
    m = ntkdsl.Model(net)
    p = network.init(net, jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    a = m.empirical_ntk(p, x, implementation="structured")
    b = empirical_ntk(NetApply(net), p, x, implementation="jacobian")
    assert rel(a, b) < 1e-10


@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR"])
@pytest.mark.parametrize(("shape", "kernel", "strides"), [
    ((7, 3), 3, 2), ((5, 6, 2), (2, 3), (1, 2)), ((4, 3, 5, 2), 2, 1)])
def test_conv_patches_reproduce_apply(padding, shape, kernel, strides):
    # the identity the structured NTK's conv rule rests on
    layer = ntkdsl.compile(f"net c {{ Conv(4, {kernel}, strides={strides}, padding={padding}, "
                           "b_std=0.3) }").net.body.layers[0]
    _, p = layer.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    sw, sb = layer.scales(p["w"].size // 4)
    via_patches = sw * layer.patches(x) @ p["w"].reshape(-1, 4) + sb * p["b"]
    assert rel(via_patches, layer.apply(p, x)) < 1e-14


def test_auto_picks_structured_for_a_cnn_with_a_bias_free_readout():
    # a Dense(1) readout without bias once tipped the flop comparison to the Jacobian
    m = ntkdsl.compile("net c { repeat 2 { Conv(4, 3, padding=SAME, b_std=0.1); Relu } "
                       "GlobalAvgPool; Dense(1) }")
    p = m.init(jax.random.key(0), (5, 5, 2))
    x = jax.random.normal(jax.random.key(1), (6, 5, 5, 2))
    assert _choose(m.apply, p, x, None, "auto", None)[0] == "structured"
    ref = full_jacobian_ntk(m.apply, p, x, x)
    assert rel(m.empirical_ntk(p, x), ref) < 1e-10


def test_each_linear_layer_takes_the_cheaper_contraction():
    from ntkdsl.empirical_structured import _linear_plan

    dense = ntkdsl.compile("net d { Dense(64) }").net.body.layers[0]
    conv = ntkdsl.compile("net c { Conv(64, 3) }").net.body.layers[0]
    w_d, w_c = {"w": (32, 64)}, {"w": (3, 3, 32, 64)}
    # a Dense on feature vectors: two Gram matrices
    assert _linear_plan(dense, (50, 32), w_d, (50, 64), 50, 50, 0, 1).rule == "gram"
    # a conv on 8x8 positions: P^2 = 4096 pairs of positions cost more than the gradients
    plan = _linear_plan(conv, (50, 8, 8, 32), w_c, (50, 8, 8, 64), 50, 50, 0, 1)
    assert plan.rule == "grads" and plan.flops == plan.jacobian_flops
    assert _linear_plan(conv, (50, 8, 8, 32), {"w": (3, 3, 32, 64), "s": (1,)},
                        (50, 8, 8, 64), 50, 50, 0, 1) is None
