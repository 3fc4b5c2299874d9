"""The per-eigenmode maths of the MSE dynamics, shared by the dense and iterative solvers.

Gradient flow, gradient descent and heavy-ball momentum act on each eigenmode
``lambda`` of the train kernel by a scalar factor (Lee et al. 2019, eq. 8-11);
:mod:`ntkdsl.predict` applies them through an eigendecomposition,
:mod:`ntkdsl.solvers` through a Lanczos tridiagonal. Both import them from here,
so neither imports the other.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .diagnostics import InputError

Array = object  # a jax or numpy array

LOSSES = ("total", "mean")
KINDS = ("ntk", "nngp")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise InputError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")


class Gaussian(NamedTuple):
    """A predictive distribution: ``mean`` ``(..., m, k)`` and ``cov`` ``(..., m, m)``."""

    mean: Array
    cov: Array | None


def effective_learning_rate(learning_rate: float, y_size: int, loss: str = "total") -> float:
    """The rate of the total-loss dynamics that the chosen ``loss`` convention amounts to.

    Arguments:
        learning_rate: the user's ``eta``.
        y_size: number of target entries ``n k``.
        loss: ``"total"`` (paper eq. 2, rate unchanged) or ``"mean"`` (rate / (n k)).

    Returns:
        ``eta`` for ``"total"``, ``eta / y_size`` for ``"mean"``.
    """
    _check_loss(loss)
    lr = float(learning_rate)
    if not math.isfinite(lr) or lr <= 0:
        raise InputError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    return lr if loss == "total" else lr / y_size


@jax.jit
def _flow_factors(lam, t, eta):
    """Gradient flow: ``s = e^{-eta lam t}``, ``h = (1 - s) / lam`` (-> ``eta t``)."""
    x = eta * lam[None, :] * t[:, None]
    pos = lam > 0
    h = jnp.where(pos, -jnp.expm1(-x) / jnp.where(pos, lam, 1), eta * t[:, None])
    return jnp.exp(-x), h


def _int_power(base, n):
    """``base ** n`` for integer-valued ``n`` and any sign of ``base``."""
    mag = jnp.power(jnp.abs(base), n)
    odd = jnp.mod(n, 2) == 1
    return jnp.where((base < 0) & odd, -mag, mag)


@jax.jit
def _gd_factors(lam, n, eta):
    """Discrete GD: ``s = (1 - eta lam)^n``, ``h = (1 - s) / lam`` (-> ``eta n``)."""
    x = eta * lam[None, :]
    n = n[:, None]
    small = x < 1  # 1 - x > 0: the accurate log1p/expm1 form
    logb = jnp.log1p(-jnp.where(small, x, 0))
    s_small = jnp.exp(n * logb)
    s = jnp.where(small, s_small, _int_power(1 - x, n))
    pos = lam > 0
    lam_safe = jnp.where(pos, lam, 1)
    h = jnp.where(small, -jnp.expm1(n * logb) / lam_safe, (1 - s) / lam_safe)
    return s, jnp.where(pos, h, eta * n)


def _chebyshev_g(n, a, beta):
    """``G_n = (z1^n - z2^n) / (z1 - z2)`` for the roots of ``z^2 - a z + beta``.

    ``G_0 = 0``, ``G_1 = 1``, ``G_{n+1} = a G_n - beta G_{n-1}``. Evaluated
    without cancellation: real roots as ``z1^{n-1} (1 - q^n) / (1 - q)`` with
    ``q = z2 / z1`` and ``1 - q`` computed from the discriminant; complex roots
    ``s e^{+-i theta}`` as ``s^{n-1} sin(n theta) / sin(theta)``; a repeated
    root as ``n z^{n-1}``. ``n`` is integer valued, ``beta >= 0``.
    """
    disc = a * a - 4 * beta
    sgn = jnp.where(a < 0, -1.0, 1.0)
    absa = jnp.abs(a)
    flip = jnp.where((sgn < 0) & (jnp.mod(n - 1, 2) == 1), -1.0, 1.0)  # G_n(-a) = (-1)^{n-1} G_n(a)
    # real roots (disc >= 0): |z1| = (|a| + r) / 2, 1 - q = r / |z1|
    r = jnp.sqrt(jnp.maximum(disc, 0))
    z1 = (absa + r) / 2
    d = jnp.where(z1 > 0, r / jnp.where(z1 > 0, z1, 1), 0)
    d_pos = d > 0
    d_safe = jnp.where(d_pos, d, 0.5)
    ratio = jnp.where(d_pos, -jnp.expm1(n * jnp.log1p(-d_safe)) / d_safe, n)
    ratio = jnp.where(d >= 1, 1.0, ratio)  # q = 0 (beta = 0): (1 - 0^n) / 1 = 1 for n >= 1
    g_real = jnp.power(z1, n - 1) * ratio
    # complex roots (disc < 0, so beta > 0)
    im = jnp.sqrt(jnp.maximum(-disc, 0))
    s = jnp.sqrt(beta)
    theta = jnp.arctan2(im, absa)
    sin_t = jnp.where(im > 0, im / (2 * jnp.where(s > 0, s, 1)), 1)
    g_cplx = jnp.power(s, n - 1) * jnp.sin(n * theta) / sin_t
    g = flip * jnp.where(disc >= 0, g_real, g_cplx)
    return jnp.where(n == 0, 0.0, g)


@partial(jax.jit, static_argnums=3)
def _momentum_factors(lam, n, eta, beta):
    """Heavy-ball momentum, per mode ``e_{i+1} = (1 + beta - eta lam) e_i - beta e_{i-1}``.

    With ``e_0 = 1`` and ``e_1 = 1 - eta lam`` (zero initial velocity) the
    solution is ``e_n = G_{n+1} - beta G_n`` (see :func:`_chebyshev_g`).
    ``h = (1 - e_n) / lam`` switches to its ``lam -> 0`` limit
    ``eta sum_{k=1}^n (1 - beta^k) / (1 - beta)`` once ``eta lam n / (1 - beta)`` is
    below 1e-8, where the difference would cancel.
    """
    x = eta * lam[None, :]
    n = n[:, None]
    a = 1 + beta - x
    s = _chebyshev_g(n + 1, a, beta) - beta * _chebyshev_g(n, a, beta)
    pos = lam > 0
    lam_safe = jnp.where(pos, lam, 1)
    if beta > 0:
        limit = eta * (n - beta * (1 - beta ** n) / (1 - beta)) / (1 - beta)
    else:
        limit = eta * n
    tiny = x * jnp.maximum(n, 1) / (1 - beta) < 1e-8
    h = jnp.where(pos & ~tiny, (1 - s) / lam_safe, limit)
    return s, h


def _mode_factors(optimizer: str, lam, t, eta: float, momentum: float):
    if optimizer == "flow":
        return _flow_factors(lam, t, eta)
    if optimizer == "gd":
        return _gd_factors(lam, t, eta)
    return _momentum_factors(lam, t, eta, momentum)
