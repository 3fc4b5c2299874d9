"""Trainable net parameters: kernels and finite nets as differentiable JAX functions.

What is checked:

* the differentiable kernel at values ``p`` equals the numpy kernel of the net
  compiled with ``p`` as overrides (so the substitution computes the right kernel,
  not merely a differentiable one);
* its gradients with respect to every kind of trainable value (affine stds in both
  parameterisations and in a convolution, the real constants of every
  closed-form nonlinearity, expressions of parameters) and to the inputs equal
  central finite differences to 1e-6 relative;
* ``jit`` and ``vmap`` give the eager results; the finite net's apply at
  ``net_params`` equals the net compiled with those values and is differentiable;
* every structural use of a trainable parameter is a SpecError at its use; layer
  validation runs on the defaults at compile time and on concrete values at call time.
"""

from __future__ import annotations

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkdsl
from ntkdsl import InputError, SpecError
from ntkdsl.compiler.layers import BUILTINS
from ntkdsl.compiler.trainable import differentiable_fields

RTOL = 1e-6


def _weights(shape, seed=1):
    return jnp.asarray(np.random.RandomState(seed).uniform(0.5, 1.5, size=shape))


def _fd(f, p: dict, key: str, h: float = 1e-5) -> float:
    step = h * max(1.0, abs(p[key]))
    hi, lo = dict(p), dict(p)
    hi[key] = p[key] + step
    lo[key] = p[key] - step
    return (float(f(hi)) - float(f(lo))) / (2 * step)


def _check_grads(model, x, p: dict, gets=("nngp", "ntk"), x2=None):
    n2 = x.shape[0] if x2 is None else x2.shape[0]
    w = _weights((x.shape[0], n2))
    for get in gets:
        def f(q, get=get):
            return jnp.sum(w * model.kernel_fn(x, x2, get=get, params=q))

        grad = jax.grad(f)({k: jnp.asarray(v) for k, v in p.items()})
        for k in p:
            fd = _fd(f, p, k)
            g = float(grad[k])
            assert abs(g - fd) <= RTOL * max(abs(fd), 1e-8), (get, k, g, fd)


def _same_as_overrides(text, p, x, trainable, gets=("nngp", "ntk")):
    model = ntkdsl.compile(text, trainable=trainable)
    plain = ntkdsl.compile(text, **p)
    for get in gets:
        a = np.asarray(model.kernel_fn(x, get=get, params=p))
        b = plain.kernel_fn(x, get=get)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14 * np.abs(b).max())
    return model


X = np.random.RandomState(0).randn(5, 3)

FC = """net f(W = 1.5, b = 0.2, a = 0.3) {
    Dense(16, W_std = W, b_std = b, parameterization = "%s")
    LeakyRelu(a)
    Dense(16, W_std = sqrt(W) * 2, b_std = b / 2, parameterization = "%s")
    Erf(a = a + 1, b = W)
    Dense(1, W_std = W, b_std = b, parameterization = "%s")
}"""


@pytest.mark.parametrize("parameterization", [
    "ntk", pytest.param("standard", marks=pytest.mark.slow)])
def test_affine_and_activation_gradients_match_finite_differences(parameterization):
    text = FC % ((parameterization,) * 3)
    p = {"W": 1.3, "b": 0.25, "a": 0.2}
    model = _same_as_overrides(text, p, X, ("W", "b", "a"))
    _check_grads(model, X, p)


def test_defaults_give_the_numpy_kernel():
    text = FC % (("ntk",) * 3)
    model = ntkdsl.compile(text, trainable=("W", "b", "a"))
    plain = ntkdsl.compile(text)
    for get in ("nngp", "ntk"):
        np.testing.assert_allclose(np.asarray(model.kernel_fn(X, get=get, params={})),
                                   plain.kernel_fn(X, get=get), rtol=1e-13)
    # without params= the trainable model is the ordinary numpy one
    k = model.kernel_fn(X, get="nngp")
    assert isinstance(k, np.ndarray)


