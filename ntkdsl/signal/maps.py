"""The mean-field maps of one block and their fixed points (Poole et al. 2016,
Schoenholz et al. 2017).

For a block ``h' = W phi(h) + b`` with weight variance ``w2`` and bias
variance ``b2``:

* variance map ``V(q) = w2 E[phi(u)^2]_{u~N(0,q)} + b2`` (the layer's ``diag_fn``);
* covariance map ``w2 T(q1, k, q2) + b2`` (``t_fn``) and its slope in ``k``,
  ``w2 Tdot(q1, k, q2)`` (``pair_fn``; Price's theorem: dT/dk = Tdot);
* correlation map at the variance ``q``: ``C(c) = (w2 T(q, c q, q) + b2) / V(q)``.

Every function evaluates the layer's compiled closed forms in float64 and
returns numpy arrays or Python floats. The 1-D solves bracket a root on a
grid and refine it with Brent's method.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

#: variances the fixed-point search looks at (relative to the problem's scale)
_Q_GRID = np.logspace(-12, 12, 481)
#: correlations the correlation fixed-point search looks at
_C_GRID = np.linspace(-1.0, 1.0, 801)


@functools.cache
def _jitted(act, what: str):
    """The layer's compiled function under ``jax.jit`` (one trace per shape, not per call)."""
    import jax

    if what == "diag":
        return jax.jit(act.diag_fn())
    if what == "pair":
        return jax.jit(act.pair_fn())
    f = act.diag_fn()
    return jax.jit(jax.vmap(jax.grad(lambda v: f(v) * 1.0)))


def _bucket(n: int) -> int:
    """Evaluate in a few fixed lengths, so each compiles once (1, then powers of 2 >= 1024)."""
    return 1 if n <= 1 else max(1024, 1 << (n - 1).bit_length())


def _x64(fn, *args):
    import jax

    arrays = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in args))
    shape, n = arrays[0].shape, arrays[0].size
    m = _bucket(n)
    # pad with a harmless point (unit variances, zero covariance)
    flat = [np.concatenate([a.ravel(), np.full(m - n, 0.0 if i == 1 and len(args) == 3 else 1.0)])
            for i, a in enumerate(arrays)]
    with jax.enable_x64(True):
        out = fn(*flat)
        if isinstance(out, tuple):
            return tuple(np.asarray(o, np.float64)[:n].reshape(shape) for o in out)
        return np.asarray(out, np.float64)[:n].reshape(shape)


def diag(act, q) -> np.ndarray:
    """``E[phi(u)^2]``, ``u ~ N(0, q)``, elementwise in ``q`` (float64)."""
    return _x64(_jitted(act, "diag"), q)


def t_pair(act, q1, k, q2) -> tuple[np.ndarray, np.ndarray]:
    """``(T, Tdot)`` at ``(q1, k, q2)``, elementwise (float64)."""
    return _x64(_jitted(act, "pair"), q1, k, q2)


def diag_dot(act, q) -> np.ndarray:
    """``E[phi'(u)^2]``, ``u ~ N(0, q)`` (= ``Tdot(q, q, q)``)."""
    return t_pair(act, q, q, q)[1]


def diag_slope(act, q) -> np.ndarray:
    """``d/dq E[phi(u)^2]``, ``u ~ N(0, q)``: by automatic differentiation of ``diag_fn``.

    Falls back to a central difference where the derivative is not finite
    (a closed form evaluated exactly at a kink).
    """

    q = np.atleast_1d(np.asarray(q, np.float64))
    g = _x64(_jitted(act, "slope"), q)
    bad = ~np.isfinite(g)
    if bad.any():
        h = 1e-6 * q[bad]
        g[bad] = (diag(act, q[bad] + h) - diag(act, q[bad] - h)) / (2 * h)
    return g


def _brent(f, a: float, b: float) -> float:
    from scipy.optimize import brentq

    return float(brentq(f, a, b, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200))


