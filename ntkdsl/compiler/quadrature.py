"""Two-dimensional Gaussian quadrature for nonlinearities without a closed form.

One generic path: a layer with ``closed_form = False`` hands its printed
``x -> (phi(x), phi'(x))`` (``Pointwise.vals_fn``) to :func:`pair_quadrature` and
:func:`diag_quadrature`. The error table below was measured for tanh, the
hardest of the built-ins (poles closest to the real axis).

``T(s11, s12, s22) = E[f(u) f(v)]`` with ``u = sqrt(s11) z1`` and
``v = (s12 / sqrt(s11)) z1 + sqrt(s22 - s12^2 / s11) z2`` (a Cholesky factor of
the covariance; a zero ``s11`` gives ``u = 0``, ``v = sqrt(s22) z2``), ``z1, z2``
independent standard normals, each integrated by a rule ``E[g(z)] ~ sum_i p_i g(z_i)``.

The rule. Gauss-Hermite (the textbook choice, and the peer library's
``ElementwiseNumerical``) converges only like ``exp(-c d sqrt(n))`` for an
integrand analytic in a strip of half-width ``d``; tanh has poles at
``+-i pi/2``, so in the ``z`` variable ``d = pi / (2 sqrt(s))`` shrinks with the
variance. Measured against 1e-12 reference integrals (relative error of T / Tdot):

=========================  ===============  ===============  ===============
rule, nodes per axis        s = 1, rho=.99   s = 4..5         s = 10, rho=.99
=========================  ===============  ===============  ===============
Gauss-Hermite, 64          4e-9 / 1e-7      2e-5 / 3e-4      2e-3 / 5e-2
Gauss-Hermite, 96          1e-11 / 6e-10    9e-7 / 2e-5      4e-4 / 1e-2
trapezoid, 64, L = 6       1e-9 / 1e-9      6e-10 / 1e-9     5e-7 / 4e-5
trapezoid, 96, L = 6.5     6e-11 / 7e-11    3e-11 / 1e-10    8e-10 / 9e-8
=========================  ===============  ===============  ===============

So the default rule is the trapezoidal rule on the uniform grid
``z_k in [-L, L]`` with Gaussian weights normalised to sum to 1 (``RULE``):
for an integrand analytic in a strip it converges geometrically in the number
of nodes (error ~ ``exp(-pi^2 / (h sqrt(s)))``, ``h`` the grid step) - it is the
Gauss-type rule for this class of functions. ``NODES = 96``, ``HALF_WIDTH = 6.5``
keep T and Tdot within 1e-7 relative for variances up to ``MAX_ACCURATE_VARIANCE``
(10), which covers a Tanh after a Dense or Conv with ``W_std`` up to ~3 on
unit-scale inputs (after a Tanh the variance is at most ``W_std^2 + b_std^2``);
beyond it the error grows slowly (T 6e-7, Tdot 5e-5 at s = 25). Gauss-Hermite
is kept as ``rule="gauss-hermite"`` for comparison.

Every quadrature nonlinearity, measured with the default rule against mpmath 2-D
integrals (composite Gauss-Legendre split at many cuts, 20 digits) at variances
``(s11, s22)`` in (1, 1), (4, 2), (10, 10), (10, 1), (0.1, 10) and correlations
-0.9, 0.3, 0.99, 1 (maximum relative error; the worst case of each is at s = 10,
correlation 1):

=====================  ==========  ==========
layer                  T           Tdot
=====================  ==========  ==========
Tanh                   4e-9        7e-7
Softplus(beta=1)       2e-9        4e-11
Softplus(beta=2.5)     2e-9        1e-7
Sigmoid                4e-11       1e-10
=====================  ==========  ==========

so 96 nodes reach the 1e-6 target for all of them and no layer needs its own count.

Cost and memory: the double sum is a loop over the nodes of ``z1``
(``lax.fori_loop``) around a loop over chunks of 8 nodes of ``z2``, each chunk
unrolled so that XLA fuses it into one pass (unrolling all 96 costs seconds of
compile time); no ``(n, n, ...)`` tensor is materialised. For an odd ``f``
(tanh) on a symmetric grid the terms at ``(i, j)`` and ``(-i, -j)`` are equal, so
only half of the outer nodes are visited. Tanh's derivative ``1 - tanh^2``
reuses the same values, so Tdot costs no extra transcendental.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .printer import safe_rsqrt, safe_sqrt

#: the default rule, nodes per axis and grid half-width (standard-normal units)
RULE = "trapezoid"
NODES = 96
HALF_WIDTH = 6.5
#: the largest variance at which the default rule is documented accurate to 1e-7 relative
MAX_ACCURATE_VARIANCE = 10.0
#: inner nodes unrolled per loop step: enough to fuse, few enough to compile fast
_CHUNK = 8


@functools.cache
def nodes(
    n: int = NODES, rule: str = RULE, half_width: float = HALF_WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and probabilities of a rule for ``E[g(Z)]``, ``Z ~ N(0, 1)``.

    Arguments:
        n: the number of nodes.
        rule: ``"trapezoid"`` (uniform grid on [-half_width, half_width], Gaussian weights
            normalised to 1) or ``"gauss-hermite"``.
        half_width: the grid's half-width for the trapezoidal rule.

    Returns:
        ``(z, p)`` float64 arrays, symmetric about 0, with ``E[g(Z)] ~ sum(p * g(z))``.
    """
    if rule == "trapezoid":
        z = np.linspace(-half_width, half_width, n)
        p = np.exp(-z * z / 2)
        return z, p / p.sum()
    if rule == "gauss-hermite":
        x, w = np.polynomial.hermite.hermgauss(n)
        return np.sqrt(2.0) * x, w / np.sqrt(np.pi)
    raise ValueError(f"unknown quadrature rule {rule!r}")