@pytest.mark.slow
def test_conv_net_gradients():
    text = """net c(W = 1.2, b = 0.3) {
        Conv(4, 3, W_std = W, b_std = b)
        Relu
        Conv(4, (2, 2), padding = VALID, W_std = W, b_std = b)
        Erf
        Flatten
        Dense(1, W_std = W, b_std = b)
    }"""
    x = np.random.RandomState(3).randn(3, 4, 4, 2)
    p = {"W": 1.4, "b": 0.2}
    model = _same_as_overrides(text, p, x, ("W", "b"))
    _check_grads(model, x, p)


def _activation_cases(full: bool):
    required = {"alpha": 0.3, "a": 0.4, "b": 1.2}
    cases = []
    for name, cls in sorted(BUILTINS.items()):
        fields = [f for f in differentiable_fields(cls) if f not in ("W_std", "b_std")]
        for f in fields:
            defaults = {fl.name: fl.default for fl in dataclasses.fields(cls)}
            value = defaults.get(f)
            value = required[f] if value is dataclasses.MISSING else value
            args = [f"{f} = P"]
            for other in fields:
                if other != f and defaults.get(other) is dataclasses.MISSING:
                    args.append(f"{other} = {required[other]}")
            cases.append((name, f, float(value), ", ".join(args)))
    quick = {("Erf", "b")}
    return [c for c in cases if full != ((c[0], c[1]) in quick)]


def _activation_check(layer, field, default, args):
    text = (f"net f(P = {default!r}) {{ Dense(6, W_std = 1.3, b_std = 0.2); {layer}({args}); "
            f"Dense(1, W_std = 1.1, b_std = 0.1) }}")
    p = {"P": default + 0.05}
    model = _same_as_overrides(text, p, X, ("P",))
    _check_grads(model, X, p)


@pytest.mark.parametrize("layer,field,default,args", _activation_cases(False))
def test_activation_constant_gradients(layer, field, default, args):
    _activation_check(layer, field, default, args)


@pytest.mark.slow
@pytest.mark.parametrize("layer,field,default,args", _activation_cases(True))
def test_every_activation_constant_gradient(layer, field, default, args):
    _activation_check(layer, field, default, args)


def test_every_differentiable_activation_is_covered():
    names = {c[0] for c in _activation_cases(False) + _activation_cases(True)}
    assert {"LeakyRelu", "ABRelu", "Erf", "Sin", "Cos", "Exp", "Gaussian", "Rbf"} <= names


def test_input_gradients_match_finite_differences():
    model = ntkdsl.compile(FC % (("ntk",) * 3), trainable=("W",))
    x2 = np.random.RandomState(5).randn(4, 3)
    for other, get in ((x2, "ntk"), (None, "nngp")):
        w = _weights((5, 5 if other is None else 4))
        if True:
            def f(x, get=get, other=other, w=w):
                return jnp.sum(w * model.kernel_fn(x, other, get=get, params={"W": 1.2}))

            g = np.asarray(jax.grad(f)(jnp.asarray(X)))
            h = 1e-5
            fd = np.zeros_like(X)
            for i in np.ndindex(X.shape):
                e = np.zeros_like(X)
                e[i] = h
                fd[i] = (float(f(X + e)) - float(f(X - e))) / (2 * h)
            np.testing.assert_allclose(g, fd, rtol=RTOL, atol=RTOL * np.abs(fd).max())


def test_jit_and_vmap():
    model = ntkdsl.compile(FC % (("ntk",) * 3), trainable=("W", "b"))
    eager = model.kernel_fn(X, get="ntk", params={"W": 1.2, "b": 0.3})
    jitted = jax.jit(lambda p, x: model.kernel_fn(x, get="ntk", params=p))(
        {"W": 1.2, "b": 0.3}, X)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13)
    ws = jnp.asarray([0.9, 1.2, 1.7])
    batched = jax.vmap(lambda w: model.kernel_fn(X, X[:2], get="nngp", params={"W": w}))(ws)
    for i, w in enumerate(ws):
        np.testing.assert_allclose(
            batched[i], model.kernel_fn(X, X[:2], get="nngp", params={"W": float(w)}),
            rtol=1e-13)
    both = model.kernel_fn(X, get=("nngp", "ntk"), params={"W": 1.2})
    assert both.nngp.shape == both.ntk.shape == (5, 5)