@dataclass(frozen=True)
class VarianceFixedPoint:
    """Where the variance map takes a signal.

    Attributes:
        q_star: the fixed point reached from ``q0``: a positive float, ``0.0``
            (decays to zero) or ``inf`` (no finite fixed point).
        slope: ``V'(q*)`` (for ``0`` / ``inf``: the limiting ratio ``V(q)/q``).
        stable: ``|slope| < 1``.
        note: a plain-words sentence when the fixed point is not a finite positive
            number, else ``None``.
    """

    q_star: float
    slope: float
    stable: bool
    note: str | None


def variance_fixed_point(w2: float, b2: float, act, q0: float = 1.0) -> VarianceFixedPoint:
    """The fixed point of ``V(q) = w2 E[phi^2] + b2`` that iterating from ``q0`` reaches.

    ``V`` is increasing for every nonlinearity here, so the iteration moves
    monotonically towards the nearest root in the direction of ``V(q0) - q0``.

    Arguments:
        w2, b2: weight and bias variances.
        act: the pointwise layer.
        q0: the starting variance (the inputs' mean variance).

    Returns:
        A :class:`VarianceFixedPoint`.
    """
    scale = max(q0, b2, 1.0)
    grid = _Q_GRID * scale
    g = w2 * diag(act, grid) + b2 - grid
    if not np.all(np.isfinite(g)):
        raise ValueError(f"the variance map of {act.describe()} is not finite on its grid")

    def gf(q: float) -> float:
        return float(w2 * diag(act, q) + b2 - q)

    if np.all(np.abs(g) <= 1e-10 * grid):
        # V(q) = q everywhere: a scale-free net at its critical point (Relu, W^2 = 2, b = 0)
        return VarianceFixedPoint(float(q0), 1.0, False,
                                  "every variance is a fixed point: the net preserves the "
                                  "input's scale")
    g0 = gf(q0)
    if g0 == 0.0:
        root = float(q0)
    elif g0 > 0:
        above = np.nonzero((grid > q0) & (g <= 0))[0]
        if above.size == 0:
            ratio = float((w2 * diag(act, grid[-1]) + b2) / grid[-1])
            if ratio > 1 + 1e-9:
                return VarianceFixedPoint(math.inf, ratio, False,
                                          "no finite fixed point: the variance grows "
                                          f"geometrically (x{ratio:.4g} per layer)")
            return VarianceFixedPoint(math.inf, ratio, False,
                                      "no finite fixed point: the variance grows without "
                                      "bound, slower than geometrically")
        j = above[0]
        lo = max(q0, grid[j - 1]) if j > 0 else q0
        root = grid[j] if g[j] == 0 else _brent(gf, lo, grid[j])
    else:
        below = np.nonzero((grid < q0) & (g >= 0))[0]
        if below.size == 0:
            v0 = float(w2 * diag(act, 0.0) + b2)
            if v0 <= 0.0:
                ratio = float(w2 * diag_slope(act, grid[0])[0])
                return VarianceFixedPoint(0.0, ratio, ratio < 1,
                                          "no finite fixed point: the variance decays to 0 "
                                          f"geometrically (x{ratio:.4g} per layer)")
            root = _brent(gf, 0.0, grid[0])
        else:
            j = below[-1]
            hi = min(q0, grid[j + 1])
            root = grid[j] if g[j] == 0 else _brent(gf, grid[j], hi)
    slope = float(w2 * diag_slope(act, root)[0])
    return VarianceFixedPoint(float(root), slope, abs(slope) < 1, None)


def reference_variance(fp: VarianceFixedPoint, q0: float, b2: float) -> float:
    """The variance the correlation map is evaluated at.

    ``q*`` when finite and positive; for ``q* = 0`` or ``inf`` a variance far
    along the way there (``1e-10`` or ``1e10`` times the problem's scale),
    standing in for the limit.
    """
    if 0.0 < fp.q_star < math.inf:
        return fp.q_star
    scale = max(q0, b2, 1.0)
    return 1e-10 * scale if fp.q_star == 0.0 else 1e10 * scale


def correlation_map(w2: float, b2: float, act, q: float, c) -> np.ndarray:
    """``C(c) = (w2 T(q, c q, q) + b2) / V(q)``, elementwise in ``c``."""
    c = np.asarray(c, np.float64)
    t, _ = t_pair(act, q, c * q, q)
    v = w2 * float(diag(act, q)) + b2
    return (w2 * t + b2) / v


