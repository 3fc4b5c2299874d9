"""Pointwise nonlinearities.

Each class holds its parameters and its closed forms:
``T = E[phi(u) phi(v)]`` and ``Tdot = E[phi'(u) phi'(v)]`` over
``(u, v) ~ N(0, [[s11, s12], [s12, s22]])``, written once as sympy
expressions (:meth:`Pointwise.T_expr`, :meth:`Pointwise.Tdot_expr`); the same
expressions are checked in ``compiler/symbolic.py`` and printed into the JAX
code that runs (``compiler/printer.py``): :meth:`Pointwise.pair_fn`,
:meth:`Pointwise.t_fn`, :meth:`Pointwise.diag_fn`. ``phi`` is the
finite-width function. ``Tanh`` has no closed form: its functions come from
Gauss-Hermite quadrature (``compiler/quadrature.py``).

sympy and jax are imported inside the methods, so that importing the layer
classes (the front end, ``ntkdsl check``) stays cheap. Results are cached per
layer value (the classes are frozen, hashable dataclasses).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Layer, LayerArgError, Shape


def _number(layer: Layer, *names: str) -> None:
    for n in names:
        v = getattr(layer, n)
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise LayerArgError(n, f"'{n}' must be a number, got {v!r}")


def _q(v: float):
    """An exact sympy number for a layer parameter (0.1 -> 1/10, as written)."""
    import sympy

    return sympy.Integer(v) if isinstance(v, int) else sympy.Rational(repr(float(v)))


@functools.cache
def _cached(layer: Pointwise, what: str) -> Any:
    """One cache for every derived object of a layer (expressions, printed functions)."""
    return getattr(layer, "_build_" + what)()


@dataclass(frozen=True, kw_only=True)
class Pointwise(Layer):
    """Base of the elementwise nonlinearities; the shape is unchanged.

    A subclass defines :meth:`phi` (jax), :meth:`phi_expr` / :meth:`dphi_expr`
    (sympy, for the checks) and the closed forms :meth:`_T`, :meth:`_Tdot`,
    :meth:`_diag`, :meth:`_diag_dot`; the base caches them and prints them.
    """

    #: False for a nonlinearity without closed form (its functions use quadrature)
    closed_form: ClassVar[bool] = True

    # ---- finite width -------------------------------------------------------------
    def phi(self, x):
        """The nonlinearity, elementwise, on a jax array."""
        raise NotImplementedError

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """No parameters: ``(shape, ())``."""
        return shape, ()

    def apply(self, params, x):
        """``phi(x)``, elementwise."""
        return self.phi(x)

    # ---- infinite width (compiler/kernel_rules.py) ------------------------------------
    def kernel_rule(self, k, plan):
        """``K' = T(K11, K12, K22)``, ``Theta' = Tdot * Theta`` via :meth:`pair_fn`."""
        from .. import kernel_rules

        return kernel_rules.pointwise(self, k, plan)

    # ---- sympy: the closed forms (subclasses) --------------------------------------
    def phi_expr(self, x):
        """phi as a sympy expression of the symbol ``x``."""
        raise NotImplementedError

    def dphi_expr(self, x):
        """phi' as a sympy expression of ``x`` (Piecewise at kinks)."""
        raise NotImplementedError

    def _T(self):
        raise NotImplementedError

    def _Tdot(self):
        raise NotImplementedError

    def _diag(self):
        raise NotImplementedError

    def _diag_dot(self):
        raise NotImplementedError

    def rewrites(self) -> tuple[tuple[str, Any, Any], ...]:
        """Cheaper forms used in place of textbook ones: ``(what, textbook, used)``.

        Each pair is proved equal by ``symbolic.check_layer`` (check 5) before it counts.
        """
        return ()

    # ---- public, cached --------------------------------------------------------------
    def T_expr(self):
        """``T(s11, s12, s22) = E[phi(u) phi(v)]``, a sympy expression (cached)."""
        return _cached(self, "T")

    def Tdot_expr(self):
        """``Tdot(s11, s12, s22) = E[phi'(u) phi'(v)]``, a sympy expression (cached)."""
        return _cached(self, "Tdot")

    def diag_expr(self):
        """``E[phi(u)^2]``, ``u ~ N(0, s)``, in the symbol ``s`` (= ``T(s, s, s)``)."""
        return _cached(self, "diag")

    def diag_dot_expr(self):
        """``E[phi'(u)^2]``, ``u ~ N(0, s)``, in the symbol ``s`` (= ``Tdot(s, s, s)``)."""
        return _cached(self, "diag_dot")

    def pair_fn(self) -> Callable:
        """``(s11, s12, s22) -> (T, Tdot)`` on broadcasting jax arrays (jit-able, cached).

        Printed from :meth:`T_expr` and :meth:`Tdot_expr` with shared
        subexpressions and safe primitives: no NaN (value or gradient) at
        correlation +-1 or zero variance. The printed source is ``fn.__source__``.
        """
        return _cached(self, "pair_fn")

    def t_fn(self) -> Callable:
        """``(s11, s12, s22) -> T`` alone (when only the NNGP kernel is asked for)."""
        return _cached(self, "t_fn")

    def diag_fn(self) -> Callable:
        """``s -> T(s, s, s)``, from the diagonal closed form :meth:`diag_expr`."""
        return _cached(self, "diag_fn")

    def _name(self) -> str:
        import re

        return re.sub(r"\W+", "_", self.describe()).strip("_")

    def _build_T(self):
        return self._T()

    def _build_Tdot(self):
        return self._Tdot()

    def _build_diag(self):
        return self._diag()

    def _build_diag_dot(self):
        return self._diag_dot()

    def _build_pair_fn(self):
        from ..printer import to_jax
        from ..symbolic import PAIR_ARGS

        return to_jax(f"pair_{self._name()}", PAIR_ARGS, (self.T_expr(), self.Tdot_expr()))

    def _build_t_fn(self):
        from ..printer import to_jax
        from ..symbolic import PAIR_ARGS

        return to_jax(f"t_{self._name()}", PAIR_ARGS, (self.T_expr(),))

    def _build_diag_fn(self):
        from ..printer import to_jax
        from ..symbolic import s

        return to_jax(f"diag_{self._name()}", (s,), (self.diag_expr(),))


