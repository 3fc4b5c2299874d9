"""Print sympy closed forms into JAX functions with guarded (safe) primitives.

The closed forms of the pointwise layers (``layers/pointwise.py``) are sympy
expressions in ``s11, s12, s22``; this module turns them into Python source
that calls ``jax.numpy`` and runs under ``jax.jit``, so that the expression the
symbolic checks prove is the one that runs ("Symbolic rules are the
implementation", DESIGN.md).

The printer is deliberately small and explicit rather than ``sympy.lambdify``:
it controls every primitive, so that each singular one is replaced by a safe
version whose value *and* gradient stay finite at the edge of the domain:

* ``sqrt(x)``   -> :func:`safe_sqrt`  : ``sqrt(max(x, 0))``, gradient 0 where ``x <= eps``;
* ``x**(-1/2)`` -> :func:`safe_rsqrt` : ``1/sqrt(x)`` for ``x > 0``, else 0 (so a correlation
  ``s12 / sqrt(s11 s22)`` of a zero-variance input is 0, as in the peer library);
* ``atan2(y, x)`` -> :func:`safe_atan2` : ``pi/2`` at ``(0, 0)`` (correlation 0); it and
  ``atan`` (:func:`fast_atan`) are computed from arithmetic (a Cephes rational
  approximation, ~1 ulp), because XLA's float64 atan2 on CPU is a scalar call per entry;
* ``acos/asin`` -> :func:`safe_acos` / :func:`safe_asin` : argument clipped to [-1, 1],
  gradient 0 where ``|x| >= 1`` (the singular parts cancel analytically in every
  closed form; dropping both keeps autodiff from computing ``inf - inf``).

Three rewrites are made while printing, all proved in ``symbolic.printer_rewrites``:
``sqrt(a) * sqrt(b) -> sqrt(a * b)`` and ``1/sqrt(a) * 1/sqrt(b) -> rsqrt(a * b)`` for
``a, b >= 0`` (every base under a root here is a variance or a product of them), which
halves the number of roots; and ``sqrt(a b - c^2) -> sqrt((sqrt(a b) - c)(sqrt(a b) + c))``,
exactly 0 at correlation 1 (see :func:`_as_det`). Common subexpressions are shared (``sympy.cse``).
Numbers are printed as Python float literals, which are weakly typed in JAX, so
float32 inputs stay float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from .._lazy import lazy

# the safe primitives and NAMESPACE below need no sympy: running an already printed
# source (compiler/printed.py) must not import it
sympy = lazy("sympy")


def _eps(x: jax.Array) -> jax.Array:
    """The threshold below which a root's gradient is set to 0 (finite in f32 and f64)."""
    return jnp.sqrt(jnp.finfo(jnp.result_type(x)).tiny)


