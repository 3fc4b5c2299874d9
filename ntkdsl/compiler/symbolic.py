"""The proofs of the closed forms: Price's theorem, diagonals, special cases, integration.

The symbols are those of ``compiler/symbols.py`` (re-exported here):
``s11, s22 > 0`` (variances), ``s12`` real (the covariance), ``s > 0`` (a
variance on the diagonal) and ``x`` (the pre-activation, for ``phi``).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import sympy

from . import layers as L
from .symbols import PAIR_ARGS, s, s11, s12, s22, x

__all__ = ["PAIR_ARGS", "s", "s11", "s12", "s22", "x"]

# ---------------------------------------------------------------------------------------
# The symbolic checks: every nonlinearity's closed forms are proved here.
# ---------------------------------------------------------------------------------------


#: the checks, in the order they run
CHECKS = ("price", "diagonal", "special", "integration", "rewrite")

#: parametrisation of the valid domain used when plain simplification fails:
#: s11 = p^2, s22 = q^2, s12 = p q (1 - w^2) / (1 + w^2) with p, q, w > 0 covers every
#: covariance with |s12| < sqrt(s11 s22), and turns every sqrt(1 - c^2) into 2w / (1 + w^2).
_p, _qq, _w = sympy.symbols("p q w", positive=True)
_PARAM = {s11: _p**2, s22: _qq**2, s12: _p * _qq * (1 - _w**2) / (1 + _w**2)}


@dataclass(frozen=True)
class CheckResult:
    """One identity checked: what, for which layer, whether it held and how it was shown."""

    layer: str
    check: str
    name: str
    ok: bool
    how: str
    detail: str = ""

    def line(self) -> str:
        """A one-line rendering for reports."""
        mark = "ok  " if self.ok else "FAIL"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{mark} {self.layer}: [{self.check}] {self.name}: {self.how}{extra}"


@dataclass(frozen=True)
class Report:
    """The results of a set of checks."""

    results: tuple[CheckResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The checks that failed."""
        return tuple(r for r in self.results if not r.ok)

    def counts(self) -> dict[str, int]:
        """How many identities held, by how they were shown (symbolic, numeric, ...)."""
        out: dict[str, int] = {}
        for r in self.results:
            if r.ok:
                key = r.how.split(" (")[0]
                out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> str:
        """``N identities proved (a symbolic, b numeric ...), F failed``."""
        c = self.counts()
        parts = ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
        n_ok = sum(c.values())
        n_bad = len(self.failures)
        return f"{n_ok} of {len(self.results)} identities hold ({parts}); {n_bad} failed"

    def __add__(self, other: Report) -> Report:
        return Report(self.results + other.results)


# ---- proof procedures ---------------------------------------------------------------


def _valid_points(n: int, seed: int = 0) -> list[dict]:
    """``n`` random covariances with |s12| < sqrt(s11 s22), as mpmath numbers (50 digits)."""
    rng = random.Random(seed)
    pts = []
    with mpmath.workdps(60):
        for _ in range(n):
            a = mpmath.mpf(rng.uniform(0.05, 5.0))
            c = mpmath.mpf(rng.uniform(0.05, 5.0))
            rho = mpmath.mpf(rng.uniform(-0.98, 0.98))
            pts.append({s11: a, s22: c, s12: rho * mpmath.sqrt(a * c), s: a})
    return pts


def _numeric_zero(expr: sympy.Expr, n: int = 20, tol: float = 1e-30) -> tuple[bool, str]:
    syms = sorted(expr.free_symbols, key=lambda t: t.name)
    f = sympy.lambdify(syms, expr, "mpmath")
    worst = mpmath.mpf(0)
    with mpmath.workdps(50):
        for pt in _valid_points(n):
            v = f(*[pt[t] for t in syms])
            worst = max(worst, abs(mpmath.mpf(v) if not isinstance(v, mpmath.mpc) else abs(v)))
    ok = worst < tol
    return ok, f"{n} random points at 50 digits, max |residual| {mpmath.nstr(worst, 3)}"


