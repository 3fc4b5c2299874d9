"""User-defined activations: a nonlinearity written as a formula in the spec.

``activation swish(x, beta = 1) = x * sigmoid(beta * x)`` becomes, at each use,
a :class:`FormulaActivation` holding the activation's name, its formula as a
frozen tree (see :data:`FUNCTIONS` and :func:`tree_text`) and the values of its
parameters. The tree is turned into sympy here (:func:`to_sympy`), never into
Python code, and differentiated by the chain rule on the tree
(:func:`derivative`), so that the derivative keeps the overflow-safe forms of
``sigmoid`` and ``softplus``.

The kernel map is chosen once per layer value (:meth:`FormulaActivation.path`):

* a formula equal to a built-in nonlinearity (``max(x, 0)`` is ``Relu``,
  ``a * max(x, 0) + b * min(x, 0)`` is ``ABRelu``, ``a * erf(b * x) + c`` is
  ``Erf``, ``a * sin(b * x + c)`` is ``Sin``, ...) delegates its kernel
  expressions and printed functions to that built-in: the same sympy
  expressions, the same JAX functions;
* a polynomial gets the exact kernel from the Gaussian moments
  ``E[u^i v^j]`` (Isserlis' theorem, :func:`gaussian_moment`);
* anything else takes the generic quadrature of its printed ``phi`` and ``phi'``
  (``compiler/quadrature.py``), as ``Softplus`` does.

A built-in is recognised by comparing sympy expressions: the built-in is built
with the parameters read off the formula (by ``sympy.Wild`` matching, or from
the formula's slopes on the two half-lines for the piecewise-linear family)
and ``phi - phi_builtin`` must simplify to 0. Built-ins take float parameters,
so a constant that is not a decimal number (``sin(x + pi / 4)``) does not match
exactly and takes the quadrature path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

from ..._lazy import lazy
from .base import LayerArgError
from .pointwise import Identities, Pointwise, _q

sympy = lazy("sympy")
S = lazy("ntkdsl.compiler.symbols")

#: the functions a formula may call, with their number of arguments (None: two or more)
FUNCTIONS: dict[str, int | None] = {
    "sqrt": 1, "exp": 1, "log": 1, "abs": 1, "sign": 1, "sin": 1, "cos": 1, "tanh": 1,
    "erf": 1, "sigmoid": 1, "softplus": 1, "min": None, "max": None,
}
#: the highest degree of a polynomial formula given the exact kernel (the moments of
#: higher ones are huge expressions); beyond it the quadrature path is taken
MAX_POLY_DEGREE = 16

# The tree: ("x",), ("num", v), ("pi",), ("param", name), ("neg", a), (op, a, b) for op
# in + - * / **, ("fn", name, a, ...). Tuples all the way down, so a layer is hashable.
Tree = tuple


def tree_text(t: Tree, var: str = "x") -> str:
    """The formula as a spec writes it, fully parenthesised where precedence needs it."""
    return _text(t, var, 0)


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "**": 4}


def _text(t: Tree, var: str, outer: int) -> str:
    kind = t[0]
    if kind == "x":
        return var
    if kind == "num":
        return repr(t[1])
    if kind == "pi":
        return "pi"
    if kind == "param":
        return t[1]
    if kind == "fn":
        return f"{t[1]}({', '.join(_text(a, var, 0) for a in t[2:])})"
    prec = _PREC[kind]
    if kind == "neg":
        s = "-" + _text(t[1], var, prec)
    elif kind == "**":  # right-associative
        s = f"{_text(t[1], var, prec + 1)} ** {_text(t[2], var, prec)}"
    else:
        s = f"{_text(t[1], var, prec)} {kind} {_text(t[2], var, prec + 1)}"
    return f"({s})" if prec < outer or (kind == "neg" and outer == 4) else s


def has_x(t: Tree) -> bool:
    """Whether the tree uses the pre-activation variable."""
    if t[0] == "x":
        return True
    if t[0] in ("num", "pi", "param"):
        return False
    return any(has_x(a) for a in t[(2 if t[0] == "fn" else 1):])


# ---- sympy ------------------------------------------------------------------------------
def _sigmoid(u):
    # (1 + tanh(u/2)) / 2 == 1 / (1 + exp(-u)), and neither overflows nor has a NaN gradient
    return (1 + sympy.tanh(u / 2)) / 2


def _apply(name: str, args: list):
    u = args[0]
    if name == "sqrt":
        return sympy.sqrt(u)
    if name == "abs":
        return sympy.Abs(u)
    if name == "sigmoid":
        return _sigmoid(u)
    if name == "softplus":
        return sympy.log(1 + sympy.exp(u))  # printed as jax.nn.softplus (no overflow)
    if name == "min":
        return sympy.Min(*args)
    if name == "max":
        return sympy.Max(*args)
    return {"exp": sympy.exp, "log": sympy.log, "sign": sympy.sign, "sin": sympy.sin,
            "cos": sympy.cos, "tanh": sympy.tanh, "erf": sympy.erf}[name](u)


def _number(v: float | int):
    return sympy.Integer(v) if isinstance(v, int) else _q(v)


def to_sympy(t: Tree, values: dict[str, float], x=None):
    """The formula as a sympy expression of ``x`` (default ``symbols.x``), parameters
    replaced by the exact values of ``values`` (0.1 -> 1/10, as written)."""
    x = S.x if x is None else x
    return _to_sympy(t, values, x)


def _to_sympy(t: Tree, values, x):
    kind = t[0]
    if kind == "x":
        return x
    if kind == "num":
        return _number(t[1])
    if kind == "pi":
        return sympy.pi
    if kind == "param":
        return _number(values[t[1]])
    if kind == "fn":
        return _apply(t[1], [_to_sympy(a, values, x) for a in t[2:]])
    if kind == "neg":
        return -_to_sympy(t[1], values, x)
    a, b = _to_sympy(t[1], values, x), _to_sympy(t[2], values, x)
    if kind == "+":
        return a + b
    if kind == "-":
        return a - b
    if kind == "*":
        return a * b
    if kind == "/":
        return a / b
    return a**b


def derivative(t: Tree, values: dict[str, float], x=None):
    """``d phi / dx`` by the chain rule on the tree (sympy), with safe forms:
    ``softplus' = sigmoid`` (tanh form), ``sigmoid' = (1 - tanh(u/2)^2) / 4``,
    ``max``/``min`` as ``Piecewise``, ``sign' = 0`` and ``abs' = sign`` (almost everywhere)."""
    x = S.x if x is None else x
    return _d(t, values, x)[1]


def _d(t: Tree, values, x):
    """``(value, derivative)`` of the tree."""
    kind = t[0]
    zero = sympy.Integer(0)
    if kind == "x":
        return x, sympy.Integer(1)
    if kind in ("num", "pi", "param"):
        return _to_sympy(t, values, x), zero
    if kind == "neg":
        v, d = _d(t[1], values, x)
        return -v, -d
    if kind == "fn":
        name = t[1]
        pairs = [_d(a, values, x) for a in t[2:]]
        if name in ("min", "max"):
            v, d = pairs[0]
            for w, e in pairs[1:]:
                cond = v > w if name == "max" else v < w
                v, d = (sympy.Max(v, w) if name == "max" else sympy.Min(v, w),
                        sympy.Piecewise((d, cond), (e, True)))
            return v, d
        (u, du), = pairs
        outer = {
            "sqrt": lambda: 1 / (2 * sympy.sqrt(u)),
            "exp": lambda: sympy.exp(u),
            "log": lambda: 1 / u,
            "abs": lambda: sympy.sign(u),
            "sign": lambda: zero,
            "sin": lambda: sympy.cos(u),
            "cos": lambda: -sympy.sin(u),
            "tanh": lambda: 1 - sympy.tanh(u) ** 2,
            "erf": lambda: 2 / sympy.sqrt(sympy.pi) * sympy.exp(-(u**2)),
            "sigmoid": lambda: (1 - sympy.tanh(u / 2) ** 2) / 4,
            "softplus": lambda: _sigmoid(u),
        }[name]()
        return _apply(name, [u]), outer * du
    (a, da), (b, db) = _d(t[1], values, x), _d(t[2], values, x)
    if kind == "+":
        return a + b, da + db
    if kind == "-":
        return a - b, da - db
    if kind == "*":
        return a * b, da * b + a * db
    if kind == "/":
        return a / b, (da * b - a * db) / b**2
    if db == 0:
        return a**b, b * a ** (b - 1) * da
    return a**b, a**b * (db * sympy.log(a) + b * da / a)


# ---- Gaussian moments ------------------------------------------------------------------
def _dfact(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def gaussian_moment(i: int, j: int):
    """``E[u^i v^j]`` for ``(u, v) ~ N(0, [[s11, s12], [s12, s22]])`` (Isserlis / Wick).

    Pairing ``k`` of the ``u``'s with ``k`` of the ``v``'s (``C(i,k) C(j,k) k!`` ways)
    and the rest among themselves (``(i-k-1)!! (j-k-1)!!`` ways) gives
    ``sum_k C(i,k) C(j,k) k! (i-k-1)!! (j-k-1)!! s11^((i-k)/2) s22^((j-k)/2) s12^k``
    over ``k <= min(i, j)`` with ``i - k``, ``j - k`` even; 0 when ``i + j`` is odd.
    """
    total = sympy.Integer(0)
    for k in range(i % 2, min(i, j) + 1, 2):
        if (j - k) % 2:
            continue
        ways = math.comb(i, k) * math.comb(j, k) * math.factorial(k) \
            * _dfact(i - k - 1) * _dfact(j - k - 1)
        total += ways * S.s11 ** ((i - k) // 2) * S.s22 ** ((j - k) // 2) * S.s12**k
    return total


def _poly_kernel(coef: list):
    return sympy.expand(sum(
        (coef[i] * coef[j] * gaussian_moment(i, j)
         for i in range(len(coef)) for j in range(len(coef)) if coef[i] != 0 and coef[j] != 0),
        sympy.Integer(0)))


# ---- recognising built-ins ------------------------------------------------------------
def _builtins() -> dict:
    from . import BUILTINS

    return BUILTINS


def _same(phi, other) -> bool:
    try:
        return phi == other or sympy.simplify(phi - other) == 0
    except Exception:  # sympy cannot decide: not recognised (the quadrature path is safe)
        return False


def _make(name: str, **kwargs):
    cls = _builtins().get(name)
    if cls is None:
        return None
    try:
        return cls(**{k: float(v) for k, v in kwargs.items()})
    except (LayerArgError, TypeError, ValueError):
        return None


def _real(v) -> bool:
    return v is not None and v.is_number and v.is_real is not False and not v.has(S.x)


def _func_types(e) -> set:
    return {type(f) for f in e.atoms(sympy.Function)}


def _match_builtin(phi):
    """The built-in nonlinearity equal to ``phi`` (sympy in ``symbols.x``), or None."""
    x = S.x
    rough = phi.atoms(sympy.Max, sympy.Min, sympy.Abs)
    others = {type(f) for f in phi.atoms(sympy.Function)} - {sympy.Max, sympy.Min, sympy.Abs}
    if rough and not others:
        # piecewise linear through 0: slope b on x > 0, a on x < 0 -> ABRelu(a, b)
        t = sympy.Symbol("t", positive=True)
        b = sympy.simplify(phi.subs(x, t) / t)
        a = sympy.simplify(-phi.subs(x, -t) / t)
        if _real(a) and _real(b) and not a.has(t) and not b.has(t):
            cand = _make("Relu") if (a, b) == (0, 1) else _make("ABRelu", a=a, b=b)
            if cand is not None and all(_same(phi.subs(x, v), cand.phi_expr(x).subs(x, v))
                                        for v in (t, -t)):
                return cand
    A, B, C = (sympy.Wild(n, exclude=[x]) for n in "ABC")
    families = (
        ("Erf", A * sympy.erf(B * x) + C, ("a", "b", "c")),
        ("Sin", A * sympy.sin(B * x + C), ("a", "b", "c")),
        ("Cos", A * sympy.cos(B * x + C), ("a", "b", "c")),
        ("Exp", A * sympy.exp(B * x), ("a", "b")),
        ("Gaussian", A * sympy.exp(B * x**2), ("a", "b")),
    )
    for name, pattern, keys in families:
        if name not in _builtins() or not phi.has(pattern.atoms(sympy.Function).pop().func):
            continue
        m = phi.match(pattern)
        if not m:
            continue
        vals = [m.get(w, sympy.Integer(0)) for w in (A, B, C)[:len(keys)]]
        if not all(_real(v) for v in vals):
            continue
        cand = _make(name, **dict(zip(keys, vals)))
        if cand is not None and _same(phi, cand.phi_expr(x)):
            return cand
    funcs = _func_types(phi)
    for name in ("Gelu", "Sigmoid", "Tanh", "Sign"):
        cand = _make(name)
        # simplify only what could be equal: the same functions appear in both
        if cand is not None and _func_types(cand.phi_expr(x)) == funcs \
                and _same(phi, cand.phi_expr(x)):
            return cand
    return None


@dataclass(frozen=True)
class KernelPath:
    """How a formula's kernel is computed: ``kind`` is ``"builtin"`` (``delegate`` is the
    built-in layer), ``"polynomial"`` (``coef``: sympy numbers, lowest degree first) or
    ``"quadrature"``."""

    kind: str
    delegate: Pointwise | None = None
    coef: tuple = ()

    def describe(self) -> str:
        """One line for ``explain``."""
        if self.kind == "builtin":
            how = "closed form" if self.delegate.closed_form else "quadrature (no closed form)"
            return (f"{how} of the built-in {self.delegate.describe(short=True)} "
                    "(the formula equals its phi)")
        if self.kind == "polynomial":
            return f"closed form: a polynomial of degree {len(self.coef) - 1} " \
                   "(Gaussian moments, Isserlis' theorem)"
        return "no closed form: quadrature of phi and phi'"


# ---- the layer --------------------------------------------------------------------------
@functools.cache
def _path(layer: FormulaActivation) -> KernelPath:
    phi = layer.phi_formula()
    x = S.x
    if phi.is_polynomial(x):
        poly = sympy.Poly(sympy.expand(phi), x)
        coef = tuple(poly.all_coeffs()[::-1])
        if poly.degree() <= MAX_POLY_DEGREE and all(_real(c) for c in coef):
            return KernelPath("polynomial", coef=coef)
    cand = _match_builtin(phi)
    if cand is not None:
        return KernelPath("builtin", delegate=cand)
    return KernelPath("quadrature")


@dataclass(frozen=True, kw_only=True)
class FormulaActivation(Pointwise):
    """A nonlinearity defined in the spec by ``activation NAME(x, ...) = FORMULA``.

    Arguments:
        name: the activation's name in the spec.
        formula: the formula as a frozen tree (see the module docstring).
        params: ``(name, value)`` of each parameter, in the definition's order.
        var: the name of the pre-activation variable in the definition (for rendering).
    """

    name: str
    formula: Tree
    params: tuple[tuple[str, float], ...] = ()
    var: str = "x"

    # no spec_name: a formula is not a built-in, and must not register one
    float_args: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for n, v in self.params:
            if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
                raise LayerArgError(n, f"'{n}' must be a number, got {v!r}")

    # ---- what the passes read, decided by the kernel path ---------------------------
    def path(self) -> KernelPath:
        """How the kernel is computed (decided once per layer value, cached)."""
        return _path(self)

    @property
    def closed_form(self) -> bool:  # type: ignore[override]
        p = self.path()
        return p.kind == "polynomial" or (p.kind == "builtin" and p.delegate.closed_form)

    @property
    def homogeneous(self) -> bool:  # type: ignore[override]
        p = self.path()
        return p.kind == "builtin" and p.delegate.homogeneous

    @property
    def odd(self) -> bool:  # type: ignore[override]
        p = self.path()
        if p.kind == "builtin":
            return p.delegate.odd
        phi = self.phi_formula()
        return _same(phi.subs(S.x, -S.x), -phi) if p.kind == "quadrature" else False

    @property
    def jump(self) -> bool:  # type: ignore[override]
        p = self.path()
        return p.kind == "builtin" and p.delegate.jump

    # ---- rendering ---------------------------------------------------------------------
    def values(self) -> dict[str, float]:
        """The parameter values by name."""
        return dict(self.params)

    def arguments(self) -> dict[str, object]:
        return dict(self.params)

    def describe(self, short: bool = False) -> str:
        """``NAME`` or ``NAME(P=value, ...)``."""
        if not self.params:
            return self.name
        fmt = (lambda v: f"{v:.6g}") if short else repr
        return f"{self.name}({', '.join(f'{k}={fmt(v)}' for k, v in self.params)})"

    def spec_text(self) -> str:
        """How ``check`` shows the layer (as ``describe``, numbers to 6 digits)."""
        return self.describe(short=True)

    def formula_text(self) -> str:
        """The definition: ``NAME(x, P) = FORMULA``."""
        head = ", ".join([self.var, *(k for k, _ in self.params)])
        return f"{self.name}({head}) = {tree_text(self.formula, self.var)}"

    def explain_notes(self, latex: bool) -> list[str]:
        """The lines ``explain`` prints under the layer's T: formula, phi, phi' and path."""
        phi, dphi = self.phi_expr(S.x), self.dphi_expr(S.x)
        show = sympy.latex if latex else str
        return [f"  activation {self.formula_text()}",
                f"    phi(x) = {show(phi)}",
                f"    phi'(x) = {show(dphi)}",
                f"    kernel: {self.path().describe()}"]

    # ---- sympy -------------------------------------------------------------------------
    def phi_formula(self):
        """The formula in sympy (``symbols.x``), exactly as written."""
        return _cached_phi(self)

    def phi_expr(self, x):
        return self.phi_formula().subs(S.x, x) if x is not S.x else self.phi_formula()

    def dphi_expr(self, x):
        p = self.path()
        if p.kind == "builtin":  # the derivative the delegated Tdot is the expectation of
            return p.delegate.dphi_expr(x)
        d = _cached_dphi(self)
        return d.subs(S.x, x) if x is not S.x else d

    def _build_T(self):
        p = self.path()
        if p.kind == "builtin":
            return p.delegate.T_expr()
        if p.kind == "polynomial":
            return _poly_kernel(list(p.coef))
        return sympy.Function(f"T_{self.name}")(*S.PAIR_ARGS)

    def _build_Tdot(self):
        p = self.path()
        if p.kind == "builtin":
            return p.delegate.Tdot_expr()
        if p.kind == "polynomial":
            return _poly_kernel([i * c for i, c in enumerate(p.coef)][1:])
        return sympy.Function(f"Tdot_{self.name}")(*S.PAIR_ARGS)

    def _build_diag(self):
        p = self.path()
        if p.kind == "builtin":
            return p.delegate.diag_expr()
        if p.kind == "polynomial":
            return sympy.expand(self.T_expr().subs({S.s11: S.s, S.s12: S.s, S.s22: S.s}))
        return sympy.Function(f"T_{self.name}")(S.s, S.s, S.s)

    def _build_diag_dot(self):
        p = self.path()
        if p.kind == "builtin":
            return p.delegate.diag_dot_expr()
        if p.kind == "polynomial":
            return sympy.expand(self.Tdot_expr().subs({S.s11: S.s, S.s12: S.s, S.s22: S.s}))
        return sympy.Function(f"Tdot_{self.name}")(S.s, S.s, S.s)

    def _build_pair_fn(self):
        p = self.path()
        return p.delegate.pair_fn() if p.kind == "builtin" else super()._build_pair_fn()

    def _build_t_fn(self):
        p = self.path()
        return p.delegate.t_fn() if p.kind == "builtin" else super()._build_t_fn()

    def _build_diag_fn(self):
        p = self.path()
        return p.delegate.diag_fn() if p.kind == "builtin" else super()._build_diag_fn()

    def special_cases(self) -> Identities:
        p = self.path()
        if p.kind == "builtin":
            return self._same_as(p.delegate, p.delegate.describe(short=True))
        if p.kind == "polynomial" and "Polynomial" in _builtins():
            # an independent derivation of the same kernel, when the coefficients are
            # decimal numbers (Polynomial takes floats)
            if all(_q(float(c)) == c for c in p.coef):
                other = _builtins()["Polynomial"](coef=tuple(float(c) for c in p.coef))
                return self._same_as(other, "Polynomial")
        return []


# the user's name wherever a pass names a layer (messages, signal chains); set after the
# class is made, so that the registry of built-ins never sees it
FormulaActivation.spec_name = property(lambda self: self.name)  # type: ignore[assignment]


@functools.cache
def _cached_phi(layer: FormulaActivation):
    return to_sympy(layer.formula, layer.values())


@functools.cache
def _cached_dphi(layer: FormulaActivation):
    return derivative(layer.formula, layer.values())