@pytest.mark.slow
def test_finite_net_at_net_params():
    text = FC % (("standard",) * 3)
    model = ntkdsl.compile(text, trainable=("W", "b", "a"))
    p = {"W": 1.3, "b": 0.25, "a": 0.2}
    plain = ntkdsl.compile(text, **p)
    key = jax.random.key(0)
    weights = model.init(key, (3,), net_params=p)
    ref = plain.init(key, (3,))
    for a, b in zip(jax.tree_util.tree_leaves(weights), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    out = model.apply(weights, X, net_params=p)
    np.testing.assert_allclose(out, plain.apply(ref, X), rtol=1e-13)

    def f(q):
        return jnp.sum(model.apply(weights, X, net_params=q) ** 2)

    g = jax.grad(f)({k: jnp.asarray(v) for k, v in p.items()})
    for k in p:
        fd = _fd(f, p, k)
        assert abs(float(g[k]) - fd) <= RTOL * abs(fd), (k, g[k], fd)
    # init in the standard parameterisation depends on the stds, differentiably
    gi = jax.grad(lambda q: jnp.sum(model.apply(model.init(key, (3,), net_params=q), X)))(
        {"W": jnp.asarray(1.3)})
    assert np.isfinite(float(gi["W"]))


def _error(text, trainable, **kw):
    with pytest.raises(SpecError) as e:
        ntkdsl.compile(text, trainable=trainable, **kw)
    return e.value


@pytest.mark.parametrize("text,where,what", [
    ("net f(W = 2) { Dense(W) }", "W)", "Dense's 'out'"),
    ("net f(W = 2) { repeat W { Dense(3) } }", "W {", "a repeat count"),
    ("net f(W = 2) { Conv(3, W); Flatten; Dense(1) }", "W)", "Conv's 'kernel'"),
    ("net f(W = 2) { Conv(3, (W, 2)); Flatten; Dense(1) }", "(W, 2)", "Conv's 'kernel'"),
    ("net f(W = 2) { Conv(3, 2, strides = W); Flatten; Dense(1) }", "strides = W",
     "Conv's 'strides'"),
    ("net f(W = 2) { Input((W,)); Dense(1) }", "(W,)", "an Input shape"),
    ("net f(W = 2) { Dense(3); Softplus(W) }", "W)", "cannot differentiate"),
    ("net f(W = 2) { let k = W * 3\n Dense(k) }", "k)", "Dense's 'out'"),
    ("block B(n) { Dense(n) }\nnet f(W = 2) { B(W) }", "n)", "Dense's 'out'"),
    ("net f(W = 0.0) { Dense(3, b_std = W) }", "b_std = W", "no bias at all"),
    ("activation sq(x, c = 1) = c * x * x\nnet f(W = 2) { Dense(3); sq(c = W) }", "c = W",
     "user-defined activation"),
    ("net f(W = \"SAME\") { Dense(3) }", "W = ", "not a real number"),
])
def test_structural_uses_are_located_errors(text, where, what):
    e = _error(text, ("W",))
    assert "trainable" in e.message
    if what is not None:
        assert what in e.message
    line = text.splitlines()[e.line - 1]
    assert line[e.column - 1:].startswith(where.split("\n")[0]), (line, e.column, where)


def test_defaults_b_std_flows_and_is_differentiable():
    text = "net f(W = 2) { defaults b_std = W / 10\n Dense(3); Relu; Dense(1) }"
    model = ntkdsl.compile(text, trainable="W")
    _check_grads(model, X, {"W": 1.5}, gets=("nngp",))


def test_unknown_trainable_name_and_params():
    e = _error("net f(W = 2) { Dense(3) }", ("V",))
    assert "no parameter 'V'" in e.message
    model = ntkdsl.compile("net f(W = 2, b = 0.1) { Dense(3, W_std = W, b_std = b) }",
                           trainable=("W",))
    with pytest.raises(InputError, match="not a trainable parameter"):
        model.kernel_fn(X, get="nngp", params={"b": 1.0})
    with pytest.raises(InputError, match="scalar"):
        model.kernel_fn(X, get="nngp", params={"W": [1.0, 2.0]})
    with pytest.raises(InputError, match="batch_size"):
        model.kernel_fn(X, get="nngp", params={"W": 1.0}, batch_size=2)
    plain = ntkdsl.compile("net f { Dense(3) }")
    with pytest.raises(InputError, match="trainable"):
        plain.kernel_fn(X, get="nngp", params={"W": 1.0})


def test_validation_on_defaults_and_concrete_values_not_under_tracing():
    _error("net f(W = -1) { Dense(3, W_std = W) }", ("W",))  # the default is validated
    model = ntkdsl.compile("net f(W = 1) { Dense(3, W_std = W); Relu; Dense(1) }",
                           trainable="W")
    with pytest.raises(InputError, match="W_std"):
        model.kernel_fn(X, get="nngp", params={"W": -0.5})
    # under a trace the value is abstract: the formula runs (W enters squared)
    traced = jax.jit(lambda w: model.kernel_fn(X, get="nngp", params={"W": w}))(-0.5)
    np.testing.assert_allclose(traced, model.kernel_fn(X, get="nngp", params={"W": 0.5}),
                               rtol=1e-13)
    assert model.trainable_bounds() == {"W": (0.0, None)}
    assert model.trainable_defaults == {"W": 1.0}


def test_signature_tells_equal_nets_apart():
    # the same layer values, different dependence on the parameters: no shared cache entry
    a = ntkdsl.compile("net f(W = 1, b = 1) { Dense(3, W_std = W); Relu; Dense(1) }",
                       trainable=("W", "b"))
    b = ntkdsl.compile("net f(W = 1, b = 1) { Dense(3, W_std = b); Relu; Dense(1) }",
                       trainable=("W", "b"))
    assert a.net == b.net
    ka = a.kernel_fn(X, get="nngp", params={"W": 2.0})
    kb = b.kernel_fn(X, get="nngp", params={"W": 2.0})
    assert not np.allclose(ka, kb)


def test_model_pickles_with_its_trainable_parameters():
    model = ntkdsl.compile(FC % (("ntk",) * 3), trainable=("W", "a"))
    again = pickle.loads(pickle.dumps(model))
    assert again.trainable == ("W", "a") and again == model
    np.testing.assert_allclose(again.kernel_fn(X, get="nngp", params={"W": 1.1}),
                               model.kernel_fn(X, get="nngp", params={"W": 1.1}), rtol=1e-14)


def test_compile_file_takes_trainable(tmp_path):
    path = tmp_path / "n.ntk"
    path.write_text("net f(W = 1.5) { Dense(8, W_std = W); Relu; Dense(1, W_std = W) }\n")
    model = ntkdsl.compile_file(path, trainable=["W"])
    assert model.trainable == ("W",)
    assert model.kernel_fn(X, get="ntk", params={"W": 1.0}).shape == (5, 5)


@pytest.mark.slow
def test_repeat_body_with_trainable_values():
    text = ("net f(W = 1.3, b = 0.2) { repeat 3 { Dense(8, W_std = W, b_std = b); Relu }\n"
            "Dense(1, W_std = W) }")
    p = {"W": 1.5, "b": 0.25}
    model = _same_as_overrides(text, p, X, ("W", "b"), gets=("ntk",))
    _check_grads(model, X, p, gets=("ntk",))
    weights = model.init(jax.random.key(1), (3,))
    np.testing.assert_allclose(model.apply(weights, X, net_params=p),
                               ntkdsl.compile(text, **p).apply(weights, X), rtol=1e-13)