def prove_zero(expr: sympy.Expr) -> tuple[bool, str, str]:
    """Show ``expr == 0`` on the valid domain (s11, s22 > 0, |s12| < sqrt(s11 s22)).

    Tries, in order: ``sympy.simplify``; ``simplify`` after the rational
    parametrisation of the domain (``_PARAM``); evaluation at 20 random valid
    points with mpmath at 50 digits (|residual| < 1e-30).

    Arguments:
        expr: a sympy expression in s11, s12, s22 and/or s.

    Returns:
        ``(ok, how, detail)``; ``how`` is "symbolic", "symbolic (parametrised domain)"
        or "numeric (50 digits)".
    """
    if expr == 0 or sympy.simplify(expr) == 0:
        return True, "symbolic", "sympy.simplify"
    if expr.free_symbols & {s11, s12, s22}:
        par = sympy.simplify(expr.subs(_PARAM))
        if par == 0:
            return True, "symbolic (parametrised domain)", "s12 = sqrt(s11 s22)(1-w^2)/(1+w^2)"
    ok, detail = _numeric_zero(expr)
    return ok, "numeric (50 digits)", detail


# ---- numerical integration with mpmath (check 4, Monte Carlo-free references) -------

_GL_NODES = 12
_HALF = 10  # Gaussian tails beyond 10 standard deviations are below 1e-22
#: fixed cuts (standard-normal units): short segments resolve the Gaussian bell
_CUTS = (-6.0, -3.5, -1.5, 0.0, 1.5, 3.5, 6.0)


@functools.cache
def _gl(n: int = _GL_NODES) -> tuple[tuple, tuple]:
    with mpmath.workdps(30):
        xs, ws = zip(*mpmath.calculus.quadrature.GaussLegendre(mpmath.mp).calc_nodes(
            _degree_for(n), mpmath.mp.prec))
    return xs, ws


def _degree_for(n: int) -> int:
    # mpmath's Gauss-Legendre "degree" k has 3 * 2^(k-1) nodes
    k = 1
    while 3 * 2 ** (k - 1) < n:
        k += 1
    return k


def _segments(a, b, cuts: Sequence) -> list[tuple]:
    pts = [a, *sorted({c for c in (*cuts, *_CUTS) if a < c < b}), b]
    return list(itertools.pairwise(pts))


def _integrate(f: Callable, a, b, cuts: Sequence = ()) -> mpmath.mpf:
    """Composite Gauss-Legendre on [a, b], split at ``cuts`` (the kinks of the integrand)."""
    xs, ws = _gl()
    total = mpmath.mpf(0)
    for lo, hi in _segments(a, b, cuts):
        h, m = (hi - lo) / 2, (hi + lo) / 2
        total += h * mpmath.fsum(w * f(m + h * xk) for xk, w in zip(xs, ws))
    return total


def expect_pair(f: Callable, g: Callable, a, b, c, kinks: Sequence = (), dps: int = 15):
    """``E[f(u) g(v)]``, ``(u, v) ~ N(0, [[a, b], [b, c]])``, by mpmath integration.

    The Gaussian is factored as ``u = sqrt(a) z1``, ``v = (b / sqrt(a)) z1 + r z2``; each
    axis is integrated over [-10, 10] standard deviations with a composite 48-node
    Gauss-Legendre rule split at every kink of ``f`` or ``g`` (so a ReLU is integrated
    piecewise-smoothly, which is what makes 1e-10 reachable).

    Arguments:
        f, g: mpmath functions of one variable.
        a, b, c: the covariance (a > 0, |b| < sqrt(a c)).
        kinks: points where f or g are not smooth.
        dps: working decimal digits.

    Returns:
        the expectation, an mpmath number.
    """
    with mpmath.workdps(dps):
        a, b, c = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)
        su = mpmath.sqrt(a)
        c1 = b / su
        c2 = mpmath.sqrt(c - c1 * c1)
        nrm = 1 / mpmath.sqrt(2 * mpmath.pi)

        def inner(z1):
            shift = c1 * z1
            cuts = [(k - shift) / c2 for k in kinks]
            return _integrate(lambda z2: mpmath.exp(-z2 * z2 / 2) * g(shift + c2 * z2),
                              -_HALF, _HALF, cuts) * nrm

        cuts = [k / su for k in kinks]
        return _integrate(lambda z1: mpmath.exp(-z1 * z1 / 2) * nrm * f(su * z1) * inner(z1),
                          -_HALF, _HALF, cuts)