@jax.custom_jvp
def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 0))`` with gradient 0 where ``x <= eps`` instead of inf.

    Arguments:
        x: array.

    Returns:
        the root, elementwise.
    """
    return jnp.sqrt(jnp.maximum(x, 0.0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = safe_sqrt(x)
    ok = x > _eps(x)
    return y, jnp.where(ok, dx / (2.0 * jnp.where(ok, y, 1.0)), 0.0)


@jax.custom_jvp
def safe_rsqrt(x: jax.Array) -> jax.Array:
    """``1 / sqrt(x)`` for ``x > 0`` and 0 elsewhere (a zero variance has correlation 0).

    Arguments:
        x: array.

    Returns:
        the reciprocal root, elementwise.
    """
    pos = x > 0
    return jnp.where(pos, jax.lax.rsqrt(jnp.where(pos, x, 1.0)), 0.0)


@safe_rsqrt.defjvp
def _safe_rsqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    r = safe_rsqrt(x)
    ok = x > _eps(x)
    return r, jnp.where(ok, -0.5 * dx * r * r * r, 0.0)


def _clip_unit(x: jax.Array) -> jax.Array:
    return jnp.clip(x, -1.0, 1.0)


@jax.custom_jvp
def safe_acos(x: jax.Array) -> jax.Array:
    """``arccos`` of ``x`` clipped into [-1, 1]; gradient 0 where ``|x| >= 1``.

    Arguments:
        x: array (a correlation).

    Returns:
        the angle in [0, pi], elementwise.
    """
    return jnp.arccos(_clip_unit(x))


@safe_acos.defjvp
def _safe_acos_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    d = 1.0 - x * x
    ok = d > _eps(x)
    return safe_acos(x), jnp.where(ok, -dx * jax.lax.rsqrt(jnp.where(ok, d, 1.0)), 0.0)


@jax.custom_jvp
def safe_asin(x: jax.Array) -> jax.Array:
    """``arcsin`` of ``x`` clipped into [-1, 1]; gradient 0 where ``|x| >= 1``.

    Arguments:
        x: array.

    Returns:
        the angle in [-pi/2, pi/2], elementwise.
    """
    return jnp.arcsin(_clip_unit(x))


@safe_asin.defjvp
def _safe_asin_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    d = 1.0 - x * x
    ok = d > _eps(x)
    return safe_asin(x), jnp.where(ok, dx * jax.lax.rsqrt(jnp.where(ok, d, 1.0)), 0.0)


# atan from arithmetic alone (Cephes' atan.c, S. L. Moshier): XLA's CPU atan2 in float64
# is a scalar libm call per entry (~50 ns), this is a vectorised loop of a few divisions
# and FMAs. Coefficients: Cephes' rational minimax approximation of
# atan(z) = z + z^3 P(z^2) / Q(z^2) on |z| <= 0.66 (relative error 1.8e-16 in float64).
_ATAN_P = (-8.750608600031904122785e-01, -1.615753718733365076637e01,
           -7.500855792314704667340e01, -1.228866684490136173410e02,
           -6.485021904942025371773e01)
_ATAN_Q = (2.485846490142306297962e01, 1.650270098316988542046e02,
           4.328810604912902668951e02, 4.853903996359136964868e02,
           1.945506571482613964425e02)
_PIO2 = 1.5707963267948966  # fl(pi/2)
_PIO4 = 0.7853981633974483  # fl(pi/4)
_MOREBITS = 6.123233995736766e-17  # pi/2 - fl(pi/2)


def _atan_unit(t: jax.Array) -> jax.Array:
    """``atan(t)`` for ``0 <= t <= 1`` (Cephes: above 0.66, ``pi/4 + atan((t-1)/(t+1))``)."""
    big = t > 0.66
    z = jnp.where(big, (t - 1.0) / (t + 1.0), t)
    z2 = z * z
    p = _ATAN_P[0]
    for c in _ATAN_P[1:]:
        p = p * z2 + c
    q = z2 + _ATAN_Q[0]
    for c in _ATAN_Q[1:]:
        q = q * z2 + c
    r = z + z * (z2 * p / q)
    return jnp.where(big, _PIO4 + (r + 0.5 * _MOREBITS), r)


def fast_atan2(y: jax.Array, x: jax.Array) -> jax.Array:
    """``atan2(y, x)`` from arithmetic only (vectorisable), within ~1 ulp.

    The ratio ``min(|x|, |y|) / max(|x|, |y|)`` in [0, 1] goes through
    :func:`_atan_unit`, then is reflected by octant (``pi/2 - a``, ``pi - a``, sign of y)
    with the low bits of pi added back. ``(0, 0)`` gives 0 (``safe_atan2`` replaces it).
    Constants are Python floats, so float32 inputs stay float32.

    Arguments:
        y, x: arrays.

    Returns:
        the angle in [-pi, pi], elementwise.
    """
    ax, ay = jnp.abs(x), jnp.abs(y)
    swap = ay > ax
    num = jnp.minimum(ax, ay)
    den = jnp.maximum(ax, ay)
    a = _atan_unit(num / jnp.where(den == 0, 1.0, den))
    a = jnp.where(swap, (_PIO2 - a) + _MOREBITS, a)
    a = jnp.where(x < 0, (2.0 * _PIO2 - a) + 2.0 * _MOREBITS, a)
    return jnp.where(jnp.signbit(y), -a, a)


@jax.custom_jvp
def fast_atan(x: jax.Array) -> jax.Array:
    """``atan(x)`` from arithmetic only (:func:`fast_atan2` of ``(x, 1)``).

    Arguments:
        x: array.

    Returns:
        the angle in (-pi/2, pi/2), elementwise.
    """
    return fast_atan2(x, jnp.ones_like(x))


@fast_atan.defjvp
def _fast_atan_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return fast_atan(x), dx / (1.0 + x * x)


@jax.custom_jvp
def safe_atan2(y: jax.Array, x: jax.Array) -> jax.Array:
    """``atan2(y, x)``, with ``pi/2`` at ``y = x = 0`` (an angle of correlation 0, as for a
    zero-variance input) and a gradient that is 0 there instead of NaN. Computed by
    :func:`fast_atan2` (vectorised arithmetic, ~1 ulp; tests/test_closed_forms_atan.py).

    Arguments:
        y, x: arrays.

    Returns:
        the angle, elementwise.
    """
    zero = (x == 0) & (y == 0)
    return jnp.where(zero, _PIO2, fast_atan2(y, x))


@safe_atan2.defjvp
def _safe_atan2_jvp(primals, tangents):
    (y, x), (dy, dx) = primals, tangents
    r2 = x * x + y * y
    ok = r2 > _eps(r2)
    inv = jnp.where(ok, 1.0 / jnp.where(ok, r2, 1.0), 0.0)
    return safe_atan2(y, x), (dy * x - dx * y) * inv


def pw_max(a: jax.Array, b: jax.Array) -> jax.Array:
    """``max(a, b)``; at a tie the derivative follows ``b`` (so ``max(x, 0)`` has slope 0
    at 0, as ``jnp.where(x > 0, x, 0)``)."""
    return jnp.where(a > b, a, b)


def pw_min(a: jax.Array, b: jax.Array) -> jax.Array:
    """``min(a, b)``; at a tie the derivative follows ``a`` (so ``a min(x, 0) + b max(x, 0)``
    has slope ``a`` at 0)."""
    return jnp.where(a > b, b, a)


#: the names the printed source may use, and what they are
NAMESPACE: dict[str, object] = {
    "jnp": jnp,
    "_max": pw_max,
    "_min": pw_min,
    "_abs": jnp.abs,
    "_sign": jnp.sign,
    "_softplus": jax.nn.softplus,
    "_where": jnp.where,
    "_sqrt": safe_sqrt,
    "_rsqrt": safe_rsqrt,
    "_acos": safe_acos,
    "_asin": safe_asin,
    "_atan": fast_atan,
    "_atan2": safe_atan2,
    "_exp": jnp.exp,
    "_log": jnp.log,
    "_sin": jnp.sin,
    "_cos": jnp.cos,
    "_erf": jsp.erf,
    "_tanh": jnp.tanh,
}

_FUNCS: dict = {}
_RELATIONS: dict = {}
_HALF = None


def _sympy_tables() -> None:
    """Fill the sympy -> source tables (on first print: importing sympy is not free)."""
    global _HALF
    if _HALF is None:
        _FUNCS.update({
            sympy.acos: "_acos", sympy.asin: "_asin", sympy.atan: "_atan",
            sympy.atan2: "_atan2", sympy.exp: "_exp", sympy.log: "_log", sympy.sin: "_sin",
            sympy.cos: "_cos", sympy.erf: "_erf", sympy.tanh: "_tanh", sympy.Abs: "_abs",
            sympy.sign: "_sign"})
        _RELATIONS.update({sympy.StrictGreaterThan: ">", sympy.StrictLessThan: "<",
                           sympy.GreaterThan: ">=", sympy.LessThan: "<="})
        _HALF = sympy.Rational(1, 2)


def _literal(e: sympy.Expr) -> str:
    v = float(e)
    return repr(v) if v >= 0 else f"({v!r})"


def _as_det(e: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``(P, c)`` if ``e`` is ``P - c**2`` with ``P`` a nonnegative product, else None.

    Such a difference under a root (``s11 s22 - s12^2``: the determinant of a
    covariance) is printed as ``(sqrt(P) - c)(sqrt(P) + c)``: equal for ``P >= 0``
    (proved in ``symbolic.printer_rewrites``), and exactly 0 at correlation 1. For
    ``s11 = s22 = s12 = s``, ``sqrt(fl(s * s)) == s`` in binary floating point, so
    ``sqrt(P) - c`` is exactly 0, while ``fl(s * s) - fl(s^2)`` is 0 or the rounding
    error of ``s^2`` depending on whether XLA contracts it into an FMA (which the
    root would amplify to ~1e-8 of the kernel, differently in different programs).
    """
    if not e.is_Add or len(e.args) != 2:
        return None
    for prod, sq in (e.args, e.args[::-1]):
        coeff, rest = sq.as_coeff_Mul()
        if coeff == -1 and rest.is_Pow and rest.exp == 2 and prod.is_Mul \
                and prod.is_nonnegative:
            return prod, rest.base
    return None


