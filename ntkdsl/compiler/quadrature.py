"""Gauss-Hermite quadrature for nonlinearities without a closed form (Tanh).

``T(s11, s12, s22) = E[f(u) f(v)]`` with ``u = sqrt(s11) z1`` and
``v = (s12 / sqrt(s11)) z1 + sqrt(s22 - s12^2 / s11) z2`` (a Cholesky factor of
the covariance; a zero ``s11`` gives ``u = 0``, ``v = sqrt(s22) z2``), and
``z1, z2`` independent standard normals, each integrated by the rule
``E[g(z)] ~ sum_i p_i g(z_i)`` with ``z_i = sqrt(2) x_i``, ``p_i = w_i / sqrt(pi)`` from
the physicists' Gauss-Hermite nodes ``x_i, w_i`` of degree ``DEGREE``.

The double sum is a loop over the nodes of ``z1`` (``lax.fori_loop``) around an
unrolled sum over the nodes of ``z2``, so memory stays that of one kernel
entry per output entry (no ``(deg, deg, n1, n2)`` tensor), and XLA fuses the
unrolled sum into one pass. Tanh's derivative ``1 - tanh^2`` reuses the same
``tanh`` values, so ``Tdot`` costs no extra transcendental.

Degree: Tanh is analytic in a strip, so the rule converges geometrically, the
more slowly the larger the variance (the integrand ``tanh(sqrt(2 s) x)`` tends
to a step). ``DEGREE = 64`` keeps T and Tdot within 1e-6 relative (measured
against 30-digit mpmath integrals in ``tests/test_closed_forms.py``) for
variances up to ``MAX_ACCURATE_VARIANCE``, which covers a Tanh after a Dense or
Conv with ``W_std`` up to ~3 on unit-scale inputs (the post-Tanh variance is at
most ``W_std^2 + b_std^2``). Larger pre-activation variances lose accuracy
slowly (a few 1e-6 at 25).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .printer import safe_rsqrt, safe_sqrt

#: the number of nodes per dimension (deg^2 tanh evaluations per kernel entry)
DEGREE = 64
#: the largest variance at which the rule is documented to be accurate to 1e-6 relative
MAX_ACCURATE_VARIANCE = 10.0


@functools.cache
def nodes(deg: int = DEGREE) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal nodes and probabilities of the Gauss-Hermite rule of degree ``deg``.

    Arguments:
        deg: the number of nodes.

    Returns:
        ``(z, p)`` float64 arrays with ``E[g(Z)] ~ sum(p * g(z))`` for ``Z ~ N(0, 1)``.
    """
    x, w = np.polynomial.hermite.hermgauss(deg)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def _tanh_vals(x):
    t = jnp.tanh(x)
    return t, 1.0 - t * t


def pair_quadrature(
    vals: Callable, deg: int = DEGREE, with_dot: bool = True
) -> Callable:
    """``(s11, s12, s22) -> (T, Tdot)`` (or ``T`` alone) by the 2-D rule.

    Arguments:
        vals: ``x -> (f(x), f'(x))`` elementwise.
        deg: the number of nodes per dimension.
        with_dot: also compute ``Tdot`` (returned as a pair) or not (``T`` alone).

    Returns:
        a jit-compatible function of broadcasting arrays.
    """
    z_np, p_np = nodes(deg)

    def fn(s11, s12, s22):
        s11, s12, s22 = (jnp.asarray(a) for a in (s11, s12, s22))
        dt = jnp.result_type(s11, s12, s22)
        shape = jnp.broadcast_shapes(s11.shape, s12.shape, s22.shape)
        z = jnp.asarray(z_np, dt)
        p = jnp.asarray(p_np, dt)
        su = safe_sqrt(s11)
        c1 = s12 * safe_rsqrt(s11)
        c2 = safe_sqrt(s22 - c1 * c1)
        inner_z = [c2 * z_np[j] for j in range(deg)]

        def body(i, acc):
            fu, du = vals(su * z[i])
            shift = c1 * z[i]
            tf = td = 0.0
            for j in range(deg):
                fv, dv = vals(shift + inner_z[j])
                tf = tf + p_np[j] * fv
                if with_dot:
                    td = td + p_np[j] * dv
            if with_dot:
                return acc[0] + p[i] * fu * tf, acc[1] + p[i] * du * td
            return acc[0] + p[i] * fu * tf, acc[1]

        zero = jnp.zeros(shape, dt)
        t, tdot = jax.lax.fori_loop(0, deg, body, (zero, zero))
        return (t, tdot) if with_dot else t

    return fn


def diag_quadrature(vals: Callable, deg: int = DEGREE) -> Callable:
    """``s -> E[f(u)^2]``, ``u ~ N(0, s)``, by the 1-D rule.

    Arguments:
        vals: ``x -> (f(x), f'(x))`` elementwise.
        deg: the number of nodes.

    Returns:
        a jit-compatible function of an array.
    """
    z_np, p_np = nodes(deg)

    def fn(s):
        r = safe_sqrt(s)
        out = jnp.zeros_like(r)
        for j in range(deg):
            f, _ = vals(r * z_np[j])
            out = out + p_np[j] * f * f
        return out

    return fn


@functools.cache
def tanh_pair_fn(deg: int = DEGREE) -> Callable:
    """Tanh's ``(s11, s12, s22) -> (T, Tdot)``."""
    return pair_quadrature(_tanh_vals, deg, with_dot=True)


@functools.cache
def tanh_t_fn(deg: int = DEGREE) -> Callable:
    """Tanh's ``(s11, s12, s22) -> T``."""
    return pair_quadrature(_tanh_vals, deg, with_dot=False)


@functools.cache
def tanh_diag_fn(deg: int = DEGREE) -> Callable:
    """Tanh's ``s -> T(s, s, s)``."""
    return diag_quadrature(_tanh_vals, deg)