def expect_one(f: Callable, var, kinks: Sequence = (), dps: int = 15):
    """``E[f(u)]``, ``u ~ N(0, var)``, by mpmath integration.

    One dimension is cheap, so this uses mpmath's adaptive tanh-sinh rule, split
    at the kinks and at 0: at large variance ``f(sd z)`` (an erf, say) turns
    into a near-step at 0 that a fixed Gauss-Legendre rule resolves only to ~1e-9.
    """
    with mpmath.workdps(dps + 5):
        sd = mpmath.sqrt(mpmath.mpf(var))
        nrm = 1 / mpmath.sqrt(2 * mpmath.pi)
        pts = sorted({mpmath.mpf(-_HALF), mpmath.mpf(0), mpmath.mpf(_HALF),
                      *(mpmath.mpf(k) / sd for k in kinks)})
        return mpmath.quad(lambda z: mpmath.exp(-z * z / 2) * nrm * f(sd * z), pts)


def _mp_fns(layer) -> tuple[Callable, Callable, tuple]:
    phi = sympy.lambdify(x, layer.phi_expr(x), "mpmath")
    dphi = sympy.lambdify(x, layer.dphi_expr(x), "mpmath")
    # every non-smooth built-in is non-smooth at 0 only (max(x, 0), |x|, sign, steps)
    rough = (sympy.Min, sympy.Max, sympy.Abs, sympy.sign, sympy.Heaviside, sympy.Piecewise)
    kinks = (0,) if layer.phi_expr(x).has(*rough) or layer.dphi_expr(x).has(*rough) else ()
    return phi, dphi, kinks


@functools.cache
def _jit_pair(layer) -> Callable:

    return jax.jit(layer.pair_fn())


def _closed(layer, which: str, a, b, c) -> mpmath.mpf:
    """T or Tdot at a point: the closed form at 30 digits, or the JAX quadrature (Tanh)."""
    if layer.closed_form:
        e = layer.T_expr() if which == "T" else layer.Tdot_expr()
        with mpmath.workdps(30):
            return mpmath.mpf(sympy.lambdify((s11, s12, s22), e, "mpmath")(
                mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)))

    with jax.enable_x64(True):
        t, td = _jit_pair(layer)(float(a), float(b), float(c))
    return mpmath.mpf(float(t if which == "T" else td))


# ---- the five checks ---------------------------------------------------------------


def check_price(layer) -> list[CheckResult]:
    """Check 1, Price's theorem: ``d T / d s12 == Tdot``."""
    name = layer.describe()
    if not layer.closed_form:
        return [_price_quadrature(layer)]
    if layer.jump:  # phi' = 0 a.e. while phi jumps: Price does not apply, Tdot must be 0
        ok = sympy.simplify(layer.Tdot_expr()) == 0 and sympy.simplify(layer.dphi_expr(x)) == 0
        return [CheckResult(name, "price", "phi jumps: phi' == 0 a.e. and Tdot == 0", ok,
                            "symbolic", "sympy.simplify (Price's theorem does not apply)")]
    ok, how, detail = prove_zero(sympy.diff(layer.T_expr(), s12) - layer.Tdot_expr())
    return [CheckResult(name, "price", "dT/ds12 - Tdot == 0", ok, how, detail)]


def _price_quadrature(layer) -> CheckResult:

    with jax.enable_x64(True):
        fn = _jit_pair(layer)
        dT = jax.jit(jax.grad(lambda a, b, c: fn(a, b, c)[0], argnums=1))
        pts = [(1.0, 0.3, 0.8), (2.0, -1.2, 1.5), (0.5, 0.49, 0.5)]
        worst = 0.0
        for a, b, c in pts:
            args = (jnp.float64(a), jnp.float64(b), jnp.float64(c))
            worst = max(worst, abs(float(dT(*args)) - float(fn(*args)[1])))
    ok = worst < 1e-7
    return CheckResult(layer.describe(), "price", "dT/ds12 - Tdot == 0", ok,
                       "quadrature (autodiff of the rule)", f"3 points, max |residual| {worst:.1e}")