class _Printer:
    """Sympy expression -> Python/JAX source text (see the module docstring)."""

    def __init__(self, names: dict[sympy.Symbol, str]):
        self.names = names

    def __call__(self, e: sympy.Expr) -> str:
        return self.p(e)

    def p(self, e: sympy.Expr) -> str:
        if e in self.names:
            return self.names[e]
        if e.is_Symbol:
            return e.name
        if e.is_number:  # constants (pi, 1/(2*pi), cos(2/5), ...) fold to one literal
            return _literal(e)
        if e.is_Add:
            terms = [self.p(a) for a in e.args]
            out = terms[0]
            for t in terms[1:]:
                out += f" - {t[2:-1]}" if t.startswith("-(") and t.endswith(")") else f" + {t}"
            return f"({out})"
        if e.is_Mul:
            return self.mul(e)
        if e.is_Pow:
            return self.pow(e.base, e.exp)
        if e.func in (sympy.Max, sympy.Min):  # n-ary: fold left
            name = "_max" if e.func is sympy.Max else "_min"
            args = [self.p(a) for a in e.args]
            out = args[0]
            for a in args[1:]:
                out = f"{name}({out}, {a})"
            return out
        if e.func is sympy.Piecewise:
            *branches, (last, cond) = e.args
            out = self.p(last)
            for val, cond in reversed(branches):
                out = f"_where({self.p(cond)}, {self.p(val)}, {out})"
            return out
        if e.func in _RELATIONS:
            return f"({self.p(e.lhs)} {_RELATIONS[e.func]} {self.p(e.rhs)})"
        if e.func is sympy.log and e.args[0].is_Add and len(e.args[0].args) == 2:
            one, rest = sorted(e.args[0].args, key=lambda a: a != 1)
            if one == 1 and rest.func is sympy.exp:  # log(1 + exp(u)) without overflow
                return f"_softplus({self.p(rest.args[0])})"
        f = _FUNCS.get(e.func)
        if f is None:
            raise NotImplementedError(f"no safe JAX form for {e.func} (in {e})")
        return f"{f}({', '.join(self.p(a) for a in e.args)})"

    def mul(self, e: sympy.Mul) -> str:
        coeff, factors = e.as_coeff_mul()
        num: list[str] = []
        den: list[str] = []
        roots: list[sympy.Expr] = []  # bases under sqrt, merged into one root
        rroots: list[sympy.Expr] = []  # bases under 1/sqrt, merged into one rsqrt
        for f in factors:
            if f.is_Pow and f.exp == _HALF:
                roots.append(f.base)
            elif f.is_Pow and f.exp == -_HALF:
                rroots.append(f.base)
            elif f.is_Pow and f.exp.is_Number and f.exp < 0:
                den.append(self.pow(f.base, -f.exp))
            else:
                num.append(self.p(f))
        if roots:
            num.append(f"_sqrt({self.p(sympy.Mul(*roots, evaluate=False))})")
        if rroots:
            num.append(f"_rsqrt({self.p(sympy.Mul(*rroots, evaluate=False))})")
        sign = ""
        if coeff < 0:
            sign, coeff = "-", -coeff
        if coeff != 1 or not num:
            num.insert(0, _literal(coeff))
        out = " * ".join(num)
        if den:
            out += " / " + (den[0] if len(den) == 1 else f"({' * '.join(den)})")
        return f"{sign}({out})" if sign else out

    def pow(self, base: sympy.Expr, exp: sympy.Expr) -> str:
        if exp == _HALF:
            det = _as_det(base)
            if det is not None:  # sqrt(P - c^2) -> sqrt((sqrt(P) - c)(sqrt(P) + c))
                r, c = (self.p(t) for t in det)
                return f"_sqrt((_sqrt({r}) - {c}) * (_sqrt({r}) + {c}))"
        b = self.p(base)
        if exp == _HALF:
            return f"_sqrt({b})"
        if exp == -_HALF:
            return f"_rsqrt({b})"
        if exp.is_Integer:
            n = int(exp)
            if n > 0:
                return f"({b} ** {n})" if n > 1 else b
            return f"(1.0 / {self.pow(base, -exp)})"
        if exp.is_Rational and exp.q == 2 and exp > 0:  # x**(k/2) = x**((k-1)/2) * sqrt(x)
            return f"({self.pow(base, exp - _HALF)} * _sqrt({b}))"
        if exp.is_Rational and exp.q == 2:
            return f"({self.pow(base, exp + _HALF)} * _rsqrt({b}))"
        if exp.is_Number:
            return f"jnp.power({b}, {_literal(exp)})"
        return f"_exp({self.p(exp)} * _log({b}))"