def correlation_slope(w2: float, b2: float, act, q: float, c) -> np.ndarray:
    """``C'(c) = w2 Tdot(q, c q, q) q / V(q)`` (Price's theorem)."""
    c = np.asarray(c, np.float64)
    _, td = t_pair(act, q, c * q, q)
    v = w2 * float(diag(act, q)) + b2
    return w2 * td * q / v


@dataclass(frozen=True)
class CorrelationFixedPoint:
    """The fixed point of the correlation map that correlations near 1 go to.

    Attributes:
        c_star: ``1.0`` in order, below 1 in chaos, ``None`` when the map is the
            identity (a linear net: every correlation is preserved).
        chi_c: the map's slope at ``c*``.
        chi_1n: the map's slope at ``c = 1``.
    """

    c_star: float | None
    chi_c: float
    chi_1n: float


def correlation_fixed_point(w2: float, b2: float, act, q: float,
                            tol: float = 1e-6) -> CorrelationFixedPoint:
    """The stable fixed point of :func:`correlation_map` reached from just below ``c = 1``.

    Arguments:
        w2, b2: weight and bias variances.
        act: the pointwise layer.
        q: the variance to evaluate the map at (:func:`reference_variance`).
        tol: ``c = 1`` counts as stable while its slope is at most ``1 + tol``.

    Returns:
        A :class:`CorrelationFixedPoint`.
    """
    g = correlation_map(w2, b2, act, q, _C_GRID) - _C_GRID
    chi_1n = float(correlation_slope(w2, b2, act, q, 1.0))
    if np.max(np.abs(g)) < 1e-9:
        return CorrelationFixedPoint(None, 1.0, chi_1n)
    if chi_1n <= 1 + tol:
        return CorrelationFixedPoint(1.0, chi_1n, chi_1n)
    # chaos: C(c) < c just below 1; go down to the first c with C(c) >= c
    below = np.nonzero(g[:-1] >= 0)[0]
    if below.size == 0:
        return CorrelationFixedPoint(-1.0, float(correlation_slope(w2, b2, act, q, -1.0)),
                                     chi_1n)
    j = below[-1]
    if g[j] == 0:
        c = float(_C_GRID[j])
    else:
        c = _brent(lambda v: float(correlation_map(w2, b2, act, q, v) - v),
                   float(_C_GRID[j]), float(_C_GRID[j + 1]))
    return CorrelationFixedPoint(c, float(correlation_slope(w2, b2, act, q, c)), chi_1n)


def depth_scale(slope: float) -> float:
    """``-1 / log(slope)``: the depth over which a deviation shrinks by ``e``.

    ``inf`` for ``slope >= 1`` (no geometric convergence), ``0`` for ``slope <= 0``.
    """
    if not math.isfinite(slope) or slope >= 1.0:
        return math.inf
    if slope <= 0.0:
        return 0.0
    return -1.0 / math.log(slope)


# ---------------------------------------------------------------------------------------------
# the critical line chi_1 = 1 over (W_std^2, b_std^2)