def _angle():
    """The angle between u and v, written as ``atan2(sqrt(s11 s22 - s12^2), s12)``.

    Equal to the textbook ``acos(s12 / sqrt(s11 s22))`` (proved in check 5), but
    accurate at correlation 1 (``acos`` near 1 loses half the digits) and it
    shares its root with T's first term, so the pair costs one sqrt and one atan2.
    """
    import sympy

    from ..symbolic import s11, s12, s22

    return sympy.atan2(sympy.sqrt(s11 * s22 - s12**2), s12)


def _abrelu_T(a, b):
    """ABRelu's T: the arc-cosine kernel generalised to two slopes (used form)."""
    import sympy

    from ..symbolic import s11, s12, s22

    return (a - b) ** 2 / (2 * sympy.pi) * sympy.sqrt(s11 * s22 - s12**2) + s12 * _abrelu_Tdot(
        a, b
    )


def _abrelu_Tdot(a, b):
    import sympy

    return (a**2 + b**2) / 2 - (a - b) ** 2 / (2 * sympy.pi) * _angle()


def _abrelu_textbook_T(a, b):
    """The same kernel as the paper's appendix C writes it: sin and cos of the angle."""
    import sympy

    from ..symbolic import s11, s12, s22

    r = sympy.sqrt(s11 * s22)
    th = sympy.acos(s12 / r)
    return r / (2 * sympy.pi) * (
        (a - b) ** 2 * sympy.sin(th) + ((a**2 + b**2) * (sympy.pi - th) + 2 * a * b * th)
        * sympy.cos(th)
    )