def _depends_on(e: sympy.Expr, replacements) -> set:
    """The argument symbols ``e`` depends on, through the cse temporaries."""
    subs = dict(replacements)
    out: set = set()
    todo = list(e.free_symbols)
    while todo:
        s = todo.pop()
        if s in subs:
            todo.extend(subs[s].free_symbols)
        else:
            out.add(s)
    return out


def to_source(
    name: str, args: Sequence[sympy.Symbol], exprs: Sequence[sympy.Expr]
) -> str:
    """The Python source of a function computing ``exprs`` from ``args``.

    Arguments:
        name: the function's name.
        args: the argument symbols, in order.
        exprs: the expressions to return (a tuple when more than one).

    Returns:
        source text defining ``name``; run it with :data:`NAMESPACE` as globals.
    """
    _sympy_tables()
    replacements, reduced = sympy.cse(list(exprs), symbols=sympy.numbered_symbols("_t"))
    names = {a: f"_a{i}" for i, a in enumerate(args)}
    pr = _Printer(names)
    lines = [f"def {name}({', '.join(names[a] for a in args)}):"]
    for sym, sub in replacements:
        names[sym] = sym.name
        lines.append(f"    {sym.name} = {pr(sub)}")
    outs = [pr(e) for e in reduced]
    # a result that misses an argument must still broadcast (and take the dtype) of all
    ones = " + ".join(f"0.0 * {names[a]}" for a in args)
    full = set(args)
    outs = [
        o if _depends_on(e, replacements) >= full else f"({o} + {ones})"
        for o, e in zip(outs, reduced)
    ]
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ",)"
    lines.append(f"    return {ret}")
    return "\n".join(lines) + "\n"


@functools.cache
def _compile_cached(name: str, args: tuple, exprs: tuple) -> Callable:
    src = to_source(name, args, exprs)
    ns = dict(NAMESPACE)
    exec(compile(src, f"<ntkdsl:{name}>", "exec"), ns)  # our own printed source, not spec text
    fn = ns[name]
    fn.__source__ = src
    fn.__doc__ = f"Printed from sympy by ntkdsl.compiler.printer:\n\n{src}"
    return fn


def to_jax(
    name: str, args: Sequence[sympy.Symbol], exprs: Sequence[sympy.Expr]
) -> Callable:
    """A JAX function ``(*args) -> exprs`` (one array, or a tuple of them), cached.

    Arguments:
        name: a name for the function (shown in tracebacks and ``fn.__source__``).
        args: the argument symbols, in order.
        exprs: the expressions to compute (one: returns an array; several: a tuple).

    Returns:
        a function of arrays that broadcast against each other; jit-compatible,
        dtype-preserving; its printed source is ``fn.__source__``.
    """
    return _compile_cached(name, tuple(args), tuple(exprs))