def check_diagonal(layer, n_integration: int = 2) -> list[CheckResult]:
    """Check 2: ``T(s, s, s) == E[phi(u)^2]`` and ``Tdot(s, s, s) == E[phi'(u)^2]``.

    Symbolically against the layer's diagonal closed form (the one ``diag_fn``
    prints), and that closed form against 1-D mpmath integration at
    ``n_integration`` variances to 1e-10.
    """
    name = layer.describe()
    out = []
    diag_subs = {s11: s, s12: s, s22: s}
    if layer.closed_form:
        for what, full, diag in (("T(s,s,s) == E[phi(u)^2]", layer.T_expr(), layer.diag_expr()),
                                 ("Tdot(s,s,s) == E[phi'(u)^2]", layer.Tdot_expr(),
                                  layer.diag_dot_expr())):
            ok, how, detail = prove_zero(full.subs(diag_subs) - diag)
            out.append(CheckResult(name, "diagonal", what, ok, how, detail))
    phi, dphi, kinks = _mp_fns(layer)
    rng = random.Random(1)
    worst = 0.0
    for _ in range(n_integration):
        v = rng.uniform(0.1, 4.0)
        for f, expr, which in ((phi, layer.diag_expr(), 0), (dphi, layer.diag_dot_expr(), 1)):
            ref = expect_one(lambda u, f=f: f(u) ** 2, v, kinks)
            if layer.closed_form:
                with mpmath.workdps(30):
                    got = mpmath.mpf(sympy.lambdify(s, expr, "mpmath")(mpmath.mpf(v)))
            else:
                got = _closed(layer, "T" if which == 0 else "Tdot", v, v, v)
            worst = max(worst, float(abs(got - ref) / max(abs(ref), 1e-300)))
    tol = 1e-10 if layer.closed_form else 1e-7
    out.append(CheckResult(name, "diagonal", "diagonal closed form == 1-D integral",
                           worst < tol, "mpmath integration",
                           f"{n_integration} variances, max rel. error {worst:.1e} (tol {tol:g})"))
    return out


def check_integration(layer, n_points: int = 1, seed: int = 2) -> list[CheckResult]:
    """Check 4: T and Tdot against 2-D mpmath integration at random covariances.

    Tolerance 1e-10 relative for closed forms; 1e-7 for the quadrature of Tanh
    (its documented accuracy, ``compiler/quadrature.py``).
    """
    phi, dphi, kinks = _mp_fns(layer)
    rng = random.Random(seed)
    worst = 0.0
    for _ in range(n_points):
        a, c = rng.uniform(0.1, 4.0), rng.uniform(0.1, 4.0)
        b = rng.uniform(-0.95, 0.95) * (a * c) ** 0.5
        for which, f in (("T", phi), ("Tdot", dphi)):
            ref = expect_pair(f, f, a, b, c, kinks)
            got = _closed(layer, which, a, b, c)
            worst = max(worst, float(abs(got - ref) / max(abs(ref), 1e-12)))
    tol = 1e-10 if layer.closed_form else 1e-7
    return [CheckResult(layer.describe(), "integration", "T, Tdot == 2-D integral",
                        worst < tol, "mpmath integration",
                        f"{n_points} covariances, max rel. error {worst:.1e} (tol {tol:g})")]


def check_special(layer) -> list[CheckResult]:
    """Check 3: special cases agree, and independent inputs factorise.

    The layer relations (Relu == ABRelu(0, 1), LeakyRelu(a) == ABRelu(a, 1),
    Identity == ABRelu(1, 1), ABRelu(a, b) == ABRelu(b, a), Erf's a and c, Sin's a)
    are proved symbolically; for every layer, ``T(s11, 0, s22) == E[phi(u)] E[phi(v)]``
    and ``Tdot(s11, 0, s22) == E[phi'(u)] E[phi'(v)]`` against 1-D mpmath integrals.
    """
    name = layer.describe()
    out = []
    if layer.closed_form:
        for what, lhs, rhs in layer.special_cases():
            ok, how, detail = prove_zero(lhs - rhs)
            out.append(CheckResult(name, "special", what, ok, how, detail))
    phi, dphi, kinks = _mp_fns(layer)
    a, c = 1.3, 0.6
    worst = 0.0
    for which, f in (("T", phi), ("Tdot", dphi)):
        ref = expect_one(f, a, kinks) * expect_one(f, c, kinks)
        got = _closed(layer, which, a, 0.0, c)
        worst = max(worst, float(abs(got - ref)))
    tol = 1e-10 if layer.closed_form else 1e-7
    out.append(CheckResult(name, "special", "s12 = 0 factorises: T == E[phi]^2-type product",
                           worst < tol, "mpmath integration", f"max abs. error {worst:.1e}"))
    return out


