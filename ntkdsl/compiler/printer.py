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
* ``atan2(y, x)`` -> :func:`safe_atan2` : ``pi/2`` at ``(0, 0)`` (correlation 0);
* ``acos/asin`` -> :func:`safe_acos` / :func:`safe_asin` : argument clipped to [-1, 1],
  gradient 0 where ``|x| >= 1`` (the singular parts cancel analytically in every
  closed form; dropping both keeps autodiff from computing ``inf - inf``).

Two rewrites are made while printing, both proved in ``symbolic.printer_rewrites``:
``sqrt(a) * sqrt(b) -> sqrt(a * b)`` and ``1/sqrt(a) * 1/sqrt(b) -> rsqrt(a * b)`` for
``a, b >= 0`` (every base under a root here is a variance or a product of them), which
halves the number of roots. Common subexpressions are shared (``sympy.cse``).
Numbers are printed as Python float literals, which are weakly typed in JAX, so
float32 inputs stay float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import sympy


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


@jax.custom_jvp
def safe_atan2(y: jax.Array, x: jax.Array) -> jax.Array:
    """``atan2(y, x)``, with ``pi/2`` at ``y = x = 0`` (an angle of correlation 0, as for a
    zero-variance input) and a gradient that is 0 there instead of NaN.

    Arguments:
        y, x: arrays.

    Returns:
        the angle, elementwise.
    """
    zero = (x == 0) & (y == 0)
    return jnp.where(zero, jnp.pi / 2, jnp.arctan2(y, x))


@safe_atan2.defjvp
def _safe_atan2_jvp(primals, tangents):
    (y, x), (dy, dx) = primals, tangents
    r2 = x * x + y * y
    ok = r2 > _eps(r2)
    inv = jnp.where(ok, 1.0 / jnp.where(ok, r2, 1.0), 0.0)
    return safe_atan2(y, x), (dy * x - dx * y) * inv


#: the names the printed source may use, and what they are
NAMESPACE: dict[str, object] = {
    "jnp": jnp,
    "_sqrt": safe_sqrt,
    "_rsqrt": safe_rsqrt,
    "_acos": safe_acos,
    "_asin": safe_asin,
    "_atan": jnp.arctan,
    "_atan2": safe_atan2,
    "_exp": jnp.exp,
    "_log": jnp.log,
    "_sin": jnp.sin,
    "_cos": jnp.cos,
    "_erf": jsp.erf,
    "_tanh": jnp.tanh,
}

_FUNCS = {
    sympy.acos: "_acos", sympy.asin: "_asin", sympy.atan: "_atan", sympy.atan2: "_atan2",
    sympy.exp: "_exp", sympy.log: "_log", sympy.sin: "_sin", sympy.cos: "_cos", sympy.erf: "_erf",
    sympy.tanh: "_tanh",
}

_HALF = sympy.Rational(1, 2)


def _literal(e: sympy.Expr) -> str:
    v = float(e)
    return repr(v) if v >= 0 else f"({v!r})"


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