def pair_quadrature(
    vals: Callable,
    *,
    n: int = NODES,
    rule: str = RULE,
    with_dot: bool = True,
    odd: bool = False,
) -> Callable:
    """``(s11, s12, s22) -> (T, Tdot)`` (or ``T`` alone) by the 2-D product rule.

    Arguments:
        vals: ``x -> (f(x), f'(x))`` elementwise, on jax arrays.
        n: nodes per axis.
        rule: see :func:`nodes`.
        with_dot: also compute ``Tdot`` (then a pair is returned) or not (``T`` alone).
        odd: ``f`` is odd (so ``f'`` is even): visit only half of the outer nodes.

    Returns:
        a jit-compatible function of broadcasting arrays, dtype-preserving.
    """
    if n % _CHUNK:
        raise ValueError(f"the number of nodes must be a multiple of {_CHUNK}, got {n}")
    z_np, p_np = nodes(n, rule)
    start = 0
    p_outer = p_np.copy()
    if odd:  # (i, j) and (n-1-i, n-1-j) give equal terms: keep i >= n/2, double i > mid
        start = n // 2
        p_outer[start + (n % 2):] *= 2.0

    def fn(s11, s12, s22):
        s11, s12, s22 = (jnp.asarray(a) for a in (s11, s12, s22))
        dt = jnp.result_type(s11, s12, s22)
        shape = jnp.broadcast_shapes(s11.shape, s12.shape, s22.shape)
        z = jnp.asarray(z_np, dt)
        p = jnp.asarray(p_outer, dt)
        su = safe_sqrt(s11)
        c1 = s12 * safe_rsqrt(s11)
        c2 = safe_sqrt(s22 - c1 * c1)
        zin = jnp.asarray(z_np.reshape(-1, _CHUNK), dt)
        pin = jnp.asarray(p_np.reshape(-1, _CHUNK), dt)

        def body(i, acc):
            fu, du = vals(su * z[i])
            shift = c1 * z[i]

            def chunk(k, inner):
                tf, td = inner
                for m in range(_CHUNK):  # unrolled: XLA fuses these into one pass
                    fv, dv = vals(shift + c2 * zin[k, m])
                    tf = tf + pin[k, m] * fv
                    if with_dot:
                        td = td + pin[k, m] * dv
                return tf, td

            zero_in = jnp.zeros(shape, dt)
            tf, td = jax.lax.fori_loop(0, n // _CHUNK, chunk, (zero_in, zero_in))
            t = acc[0] + p[i] * fu * tf
            return (t, acc[1] + p[i] * du * td) if with_dot else (t, acc[1])

        zero = jnp.zeros(shape, dt)
        t, tdot = jax.lax.fori_loop(start, n, body, (zero, zero))
        return (t, tdot) if with_dot else t

    return fn


def diag_quadrature(vals: Callable, *, n: int = NODES, rule: str = RULE) -> Callable:
    """``s -> E[f(u)^2]``, ``u ~ N(0, s)``, by the 1-D rule.

    Arguments:
        vals: ``x -> (f(x), f'(x))`` elementwise.
        n: the number of nodes.
        rule: see :func:`nodes`.

    Returns:
        a jit-compatible function of an array.
    """
    z_np, p_np = nodes(n, rule)

    def fn(s):
        # all nodes in one vectorised call (an unrolled loop traced vals n times, slow to
        # compile), in the input's dtype (numpy float64 nodes would promote float32)
        r = safe_sqrt(jnp.asarray(s))
        f, _ = vals(r[..., None] * jnp.asarray(z_np, r.dtype))
        return jnp.sum(jnp.asarray(p_np, r.dtype) * f * f, axis=-1)

    return fn