def check_rewrites(layer, n_points: int = 20) -> list[CheckResult]:
    """Check 5: every rewrite used in place of a textbook form is proved, and the printed
    JAX functions compute the checked expressions (float64, 1e-12 relative)."""
    name = layer.describe()
    out = []
    for what, textbook, used in layer.rewrites():
        ok, how, detail = prove_zero(textbook - used)
        out.append(CheckResult(name, "rewrite", what, ok, how, detail))
    out.append(_printed_matches(layer, n_points) if layer.closed_form
               else _quadrature_consistent(layer))
    return out


def _quadrature_consistent(layer) -> CheckResult:
    """Without a closed form: ``t_fn`` and ``diag_fn`` agree with ``pair_fn``."""

    pts = _valid_points(5, seed=4)
    a = np.array([float(p[s11]) for p in pts])
    b = np.array([float(p[s12]) for p in pts])
    c = np.array([float(p[s22]) for p in pts])
    with jax.enable_x64(True):
        t, _ = _jit_pair(layer)(a, b, c)
        t1 = jax.jit(layer.t_fn())(a, b, c)
        td, _ = _jit_pair(layer)(a, a, a)
        dg = jax.jit(layer.diag_fn())(a)
    worst = float(max(np.max(np.abs(t1 - t)), np.max(np.abs(dg - td))))
    return CheckResult(layer.describe(), "rewrite", "t_fn, diag_fn == pair_fn", worst < 1e-12,
                       "numeric (float64)", f"5 points, max abs. error {worst:.1e}")


def _printed_matches(layer, n_points: int) -> CheckResult:

    pts = _valid_points(n_points, seed=3)
    a = np.array([float(p[s11]) for p in pts])
    b = np.array([float(p[s12]) for p in pts])
    c = np.array([float(p[s22]) for p in pts])
    with jax.enable_x64(True):
        t, td = layer.pair_fn()(a, b, c)
        t1 = layer.t_fn()(a, b, c)
        dg = layer.diag_fn()(a)
    worst = 0.0
    with mpmath.workdps(30):
        fT = sympy.lambdify((s11, s12, s22), layer.T_expr(), "mpmath")
        fD = sympy.lambdify((s11, s12, s22), layer.Tdot_expr(), "mpmath")
        fG = sympy.lambdify(s, layer.diag_expr(), "mpmath")
        for i, p in enumerate(pts):
            args = (p[s11], p[s12], p[s22])
            for got, ref in ((t[i], fT(*args)), (td[i], fD(*args)), (t1[i], fT(*args)),
                             (dg[i], fG(p[s11]))):
                ref = float(ref)
                worst = max(worst, abs(float(got) - ref) / max(abs(ref), 1e-300))
    return CheckResult(layer.describe(), "rewrite", "printed JAX == sympy expressions",
                       worst < 1e-12, "numeric (float64 vs 30 digits)",
                       f"{n_points} points, max rel. error {worst:.1e}")


def printer_rewrites() -> Report:
    """The printer's own algebraic rewrites (``compiler/printer.py``), proved for a, b >= 0."""
    a, b = sympy.symbols("a b", positive=True)
    c = sympy.Symbol("c", real=True)
    cases = [
        ("printer: sqrt(a) sqrt(b) = sqrt(a b)", sympy.sqrt(a) * sympy.sqrt(b) - sympy.sqrt(a * b)),
        ("printer: 1/sqrt(a) 1/sqrt(b) = 1/sqrt(a b)",
         1 / sympy.sqrt(a) / sympy.sqrt(b) - 1 / sympy.sqrt(a * b)),
        ("printer: a**(k/2) = a**((k-1)/2) sqrt(a)", a ** sympy.Rational(3, 2) - a * sympy.sqrt(a)),
        ("printer: a b - c^2 = (sqrt(a b) - c)(sqrt(a b) + c)",
         (sympy.sqrt(a * b) - c) * (sympy.sqrt(a * b) + c) - (a * b - c**2)),
    ]
    res = []
    for what, e in cases:
        ok = sympy.simplify(e) == 0
        res.append(CheckResult("printer", "rewrite", what, ok, "symbolic", "sympy.simplify"))
    return Report(tuple(res))


