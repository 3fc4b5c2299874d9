"""ntkdsl.compat's behaviour beyond the goldens: refusals, jit, batch, to_spec, Model.stax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkdsl
import ntkdsl.compat as nt
from ntkdsl import InputError
from ntkdsl.compat import stax

X1 = np.random.default_rng(0).normal(size=(3, 4))
X2 = np.random.default_rng(1).normal(size=(2, 4))
IMG = np.random.default_rng(2).normal(size=(2, 4, 4, 2))


def _fc():
    return stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))


@pytest.mark.parametrize("make, name", [
    (lambda: stax.Gabor(), "Gabor"),
    (lambda: stax.ExpNormalized(), "ExpNormalized"),
    (lambda: stax.Index(0), "Index"),
    (lambda: stax.DotGeneral(), "DotGeneral"),
    (lambda: stax.Gelu(approximate=True), "Gelu"),
    (lambda: stax.Dense(3, channel_axis=0), "Dense"),
    (lambda: stax.Dense(3, s=(2, 2), parameterization="standard"), "Dense"),
    (lambda: stax.Dense(3, b_std=0.0, parameterization="standard"), "Dense"),
    (lambda: stax.Conv(3, (2, 2), dimension_numbers=("NCHW", "OIHW", "NCHW")), "Conv"),
    (lambda: stax.AvgPool((2, 2), padding="SAME", normalize_edges=True), "AvgPool"),
    (lambda: stax.ImageResize((-1, 3, 3, -1), "cubic"), "ImageResize"),
    (lambda: stax.Aggregate(implementation="SPARSE"), "Aggregate"),
    (lambda: stax.GlobalSelfAttention(2, 2, 2, 1, W_key_std=2.0), "GlobalSelfAttention"),
    (lambda: stax.GlobalSelfAttention(2, 2, 2, 1, linear_scaling=False),
     "GlobalSelfAttention"),
])
def test_unsupported_layers_raise_naming_them(make, name):
    with pytest.raises(NotImplementedError, match=name):
        make()


def test_unexpressible_nets_refuse_their_kernels():
    cases = [
        (stax.serial(stax.Relu(), stax.Dense(1)), X1),  # a nonlinearity on the raw input
        (stax.serial(stax.Dense(4), stax.FanOut(2),
                     stax.parallel(stax.Relu(), stax.Identity()), stax.FanInSum()), X1),
        (stax.serial(stax.Dense(4), stax.FanOut(2)), X1),  # never fanned in
        (stax.serial(stax.Conv(2, (2, 2)), stax.FanOut(2),
                     stax.parallel(stax.Conv(2, (1, 1)), stax.Conv(2, (1, 1))),
                     stax.FanInConcat(axis=1), stax.Flatten(), stax.Dense(1)), IMG),
        (stax.serial(stax.Conv(2, (2, 2))), IMG),  # spatial output: per-position kernels
        (stax.serial(stax.Conv(2, (2, 2)), stax.ImageResize((-1, 2, 2, -1), "nearest"),
                     stax.Flatten(), stax.Dense(1)), IMG),  # downsampling
    ]
    for (_, _, kernel_fn), x in cases:
        with pytest.raises(NotImplementedError):
            kernel_fn(x, None, "nngp")


def test_kernel_fn_options_and_kernel_inputs_are_refused_not_ignored():
    _, _, kernel_fn = _fc()
    with pytest.raises(NotImplementedError, match="options"):
        kernel_fn(X1, X2, "nngp", mask_constant=0.0)
    with pytest.raises(NotImplementedError, match="Aggregate"):
        kernel_fn(X1, X2, "nngp", pattern=(None, None))
    with pytest.raises(NotImplementedError, match="Kernel back"):
        kernel_fn(kernel_fn(X1, X2))
    with pytest.raises(ValueError, match="not a Kernel field"):
        kernel_fn(X1, X2, "ntkk")


def test_get_forms_and_metadata():
    _, _, kernel_fn = _fc()
    k = kernel_fn(X1, X2)
    assert k.nngp.shape == k.ntk.shape == (3, 2)
    assert k.shape1 == (3, 1) and k.shape2 == (2, 1) and k.is_gaussian and not k.x1_is_x2
    np.testing.assert_array_equal(kernel_fn(X1, X2, "ntk"), k.ntk)
    both = kernel_fn(X1, X2, ("ntk", "cov1", "cov2"))
    assert type(both).__name__ == "Kernel" and both._fields == ("ntk", "cov1", "cov2")
    np.testing.assert_allclose(both.cov1, np.diagonal(kernel_fn(X1, None, "nngp")),
                               rtol=1e-13)
    np.testing.assert_allclose(both.cov2, np.diagonal(kernel_fn(X2, None, "nngp")),
                               rtol=1e-13)


def test_jit_and_batch_give_the_same_kernels():
    _, _, kernel_fn = _fc()
    want = kernel_fn(X1, X2)
    got = jax.jit(kernel_fn, static_argnames="get")(X1, X2, get="ntk")
    np.testing.assert_allclose(got, want.ntk, rtol=1e-13)
    batched = nt.batch(kernel_fn, batch_size=2)
    np.testing.assert_allclose(batched(X1, X2, "nngp"), want.nngp, rtol=1e-13)
    np.testing.assert_allclose(batched(X1, None, "ntk"), kernel_fn(X1, None, "ntk"),
                               rtol=1e-13)


def test_defaults_follow_the_peer():
    # Conv padding VALID, AvgPool strides 1, b_std None = no bias, Dropout rate = keep
    init_fn, _, _ = stax.serial(stax.Conv(3, (2, 2)), stax.AvgPool((2, 2)))
    out, params = init_fn(jax.random.PRNGKey(0), (-1, 5, 5, 2))
    assert out == (0, 3, 3, 3) and params[0][1] is None  # the peer's pooling reports batch 0
    assert init_fn(jax.random.PRNGKey(0), (7, 5, 5, 2))[0] == (7, 3, 3, 3)
    spec = nt.to_spec(stax.serial(stax.Dense(4), stax.Dropout(0.8), stax.Dense(1)), (4,))
    assert f"Dropout(p = {1 - 0.8!r})" in spec


def test_to_spec_text_and_round_trip():
    net = stax.serial(
        stax.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), stax.Relu(),
        stax.FanOut(2), stax.parallel(stax.Conv(4, (1, 1)), stax.Identity()),
        stax.FanInSum(), stax.AvgPool((2, 2), (2, 2)), stax.Flatten(), stax.Dense(2))
    text = nt.to_spec(net, (-1, 4, 4, 2), name="small")
    assert text == (
        "net small {\n"
        "    Input((4, 4, 2))\n"
        "    Conv(out = 4, kernel = (3, 3), strides = (1, 1), W_std = 1.5, b_std = 0.1)\n"
        "    Relu\n"
        "    Sum\n"
        "    {\n"
        "        Conv(out = 4, kernel = (1, 1), strides = (1, 1), padding = \"VALID\")\n"
        "    }\n"
        "    { }\n"
        "    AvgPool(window = (2, 2), strides = (2, 2))\n"
        "    Flatten\n"
        "    Dense(out = 2)\n"
        "}\n")
    x = IMG[:, :, :, :2]
    got = ntkdsl.compile(text).kernel_fn(x, None)
    want = net[2](x, None)
    np.testing.assert_array_equal(got.ntk, want.ntk)


def test_to_spec_refuses_python_nonlinearities():
    net = stax.serial(stax.Dense(4), stax.ElementwiseNumerical(jnp.tanh, 100), stax.Dense(1))
    with pytest.raises(InputError, match="activation"):
        nt.to_spec(net, (4,))
    # ... whose kernels still work, and equal the built-in Tanh's to the quadrature's accuracy
    tanh = ntkdsl.compile("net t { Dense(4) Tanh Dense(1) }")
    np.testing.assert_allclose(net[2](X1, X2, "ntk"), tanh.kernel_fn(X1, X2, "ntk"),
                               rtol=1e-6)


def test_model_stax_round_trip():
    model = ntkdsl.compile("net m { Dense(8, W_std = 1.5, b_std = 0.1) Relu Dense(3) }")
    init_fn, apply_fn, kernel_fn = model.stax()
    np.testing.assert_array_equal(kernel_fn(X1, X2, "ntk"), model.kernel_fn(X1, X2, "ntk"))
    out, params = init_fn(jax.random.PRNGKey(0), (-1, 4))
    assert out == (-1, 3) and apply_fn(params, X1).shape == (3, 3)
    # composes with compat layers; its spec round-trips
    deeper = stax.serial(model.stax(), stax.Relu(), stax.Dense(1))
    text = nt.to_spec(deeper, (4,))
    np.testing.assert_array_equal(ntkdsl.compile(text).kernel_fn(X1, X2, "nngp"),
                                  deeper[2](X1, X2, "nngp"))


def test_predict_refusals():
    k = np.eye(3) + 0.1
    with pytest.raises(NotImplementedError, match="momentum"):
        nt.predict.gradient_descent(lambda f, y: jnp.sum((f - y) ** 2), k, np.ones((3, 1)),
                                    momentum=0.9)
    with pytest.raises(NotImplementedError, match="trace_axes"):
        nt.predict.gradient_descent_mse(k, np.ones((3, 1)), trace_axes=())
    with pytest.raises(NotImplementedError, match="ntkgp"):
        nt.predict.gp_inference(k, np.ones((3, 1)))("ntkgp", k, k)
    with pytest.raises(NotImplementedError, match="trace_axes"):
        nt.empirical_ntk_fn(lambda p, x: x, trace_axes=())


@pytest.mark.slow
def test_migration_guide_example_runs():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "migrating.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    env: dict = {}
    exec(compile(code, "docs/migrating.md", "exec"), env)
    assert env["out"].ntk.mean.shape == (2, 4, 10)
    assert env["out"].ntk.covariance.shape == (2, 4, 4)
    assert env["fx_test_t"].shape == (4, 10) and env["lr"] > 0
    assert np.isfinite(env["mc_kernel"].ntk).all()
