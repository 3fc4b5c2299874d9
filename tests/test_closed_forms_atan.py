"""The printer's arithmetic atan/atan2 (printer.fast_atan2) against mpmath and numpy,
and the exact-at-correlation-1 determinant (printer._as_det)."""

from __future__ import annotations

import jax
import mpmath
import numpy as np
import pytest

from ntkdsl.compiler import printer
from ntkdsl.compiler.layers import Relu

jax.config.update("jax_enable_x64", True)


def _sweep(rng, n=20000):
    """Random angles and radii, plus the edges: |c| -> 1, c -> 0, negative, axes."""
    ang = rng.uniform(-np.pi, np.pi, n)
    r = np.exp(rng.uniform(-30, 30, n))
    t = np.concatenate([np.linspace(0, 1, 1001), 1 - np.logspace(-17, -1, 200),
                        np.logspace(-300, 0, 200), [0.66, np.nextafter(0.66, 1)]])
    s = np.sqrt(np.maximum(1 - t * t, 0))
    y = np.concatenate([r * np.sin(ang), t, s, -t, s, -s, [1.0, -1.0, 0.0, 0.0]])
    x = np.concatenate([r * np.cos(ang), s, t, -s, -t, -t, [0.0, 0.0, 1.0, -1.0]])
    return y, x


def test_fast_atan2_float64_within_4e16_of_mpmath():
    rng = np.random.default_rng(0)
    y, x = _sweep(rng)
    got = np.asarray(jax.jit(printer.fast_atan2)(y, x))
    worst = 0.0
    with mpmath.workdps(30):
        for yi, xi, g in zip(y, x, got):
            if yi == 0:  # signed zeros: compared with numpy below
                continue
            ref = mpmath.atan2(mpmath.mpf(yi), mpmath.mpf(xi))
            worst = max(worst, float(abs((mpmath.mpf(g) - ref) / ref)))
    assert worst <= 4e-16, worst
    ref = np.arctan2(y, x)  # also on the signed zeros and axes
    assert np.all(np.abs(got - ref) <= 4e-16 * np.abs(ref) + 1e-300)


def test_fast_atan2_float32_stays_float32_within_2ulp():
    rng = np.random.default_rng(1)
    y, x = _sweep(rng)
    y32, x32 = y.astype(np.float32), x.astype(np.float32)
    tiny = np.finfo(np.float32).tiny  # XLA flushes float32 subnormals to zero
    ok = (np.abs(y32) > tiny) & (np.abs(x32) > tiny)
    got = np.asarray(jax.jit(printer.fast_atan2)(y32[ok], x32[ok]))
    assert got.dtype == np.float32
    ref = np.arctan2(y32[ok].astype(np.float64), x32[ok].astype(np.float64))
    rel = np.abs(got.astype(np.float64) - ref) / np.abs(ref)
    assert rel.max() <= 2 * np.finfo(np.float32).eps, rel.max()


def test_fast_atan_and_its_gradient():
    x = np.linspace(-50, 50, 10001)
    got = np.asarray(jax.jit(printer.fast_atan)(x))
    np.testing.assert_allclose(got, np.arctan(x), rtol=4e-16, atol=0)
    g = jax.vmap(jax.grad(printer.fast_atan))(x)
    np.testing.assert_allclose(np.asarray(g), 1 / (1 + x * x), rtol=1e-15)


@pytest.mark.parametrize("c", [1.0, -1.0, 0.0, 0.3, 1 - 1e-12])
def test_angle_gradient_finite_at_the_boundary(c):
    f = lambda c: printer.safe_atan2(printer.safe_sqrt(1 - c * c), c)  # noqa: E731
    g = float(jax.grad(f)(c))
    assert np.isfinite(g)
    if abs(c) < 1:
        assert g == pytest.approx(-1 / np.sqrt(1 - c * c), rel=1e-6)
    assert float(jax.grad(lambda a: printer.safe_atan2(a, 0.0 * a))(0.0)) == 0.0
    assert float(printer.safe_atan2(0.0, 0.0)) == pytest.approx(np.pi / 2, abs=0)


def test_relu_exact_at_correlation_one():
    """s11 = s22 = s12 = s: the printed det is exactly 0, so T = s/2 and Tdot = 1/2 exactly,
    whether or not XLA contracts s11*s22 - s12^2 into an FMA."""
    s = np.random.default_rng(2).uniform(1e-3, 1e3, 5000)
    t, td = jax.jit(Relu().pair_fn())(s, s, s)
    assert np.array_equal(np.asarray(t), s / 2)
    assert np.array_equal(np.asarray(td), np.full_like(s, 0.5))
    src = Relu().pair_fn().__source__
    assert "_sqrt((_sqrt(" in src  # the det is printed as (r - s12)(r + s12)