class _ABReluForms:
    """Closed forms shared by Relu, LeakyRelu, ABRelu (slopes ``_slopes()``)."""

    def _slopes(self):
        raise NotImplementedError

    def phi(self, x):
        import jax.numpy as jnp

        a, b = self._slopes()
        return jnp.where(x > 0, b * x, a * x)

    def phi_expr(self, x):
        import sympy

        a, b = (_q(v) for v in self._slopes())
        return a * sympy.Min(x, 0) + b * sympy.Max(x, 0)

    def dphi_expr(self, x):
        import sympy

        a, b = (_q(v) for v in self._slopes())
        return sympy.Piecewise((a, x < 0), (b, True))

    def _T(self):
        return _abrelu_T(*(_q(v) for v in self._slopes()))

    def _Tdot(self):
        return _abrelu_Tdot(*(_q(v) for v in self._slopes()))

    def _diag(self):
        from ..symbolic import s

        a, b = (_q(v) for v in self._slopes())
        return (a**2 + b**2) / 2 * s

    def _diag_dot(self):
        a, b = (_q(v) for v in self._slopes())
        return (a**2 + b**2) / 2

    def rewrites(self):
        import sympy

        from ..symbolic import s11, s12, s22

        a, b = (_q(v) for v in self._slopes())
        textbook_dot = (a**2 + b**2) / 2 - (a - b) ** 2 / (2 * sympy.pi) * sympy.acos(
            s12 / sympy.sqrt(s11 * s22)
        )
        return (
            ("T: sin(acos c) = sqrt(1 - c^2), acos c = atan2(sqrt(1 - c^2), c)",
             _abrelu_textbook_T(a, b), self.T_expr()),
            ("Tdot: acos c = atan2(sqrt(1 - c^2), c)", textbook_dot, self.Tdot_expr()),
        )




@dataclass(frozen=True, kw_only=True)
class Relu(_ABReluForms, Pointwise):
    """``Relu``: max(x, 0). T is the arc-cosine kernel of degree 1 (paper, appendix C)."""

    spec_name = "Relu"

    def _slopes(self):
        return (0, 1)


@dataclass(frozen=True, kw_only=True)
class LeakyRelu(_ABReluForms, Pointwise):
    """``LeakyRelu(alpha)``: x for x > 0, else alpha * x (= ABRelu(alpha, 1))."""

    spec_name = "LeakyRelu"
    alpha: float

    def __post_init__(self) -> None:
        _number(self, "alpha")

    def _slopes(self):
        return (self.alpha, 1)


@dataclass(frozen=True, kw_only=True)
class ABRelu(_ABReluForms, Pointwise):
    """``ABRelu(a, b)``: a * min(x, 0) + b * max(x, 0)."""

    spec_name = "ABRelu"
    a: float
    b: float

    def __post_init__(self) -> None:
        _number(self, "a", "b")

    def _slopes(self):
        return (self.a, self.b)


@dataclass(frozen=True, kw_only=True)
class Erf(Pointwise):
    """``Erf(a=1, b=1, c=0)``: a * erf(b * x) + c.

    ``T = (2 a^2 / pi) asin(2 b^2 s12 / sqrt((1 + 2 b^2 s11)(1 + 2 b^2 s22))) + c^2``
    (erf is odd, so the cross terms ``a c E[erf(b u)]`` vanish), and
    ``Tdot = 4 a^2 b^2 / (pi sqrt((1 + 2 b^2 s11)(1 + 2 b^2 s22) - 4 b^4 s12^2))``,
    whose root is >= 1 on every covariance.
    """

    spec_name = "Erf"
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        _number(self, "a", "b", "c")

    def phi(self, x):
        import jax.scipy.special as jsp

        return self.a * jsp.erf(self.b * x) + self.c

    def _abc(self):
        return _q(self.a), _q(self.b), _q(self.c)

    def phi_expr(self, x):
        import sympy

        a, b, c = self._abc()
        return a * sympy.erf(b * x) + c

    def dphi_expr(self, x):
        import sympy

        a, b, _ = self._abc()
        return 2 * a * b / sympy.sqrt(sympy.pi) * sympy.exp(-(b**2) * x**2)

    def _T(self):
        import sympy

        from ..symbolic import s11, s12, s22

        a, b, c = self._abc()
        den = sympy.sqrt((1 + 2 * b**2 * s11) * (1 + 2 * b**2 * s22))
        return 2 * a**2 / sympy.pi * sympy.asin(2 * b**2 * s12 / den) + c**2

    def _Tdot(self):
        import sympy

        from ..symbolic import s11, s12, s22

        a, b, _ = self._abc()
        d = (1 + 2 * b**2 * s11) * (1 + 2 * b**2 * s22) - 4 * b**4 * s12**2
        return 4 * a**2 * b**2 / (sympy.pi * sympy.sqrt(d))

    def _diag(self):
        import sympy

        from ..symbolic import s

        a, b, c = self._abc()
        return 2 * a**2 / sympy.pi * sympy.asin(2 * b**2 * s / (1 + 2 * b**2 * s)) + c**2

    def _diag_dot(self):
        import sympy

        from ..symbolic import s

        a, b, _ = self._abc()
        return 4 * a**2 * b**2 / (sympy.pi * sympy.sqrt(1 + 4 * b**2 * s))