# ---- the entry point ---------------------------------------------------------------


def example_layers() -> list:
    """A few instances of every pointwise class in the registry (``layers.POINTWISE``).

    A new class with a no-argument constructor is covered automatically; one that
    needs arguments must be added to ``_EXAMPLES``.
    """

    examples = {
        L.LeakyRelu: [L.LeakyRelu(alpha=0.1), L.LeakyRelu(alpha=-0.3)],
        L.ABRelu: [L.ABRelu(a=-0.5, b=2.0), L.ABRelu(a=0.3, b=1.5)],
        L.Erf: [L.Erf(), L.Erf(a=1.5, b=0.7, c=0.3)],
        L.Sin: [L.Sin(), L.Sin(a=1.2, b=0.8, c=0.4)],
        L.Cos: [L.Cos(), L.Cos(a=1.2, b=0.8, c=0.4)],
        L.Exp: [L.Exp(), L.Exp(a=0.7, b=-0.6)],
        # the defaults Gaussian(b=-1) and Rbf(gamma=1) have features finer than the fixed
        # segments of expect_pair at variance 4: tests/test_nonlinearities.py checks them
        # against a refined reference
        L.Gaussian: [L.Gaussian(a=1.3, b=-0.4), L.Gaussian(b=-0.25)],
        L.Rbf: [L.Rbf(gamma=0.3), L.Rbf(gamma=0.1)],
        L.Monomial: [L.Monomial(degree=n) for n in (0, 1, 2, 5)],
        L.RectifiedMonomial: [L.RectifiedMonomial(degree=n) for n in (1, 0, 2)],
        L.Polynomial: [L.Polynomial(coef=(0.5, -1.0, 0.25, 0.3)), L.Polynomial(coef=(2,))],
        L.Hermite: [L.Hermite(degree=n) for n in (3, 0, 1)],
    }
    out = []
    for cls in L.POINTWISE:
        out.extend(examples.get(cls) or [cls()])
    return out


@functools.cache
def _check_layer_cached(layer, which: tuple[str, ...], n_integration: int) -> Report:
    res: list[CheckResult] = []
    if "price" in which:
        res += check_price(layer)
    if "diagonal" in which:
        res += check_diagonal(layer, n_integration=max(1, n_integration))
    if "special" in which:
        res += check_special(layer)
    if "integration" in which and n_integration > 0:
        res += check_integration(layer, n_points=n_integration)
    if "rewrite" in which:
        res += check_rewrites(layer)
    return Report(tuple(res))


def check_layer(layer, which: Iterable[str] = CHECKS, n_integration: int = 1) -> Report:
    """Run the symbolic checks on one pointwise layer (cached per layer value).

    Arguments:
        layer: a Pointwise layer instance.
        which: the checks to run, a subset of :data:`CHECKS`.
        n_integration: random covariances for the mpmath integrations (check 4 and the
            integral half of check 2); 0 skips check 4.

    Returns:
        a :class:`Report`.
    """
    which = tuple(c for c in CHECKS if c in set(which))
    return _check_layer_cached(layer, which, n_integration)


def check_layers(layers: Iterable, which: Iterable[str] = CHECKS,
                 n_integration: int = 1) -> Report:
    """Run the checks for every distinct pointwise layer in ``layers`` (plus the printer's
    own rewrites); the structured report is what ``ntkdsl explain --check`` prints.

    Arguments:
        layers: layer instances (non-pointwise ones are ignored).
        which: the checks to run.
        n_integration: see :func:`check_layer`.

    Returns:
        a :class:`Report`.
    """
    seen = []
    for layer in layers:
        if layer.combine is None and layer.kernel_map and layer not in seen:
            seen.append(layer)
    rep = printer_rewrites()
    for layer in seen:
        rep = rep + check_layer(layer, which, n_integration)
    return rep