def critical_curve(act, q=None) -> tuple[np.ndarray, np.ndarray]:
    """The critical line as a curve ``(W^2, b^2)`` parametrised by the fixed point ``q*``.

    On the line ``chi_1 = w2 E[phi'^2](q*) = 1`` and ``q* = w2 E[phi^2](q*) + b2``,
    so ``w2 = 1 / E[phi'^2](q)`` and ``b2 = q - w2 E[phi^2](q)``: no nested solve.

    Arguments:
        act: the pointwise layer.
        q: the fixed points to trace it at (default: a log grid over 1e-6..1e4).

    Returns:
        ``(w2, b2)`` arrays; points with ``b2 < 0`` (no such net) are dropped.
    """
    q = np.logspace(-6, 4, 400) if q is None else np.asarray(q, np.float64)
    dd = diag_dot(act, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        w2 = 1.0 / dd
        b2 = q - w2 * diag(act, q)
    keep = np.isfinite(w2) & np.isfinite(b2) & (b2 >= -1e-12 * q)
    return w2[keep], np.maximum(b2[keep], 0.0)


def critical_w2(act, b2: float) -> float | None:
    """The weight variance on the critical line at bias variance ``b2``, or ``None``.

    Solves ``q - E[phi^2](q) / E[phi'^2](q) = b2`` for ``q`` (bracketed on a
    log grid, then Brent), and returns ``1 / E[phi'^2](q)``.

    Arguments:
        act: the pointwise layer.
        b2: the bias variance.

    Returns:
        The critical ``W_std^2``; for a scale-free nonlinearity (Relu) the
        constant ``1 / E[phi'^2]`` when ``b2 == 0`` (``None`` for ``b2 > 0``:
        no finite fixed point there).
    """
    grid = np.logspace(-10, 8, 721)
    dd = diag_dot(act, grid)
    if np.all(np.abs(dd - dd[0]) <= 1e-12 * abs(dd[0])):
        return float(1.0 / dd[0]) if b2 == 0 else None

    def f(q: float) -> float:
        return float(q - diag(act, q) / diag_dot(act, q) - b2)

    with np.errstate(divide="ignore", invalid="ignore"):
        vals = grid - diag(act, grid) / dd - b2
    if b2 == 0:
        # the line starts at q* -> 0: w2 = 1 / phi'(0)^2
        return float(1.0 / diag_dot(act, 0.0))
    idx = np.nonzero(np.sign(vals[:-1]) != np.sign(vals[1:]))[0]
    if idx.size == 0:
        return None
    j = idx[0]
    q = _brent(f, float(grid[j]), float(grid[j + 1]))
    return float(1.0 / diag_dot(act, q))


@dataclass(frozen=True)
class CriticalLine:
    """The critical line in closed form (sympy), where sympy finds it.

    Attributes:
        equation: a sympy ``Eq`` in the symbols ``W_std^2`` and ``b_std^2``.
        text: ``str`` of the equation.
        latex: its LaTeX.
    """

    equation: object
    text: str
    latex: str


def critical_line(act) -> CriticalLine | None:
    """Derive the critical line of ``act`` from its closed forms, checked against numerics.

    Solves ``w2 E[phi'^2](s) = 1`` for the fixed point ``s`` and substitutes it in
    ``b2 = s - w2 E[phi^2](s)``. Each sympy solution is evaluated at a point of
    :func:`critical_curve` and kept only if it agrees to 1e-8.

    Arguments:
        act: the pointwise layer.

    Returns:
        The :class:`CriticalLine`, or ``None`` (no closed form, or sympy finds none).
    """
    if not getattr(act, "closed_form", True):
        return None
    import sympy

    from ..compiler.symbols import s

    w2 = sympy.Symbol("W_std^2", positive=True)
    b2 = sympy.Symbol("b_std^2", nonnegative=True)
    try:
        d, dd = act.diag_expr(), act.diag_dot_expr()
    except NotImplementedError:
        return None
    if not dd.has(s):
        if dd == 0:
            return None
        rest = sympy.simplify(s - d / dd)
        eq = sympy.Eq(w2, sympy.nsimplify(1 / dd))
        if rest != 0:
            return None  # the line would depend on q*: not a straight line in closed form
        text = f"{eq.lhs} = {eq.rhs} (at b_std^2 = 0; the only finite fixed point on it)"
        return CriticalLine(eq, text, sympy.latex(eq) + r" \quad (b_\mathrm{std}^2 = 0)")
    try:
        sols = sympy.solve(sympy.Eq(w2 * dd, 1), s)
    except (NotImplementedError, ValueError, TypeError):
        return None
    qs = np.logspace(-2, 1, 7)
    w_num, b_num = critical_curve(act, qs)
    if w_num.size == 0:
        return None
    for sol in sols:
        expr = sol - w2 * d.subs(s, sol)
        ok = True
        for wv, bv in zip(w_num, b_num):
            try:
                val = complex(expr.subs(w2, float(wv)).evalf())
            except (TypeError, ValueError):
                ok = False
                break
            if abs(val.imag) > 1e-9 or abs(val.real - bv) > 1e-8 * max(1.0, abs(bv)):
                ok = False
                break
        if ok:
            eq = sympy.Eq(b2, expr)
            return CriticalLine(eq, f"{eq.lhs} = {eq.rhs}", sympy.latex(eq))
    return None