@dataclass(frozen=True, kw_only=True)
class Gelu(Pointwise):
    """``Gelu``: x * Phi(x), the exact form.

    With ``d^2 = (1 + s11)(1 + s22) - s12^2`` (>= 1 on every covariance),
    ``T = s12/4 + (s12 atan(s12/d) + (s12^2 + s11 s22 d^2) / ((1 + s11)(1 + s22) d)) / (2 pi)``
    (Tsuchida et al. 2020); ``atan(s12/d)`` needs no guard since ``d >= 1``.
    """

    spec_name = "Gelu"

    def phi(self, x):
        import jax.scipy.special as jsp

        return 0.5 * x * (1.0 + jsp.erf(x * 0.7071067811865476))  # 1/sqrt(2)

    def phi_expr(self, x):
        import sympy

        return x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2

    def dphi_expr(self, x):
        import sympy

        return (1 + sympy.erf(x / sympy.sqrt(2))) / 2 + x * sympy.exp(-(x**2) / 2) / sympy.sqrt(
            2 * sympy.pi
        )

    def _T(self):
        import sympy

        from ..symbolic import s11, s12, s22

        p1 = (1 + s11) * (1 + s22)
        d = sympy.sqrt(p1 - s12**2)
        return s12 / 4 + (
            s12 * sympy.atan(s12 / d) + (s12**2 + s11 * s22 * d**2) / (p1 * d)
        ) / (2 * sympy.pi)

    def _Tdot(self):
        import sympy

        from ..symbolic import s11, s12, s22

        p1 = (1 + s11) * (1 + s22)
        d2 = p1 - s12**2
        d = sympy.sqrt(d2)
        return sympy.Rational(1, 4) + sympy.atan(s12 / d) / (2 * sympy.pi) + s12 / (
            2 * sympy.pi * d
        ) * (1 / d2 + (1 - s11 * s22) / p1 + 1)

    def _diag(self):
        import sympy

        from ..symbolic import s

        r = sympy.sqrt(1 + 2 * s)
        return s * (sympy.Rational(1, 4) + (s / ((1 + s) * r) + sympy.atan(s / r) / 2) / sympy.pi)

    def _diag_dot(self):
        import sympy

        from ..symbolic import s

        r = sympy.sqrt(1 + 2 * s)
        return (
            sympy.Rational(1, 4)
            + sympy.atan(s / r) / (2 * sympy.pi)
            + s / (2 * sympy.pi * r) * (1 / (1 + 2 * s) + (1 - s**2) / (1 + s) ** 2 + 1)
        )


