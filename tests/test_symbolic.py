"""The five symbolic checks for every pointwise layer of the registry, and the numerics
of the printed functions (no NaN at the edges, float32, Monte Carlo agreement)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdsl.compiler import symbolic as S
from ntkdsl.compiler.layers import POINTWISE, Relu

jax.config.update("jax_enable_x64", True)

LAYERS = S.example_layers()
FIRST = {type(layer): layer for layer in reversed(LAYERS)}  # one instance per class
IDS = [layer.describe() for layer in LAYERS]


def test_registry_is_covered():
    assert {type(layer) for layer in LAYERS} == set(POINTWISE)


@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
@pytest.mark.parametrize("check", ["price", "diagonal", "special", "rewrite"])
def test_symbolic_checks(layer, check):
    rep = S.check_layer(layer, which=(check,), n_integration=1)
    assert rep.results, "no check ran"
    assert rep.ok, "\n".join(r.line() for r in rep.failures)


@pytest.mark.parametrize("layer", list(FIRST.values()), ids=lambda la: la.describe())
def test_integration_check(layer):
    rep = S.check_layer(layer, which=("integration",), n_integration=1)
    assert rep.ok, "\n".join(r.line() for r in rep.failures)


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
def test_integration_check_full(layer):
    rep = S.check_layer(layer, n_integration=5)
    assert rep.ok, "\n".join(r.line() for r in rep.failures)


def test_closed_forms_are_proved_symbolically():
    """Price's theorem and the diagonal are proved by sympy itself, not the fallback."""
    for layer in LAYERS:
        if not layer.closed_form:
            continue
        for r in S.check_layer(layer, which=("price", "diagonal")).results:
            if r.name != "diagonal closed form == 1-D integral":
                assert r.how.startswith("symbolic"), r.line()


@dataclass(frozen=True, kw_only=True)
class _BrokenRelu(Relu):
    """A Relu whose Tdot is off by a constant: every check that involves Tdot must fail."""

    def _Tdot(self):
        return super()._Tdot() + 1 / 1000


def test_checks_can_fail():
    bad = _BrokenRelu()
    price = S.check_price(bad)[0]
    assert not price.ok and price.how.startswith("numeric"), price.line()
    assert not S.check_integration(bad)[0].ok
    assert not S.Report(tuple(S.check_diagonal(bad))).ok


def test_prove_zero_fallback_reports_numeric():
    # acos(c) == atan2(sqrt(1 - c^2), c) is not found by simplify: the numeric proof is used
    import sympy

    e = sympy.acos(S.s12 / sympy.sqrt(S.s11 * S.s22)) - sympy.atan2(
        sympy.sqrt(S.s11 * S.s22 - S.s12**2), S.s12)
    ok, how, _detail = S.prove_zero(e)
    assert ok and how in ("numeric (50 digits)", "symbolic (parametrised domain)", "symbolic")
    ok, how, _ = S.prove_zero(e + sympy.Rational(1, 10**20))
    assert not ok


def test_report_summary():
    rep = S.check_layers([Relu(), Relu()], which=("price",))
    assert rep.ok
    assert "identities hold" in rep.summary()
    assert sum(1 for r in rep.results if r.layer == "Relu") == 1  # deduplicated


# ---- numerics of the printed functions -------------------------------------------------

EDGE = [  # (s11, s12, s22): correlation +-1, zero variances, both zero
    (1.0, 1.0, 1.0), (2.0, -2.0, 2.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0),
    (4.0, 2.0, 1.0), (1e-300, 1e-300, 1e-300),
]


@pytest.mark.parametrize("layer", list(FIRST.values()), ids=lambda la: la.describe())
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_no_nan_at_the_edges(layer, dtype):
    a, b, c = (jnp.asarray(np.array(v), dtype) for v in zip(*EDGE))
    pair = jax.jit(layer.pair_fn())
    t, td = pair(a, b, c)
    assert t.dtype == dtype and td.dtype == dtype
    t1 = jax.jit(layer.t_fn())(a, b, c)
    dg = jax.jit(layer.diag_fn())(a)
    for v in (t, td, t1, dg):
        assert bool(jnp.all(jnp.isfinite(v))), v

    def total(a, b, c):
        t, td = layer.pair_fn()(a, b, c)
        return jnp.sum(t) + jnp.sum(td) + jnp.sum(layer.diag_fn()(a))

    grads = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(a, b, c)
    for g in grads:
        assert bool(jnp.all(jnp.isfinite(g))), g


@pytest.mark.parametrize("layer", list(FIRST.values()), ids=lambda la: la.describe())
def test_float32_matches_float64(layer):
    rng = np.random.default_rng(0)
    a, c = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    b = rng.uniform(-1, 1, 50) * np.sqrt(a * c)
    t64, d64 = layer.pair_fn()(*(jnp.asarray(v, jnp.float64) for v in (a, b, c)))
    t32, d32 = layer.pair_fn()(*(jnp.asarray(v, jnp.float32) for v in (a, b, c)))
    scale = float(jnp.max(jnp.abs(t64))) + 1e-30
    assert float(jnp.max(jnp.abs(t32 - t64))) < 1e-4 * scale
    assert float(jnp.max(jnp.abs(d32 - d64))) < 1e-4 * (float(jnp.max(jnp.abs(d64))) + 1e-30)


@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
def test_monte_carlo(layer):
    """T and Tdot against 1e5 samples of (phi(u) phi(v)), within 5 standard errors."""
    rng = np.random.default_rng(1)
    cov = np.array([[1.3, 0.7], [0.7, 0.9]])
    uv = rng.multivariate_normal([0, 0], cov, size=100_000)
    u, v = jnp.asarray(uv[:, 0]), jnp.asarray(uv[:, 1])
    phi = layer.phi
    dphi = jax.vmap(jax.grad(lambda z: phi(z)))
    t, td = layer.pair_fn()(1.3, 0.7, 0.9)
    for got, samples in ((t, phi(u) * phi(v)), (td, dphi(u) * dphi(v))):
        samples = np.asarray(samples)
        se = samples.std() / np.sqrt(samples.size)
        assert abs(float(got) - samples.mean()) < 5 * se + 1e-12, (float(got), samples.mean(), se)
    d = np.asarray(phi(u) ** 2)
    assert abs(float(layer.diag_fn()(1.3)) - d.mean()) < 5 * d.std() / np.sqrt(d.size) + 1e-12


def test_init_apply():
    layer = FIRST[Relu]
    shape, params = layer.init(jax.random.PRNGKey(0), (3, 4))
    assert shape == (3, 4) and params == ()
    x = jnp.array([[-1.0, 2.0]])
    assert jnp.allclose(layer.apply(params, x), jnp.array([[0.0, 2.0]]))


def test_printed_source_is_visible():
    src = Relu().pair_fn().__source__
    assert "_atan2" in src and "_sqrt" in src and "acos" not in src