@dataclass(frozen=True, kw_only=True)
class Sin(Pointwise):
    """``Sin(a=1, b=1, c=0)``: a * sin(b * x + c).

    From ``2 sin(p) sin(q) = cos(p - q) - cos(p + q)`` and ``E[cos(w)] = exp(-var(w)/2)``:
    ``T = a^2/2 (exp(-b^2 (s11 + s22 - 2 s12)/2) - cos(2c) exp(-b^2 (s11 + s22 + 2 s12)/2))``,
    and ``Tdot`` the same with ``a b`` for ``a`` and ``+`` for ``-``.
    """

    spec_name = "Sin"
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        _number(self, "a", "b", "c")

    def phi(self, x):
        import jax.numpy as jnp

        return self.a * jnp.sin(self.b * x + self.c)

    def _abc(self):
        return _q(self.a), _q(self.b), _q(self.c)

    def phi_expr(self, x):
        import sympy

        a, b, c = self._abc()
        return a * sympy.sin(b * x + c)

    def dphi_expr(self, x):
        import sympy

        a, b, c = self._abc()
        return a * b * sympy.cos(b * x + c)

    def _parts(self):
        import sympy

        from ..symbolic import s11, s12, s22

        a, b, c = self._abc()
        minus = sympy.exp(-(b**2) * (s11 + s22 - 2 * s12) / 2)
        plus = sympy.exp(-(b**2) * (s11 + s22 + 2 * s12) / 2) * sympy.cos(2 * c)
        return a, b, minus, plus

    def _T(self):
        a, _, minus, plus = self._parts()
        return a**2 / 2 * (minus - plus)

    def _Tdot(self):
        a, b, minus, plus = self._parts()
        return a**2 * b**2 / 2 * (minus + plus)

    def _diag(self):
        import sympy

        from ..symbolic import s

        a, b, c = self._abc()
        return a**2 / 2 * (1 - sympy.exp(-2 * b**2 * s) * sympy.cos(2 * c))

    def _diag_dot(self):
        import sympy

        from ..symbolic import s

        a, b, c = self._abc()
        return a**2 * b**2 / 2 * (1 + sympy.exp(-2 * b**2 * s) * sympy.cos(2 * c))


@dataclass(frozen=True, kw_only=True)
class Tanh(Pointwise):
    """``Tanh``: no closed form; kernels by Gauss-Hermite quadrature.

    ``T_expr`` / ``Tdot_expr`` are unevaluated sympy functions (for ``explain``);
    the callables come from ``compiler/quadrature.py`` (degree documented there).
    """

    spec_name = "Tanh"
    closed_form: ClassVar[bool] = False

    def phi(self, x):
        import jax.numpy as jnp

        return jnp.tanh(x)

    def phi_expr(self, x):
        import sympy

        return sympy.tanh(x)

    def dphi_expr(self, x):
        import sympy

        return 1 - sympy.tanh(x) ** 2

    def _T(self):
        import sympy

        from ..symbolic import PAIR_ARGS

        return sympy.Function("T_Tanh")(*PAIR_ARGS)

    def _Tdot(self):
        import sympy

        from ..symbolic import PAIR_ARGS

        return sympy.Function("Tdot_Tanh")(*PAIR_ARGS)

    def _diag(self):
        import sympy

        from ..symbolic import s

        return sympy.Function("T_Tanh")(s, s, s)

    def _diag_dot(self):
        import sympy

        from ..symbolic import s

        return sympy.Function("Tdot_Tanh")(s, s, s)

    def _build_pair_fn(self):
        from ..quadrature import tanh_pair_fn

        return tanh_pair_fn()

    def _build_t_fn(self):
        from ..quadrature import tanh_t_fn

        return tanh_t_fn()

    def _build_diag_fn(self):
        from ..quadrature import tanh_diag_fn

        return tanh_diag_fn()


@dataclass(frozen=True, kw_only=True)
class Identity(Pointwise):
    """``Identity``: x (T = s12, Tdot = 1)."""

    spec_name = "Identity"

    def phi(self, x):
        return x

    def phi_expr(self, x):
        return x

    def dphi_expr(self, x):
        import sympy

        return sympy.Integer(1)

    def _T(self):
        from ..symbolic import s12

        return s12

    def _Tdot(self):
        import sympy

        return sympy.Integer(1)

    def _diag(self):
        from ..symbolic import s

        return s

    def _diag_dot(self):
        import sympy

        return sympy.Integer(1)
