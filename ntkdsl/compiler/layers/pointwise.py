"""Pointwise nonlinearities.

Each class holds its parameters and its maths, written once in sympy:

* ``phi`` (:meth:`Pointwise.phi_expr`) and ``phi'`` (:meth:`Pointwise.dphi_expr`);
* the closed forms ``T = E[phi(u) phi(v)]`` and ``Tdot = E[phi'(u) phi'(v)]``
  over ``(u, v) ~ N(0, [[s11, s12], [s12, s22]])`` (:meth:`Pointwise.T_expr`,
  :meth:`Pointwise.Tdot_expr`) and their diagonals;
* the identities they satisfy (:meth:`Pointwise.special_cases`).

The same expressions are proved in ``compiler/symbolic.py``, printed into the
JAX functions that run (``compiler/printer.py``: :meth:`Pointwise.pair_fn`,
:meth:`Pointwise.t_fn`, :meth:`Pointwise.diag_fn`, and the finite net's
:meth:`Pointwise.phi`), and rendered by ``explain``. A nonlinearity without a
closed form (``closed_form = False``) gets its kernel functions from one
generic quadrature of its printed ``phi`` and ``phi'`` (``compiler/quadrature.py``).

sympy and jax are reached through lazy modules, so importing the layer
classes (the front end, ``ntkdsl check``) stays cheap. Derived objects are
cached per layer value (the classes are frozen, hashable dataclasses).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..._lazy import lazy
from .. import covariance as cv
from .. import rules
from ..terms import call
from .base import Layer, LayerArgError, Shape, check_real

sympy = lazy("sympy")
S = lazy("ntkdsl.compiler.symbols")
printer = lazy("ntkdsl.compiler.printer")
printed = lazy("ntkdsl.compiler.printed")
quadrature = lazy("ntkdsl.compiler.quadrature")
jnp = lazy("jax.numpy")

Identities = list[tuple[str, Any, Any]]


def _number(layer: Layer, *names: str) -> None:
    for n in names:
        check_real(layer, n)


def _q(v: float):
    """An exact sympy number for a layer parameter (0.1 -> 1/10, as written)."""
    if isinstance(v, sympy.Basic):  # a symbol: the differentiable kernels' constants
        return v
    return sympy.Integer(v) if isinstance(v, int) else sympy.Rational(repr(float(v)))


@functools.cache
def _cached(layer: Pointwise, what: str) -> Any:
    """One cache for every derived object of a layer (expressions, printed functions)."""
    fn = printed.lookup(layer, what)  # a built-in's shipped printed source: no sympy to run it
    return fn if fn is not None else getattr(layer, "_build_" + what)()


@dataclass(frozen=True, kw_only=True)
class Pointwise(Layer):
    """Base of the elementwise nonlinearities; the shape is unchanged.

    A subclass defines :meth:`phi_expr` / :meth:`dphi_expr` and, when
    ``closed_form`` is True, the closed forms :meth:`_T`, :meth:`_Tdot`,
    :meth:`_diag`, :meth:`_diag_dot`; the base caches, prints and interprets them.
    """

    #: False for a nonlinearity without closed form (its functions use quadrature)
    closed_form: ClassVar[bool] = True
    #: phi is odd (the quadrature then visits half of the nodes)
    odd: ClassVar[bool] = False
    #: phi(c x) = c phi(x) for c > 0, so T(c s) = c T(s): the rule evaluates T on
    #: variances scaled by a power of two, which cannot overflow
    homogeneous: ClassVar[bool] = False
    #: phi jumps (Sign, a step): its derivative is 0 almost everywhere, so Tdot = 0 and the
    #: NTK gets nothing through the layer, while dT/ds12 != 0 (Price's theorem needs a
    #: weakly differentiable phi); the symbolic check proves Tdot == 0 instead
    jump: ClassVar[bool] = False

    input_entries: ClassVar[str] = "as_output"
    reads_variances: ClassVar[bool] = True
    kernel_map: ClassVar[bool] = True
    vmap_is_slow: ClassVar[bool] = False
    gaussian: ClassVar[str] = "breaks"
    needs_gaussian_input: ClassVar[bool] = True
    spatial: ClassVar[str] = "any"

    float_args: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # every parameter of a nonlinearity is a real number unless the class says otherwise
        if "float_args" not in cls.__dict__:
            cls.float_args = tuple(
                n for n, ann in inspect.get_annotations(cls).items()
                if "float" in str(ann) and "ClassVar" not in str(ann))

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    # ---- finite width -------------------------------------------------------------
    def phi(self, x):
        """The nonlinearity, elementwise, on a jax array (printed from :meth:`phi_expr`)."""
        return _cached(self, "phi_fn")(x)

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """No parameters: ``(shape, ())``."""
        return shape, ()

    def apply(self, params, x):
        """``phi(x)``, elementwise."""
        return self.phi(x)

    # ---- infinite width -------------------------------------------------------------
    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """``rules.pointwise``: ``K' = T(K11, K12, K22)``, ``Theta' = Tdot * Theta``."""
        k, c1, c2 = k.input_covariances(plan)
        v1 = cv.spatial_diag(c1, k.full, k.nd)
        v2 = v1 if k.same else cv.spatial_diag(c2, k.full, k.nd)
        s11, s22 = cv.side(v1, k, 1), cv.side(v2, k, 2)
        s12 = k.nngp
        if k.same and k.rows is not None:
            # the pairs (i, i) of a symmetric list are the per-input covariance itself; take
            # them from cov1 bit for bit, so their correlation is exactly 1 where it should be
            # (the closed forms turn a 1-ulp mismatch there into ~1e-8 through sqrt(1 - c^2));
            # a select, not a scatter, so it fuses into the pair function's loop
            s12 = jnp.where(k.rows == k.cols, c1[..., k.rows], s12)
        s12 = cv.snap_unit_correlation(s11, s12, s22)
        scale = cv.power_of_two_scale(v1, v2) if self.homogeneous else None
        # divided per entry, not multiplied by 1 / scale: the divide is what makes XLA's CPU
        # fusion store s12 once; without an expensive op there it copies the conv + select +
        # snap loop into every consumer of s12 (measured 2x slower on Myrtle-5)

        def t_only(a, b, c):
            if scale is None:
                return self.t_fn()(a, cv.poison_large(a, b, c), c)
            return self.t_fn()(a / scale, b / scale, c / scale) * scale

        def pair(a, b, c):
            if k.ntk is None:
                return t_only(a, b, c), None
            if scale is None:
                return self.pair_fn()(a, cv.poison_large(a, b, c), c)
            t, tdot = self.pair_fn()(a / scale, b / scale, c / scale)
            return t * scale, tdot

        nngp, ntk = rules.pointwise(s11, s12, s22, k.ntk, pair=pair)
        cov1 = cov2 = None
        if plan.cov_out and k.replay is None:
            def cov_update(c, v):
                if not k.full:
                    return self.diag_fn()(c)
                a, b = cv.cov_side(v, k.nd, 1), cv.cov_side(v, k.nd, 2)
                return t_only(a, cv.snap_unit_correlation(a, c, b), b)

            cov1 = cov_update(c1, v1)
            cov2 = cov1 if k.same else cov_update(c2, v2)
        return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def explain_name(self, latex: bool) -> str:
        """The name of this layer's T in ``explain``: ``Relu``, ``[Erf(a=1, ...)]``."""
        d = self.describe(short=True).replace("'", "")
        if not latex:
            return d if d.isidentifier() else f"[{d}]"
        head, _, rest = d.partition("(")
        return f"\\mathrm{{{head}}}" + (f"({rest}" if rest else "")

    def explain_rule(self, k, theta, ctx):
        """``rules.pointwise`` on ``explain``'s terms."""
        ctx.use(self)
        name = self.explain_name(ctx.latex)
        t = call(lambda p: f"T_{name}({', '.join(p)})",
                 lambda p: f"T_{{{name}}}({', '.join(p)})")
        td = call(lambda p: f"Tdot_{name}({', '.join(p)})",
                  lambda p: f"\\dot T_{{{name}}}({', '.join(p)})")
        k11, k22 = ctx.variances(k)
        return rules.pointwise(k11, k, k22, theta, pair=lambda a, b, c: (t(a, b, c), td(a, b, c)),
                               bind=ctx.binder("variances: T(s, s, s)"))

    def closed_form_rule(self, st, ctx):
        """``rules.pointwise`` on sympy expressions ``(K11, K12, K22, Theta)``."""
        k11, k12, k22, th = st
        T, Td, D = self.T_expr(), self.Tdot_expr(), self.diag_expr()

        def pair(a, b, c):
            sub = {S.s11: a, S.s12: b, S.s22: c}
            return T.subs(sub, simultaneous=True), Td.subs(sub, simultaneous=True)

        k1, th1 = rules.pointwise(k11, k12, k22, th, pair=pair)
        return D.subs(S.s, k11), k1, D.subs(S.s, k22), th1

    # ---- sympy: what a subclass writes -----------------------------------------------
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

    def special_cases(self) -> Identities:
        """``(what, lhs, rhs)`` identities between this layer's closed forms and others'.

        Proved by ``symbolic.check_special``; every class states the relations it has
        (an empty list is a statement too: the check then covers only the factorisation
        at ``s12 = 0``, which holds for every layer).
        """
        raise NotImplementedError

    def _same_as(self, other: Pointwise, label: str) -> Identities:
        return [(f"T == {label}.T", self.T_expr(), other.T_expr()),
                (f"Tdot == {label}.Tdot", self.Tdot_expr(), other.Tdot_expr())]

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

    def vals_fn(self) -> Callable:
        """``x -> (phi(x), phi'(x))``, printed together so they share subexpressions."""
        return _cached(self, "vals_fn")

    def _name(self) -> str:
        return re.sub(r"\W+", "_", self.describe()).strip("_")

    def _build_phi_fn(self):
        return printer.to_jax(f"phi_{self._name()}", (S.x,), (self.phi_expr(S.x),))

    def _build_vals_fn(self):
        return printer.to_jax(f"vals_{self._name()}", (S.x,),
                              (self.phi_expr(S.x), self.dphi_expr(S.x)))

    def _build_T(self):
        return self._T() if self.closed_form else sympy.Function(
            f"T_{self.spec_name}")(*S.PAIR_ARGS)

    def _build_Tdot(self):
        return self._Tdot() if self.closed_form else sympy.Function(
            f"Tdot_{self.spec_name}")(*S.PAIR_ARGS)

    def _build_diag(self):
        return self._diag() if self.closed_form else sympy.Function(
            f"T_{self.spec_name}")(S.s, S.s, S.s)

    def _build_diag_dot(self):
        return self._diag_dot() if self.closed_form else sympy.Function(
            f"Tdot_{self.spec_name}")(S.s, S.s, S.s)

    def _build_pair_fn(self):
        if not self.closed_form:
            return quadrature.pair_quadrature(self.vals_fn(), with_dot=True, odd=self.odd)
        return printer.to_jax(f"pair_{self._name()}", S.PAIR_ARGS,
                              (self.T_expr(), self.Tdot_expr()))

    def _build_t_fn(self):
        if not self.closed_form:
            return quadrature.pair_quadrature(self.vals_fn(), with_dot=False, odd=self.odd)
        return printer.to_jax(f"t_{self._name()}", S.PAIR_ARGS, (self.T_expr(),))

    def _build_diag_fn(self):
        if not self.closed_form:
            return quadrature.diag_quadrature(self.vals_fn())
        return printer.to_jax(f"diag_{self._name()}", (S.s,), (self.diag_expr(),))


# ---------------------------------------------------------------------------------------------
# the ABRelu family


def _angle():
    """The angle between u and v, written as ``atan2(sqrt(s11 s22 - s12^2), s12)``.

    Equal to the textbook ``acos(s12 / sqrt(s11 s22))`` (proved in check 5), but
    accurate at correlation 1 (``acos`` near 1 loses half the digits) and it
    shares its root with T's first term, so the pair costs one sqrt and one atan2.
    """
    return sympy.atan2(sympy.sqrt(S.s11 * S.s22 - S.s12**2), S.s12)


def _abrelu_T(a, b):
    """ABRelu's T: the arc-cosine kernel generalised to two slopes (used form)."""
    return (a - b) ** 2 / (2 * sympy.pi) * sympy.sqrt(S.s11 * S.s22 - S.s12**2) \
        + S.s12 * _abrelu_Tdot(a, b)


def _abrelu_Tdot(a, b):
    return (a**2 + b**2) / 2 - (a - b) ** 2 / (2 * sympy.pi) * _angle()


def _abrelu_textbook_T(a, b):
    """The same kernel as the paper's appendix C writes it: sin and cos of the angle."""
    r = sympy.sqrt(S.s11 * S.s22)
    th = sympy.acos(S.s12 / r)
    return r / (2 * sympy.pi) * (
        (a - b) ** 2 * sympy.sin(th) + ((a**2 + b**2) * (sympy.pi - th) + 2 * a * b * th)
        * sympy.cos(th)
    )


class _ABReluForms:
    """Closed forms shared by Relu, LeakyRelu, ABRelu (slopes ``_slopes()``)."""

    homogeneous: ClassVar[bool] = True

    def _slopes(self):
        raise NotImplementedError

    def phi_expr(self, x):
        a, b = (_q(v) for v in self._slopes())
        return a * sympy.Min(x, 0) + b * sympy.Max(x, 0)

    def dphi_expr(self, x):
        a, b = (_q(v) for v in self._slopes())
        return sympy.Piecewise((a, x < 0), (b, True))

    def _T(self):
        return _abrelu_T(*(_q(v) for v in self._slopes()))

    def _Tdot(self):
        return _abrelu_Tdot(*(_q(v) for v in self._slopes()))

    def _diag(self):
        a, b = (_q(v) for v in self._slopes())
        return (a**2 + b**2) / 2 * S.s

    def _diag_dot(self):
        a, b = (_q(v) for v in self._slopes())
        return (a**2 + b**2) / 2

    def rewrites(self):
        a, b = (_q(v) for v in self._slopes())
        textbook_dot = (a**2 + b**2) / 2 - (a - b) ** 2 / (2 * sympy.pi) * sympy.acos(
            S.s12 / sympy.sqrt(S.s11 * S.s22)
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

    def special_cases(self) -> Identities:
        return self._same_as(ABRelu(a=0, b=1), "ABRelu(0, 1)")


@dataclass(frozen=True, kw_only=True)
class LeakyRelu(_ABReluForms, Pointwise):
    """``LeakyRelu(alpha)``: x for x > 0, else alpha * x (= ABRelu(alpha, 1))."""

    spec_name = "LeakyRelu"
    alpha: float

    def __post_init__(self) -> None:
        _number(self, "alpha")

    def _slopes(self):
        return (self.alpha, 1)

    def special_cases(self) -> Identities:
        return self._same_as(ABRelu(a=self.alpha, b=1), f"ABRelu({self.alpha}, 1)")


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

    def special_cases(self) -> Identities:
        # swapping the slopes mirrors phi: phi_ba(x) = -phi_ab(-x), same kernel
        return self._same_as(ABRelu(a=self.b, b=self.a), f"ABRelu({self.b}, {self.a})")


# ---------------------------------------------------------------------------------------------
# smooth nonlinearities with closed forms


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

    def _abc(self):
        return _q(self.a), _q(self.b), _q(self.c)

    def phi_expr(self, x):
        a, b, c = self._abc()
        return a * sympy.erf(b * x) + c

    def dphi_expr(self, x):
        a, b, _ = self._abc()
        return 2 * a * b / sympy.sqrt(sympy.pi) * sympy.exp(-(b**2) * x**2)

    def _T(self):
        a, b, c = self._abc()
        den = sympy.sqrt((1 + 2 * b**2 * S.s11) * (1 + 2 * b**2 * S.s22))
        return 2 * a**2 / sympy.pi * sympy.asin(2 * b**2 * S.s12 / den) + c**2

    def _Tdot(self):
        a, b, _ = self._abc()
        d = (1 + 2 * b**2 * S.s11) * (1 + 2 * b**2 * S.s22) - 4 * b**4 * S.s12**2
        return 4 * a**2 * b**2 / (sympy.pi * sympy.sqrt(d))

    def _diag(self):
        a, b, c = self._abc()
        s = S.s
        return 2 * a**2 / sympy.pi * sympy.asin(2 * b**2 * s / (1 + 2 * b**2 * s)) + c**2

    def _diag_dot(self):
        a, b, _ = self._abc()
        return 4 * a**2 * b**2 / (sympy.pi * sympy.sqrt(1 + 4 * b**2 * S.s))

    def special_cases(self) -> Identities:
        base = Erf(a=1, b=self.b, c=0)
        a2, c2 = _q(self.a) ** 2, _q(self.c) ** 2
        # erf is odd, so the cross terms a c E[erf(b u)] vanish: c only adds c^2 to T
        return [("T == a^2 Erf(1, b, 0).T + c^2", self.T_expr(), a2 * base.T_expr() + c2),
                ("Tdot == a^2 Erf(1, b, 0).Tdot", self.Tdot_expr(), a2 * base.Tdot_expr())]


@dataclass(frozen=True, kw_only=True)
class Gelu(Pointwise):
    """``Gelu``: x * Phi(x), the exact form.

    With ``d^2 = (1 + s11)(1 + s22) - s12^2`` (>= 1 on every covariance),
    ``T = s12/4 + (s12 atan(s12/d) + (s12^2 + s11 s22 d^2) / ((1 + s11)(1 + s22) d)) / (2 pi)``
    (Tsuchida et al. 2020); ``atan(s12/d)`` needs no guard since ``d >= 1``.
    """

    spec_name = "Gelu"

    def phi_expr(self, x):
        return x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2

    def dphi_expr(self, x):
        return (1 + sympy.erf(x / sympy.sqrt(2))) / 2 + x * sympy.exp(-(x**2) / 2) / sympy.sqrt(
            2 * sympy.pi
        )

    def _T(self):
        s11, s12, s22 = S.PAIR_ARGS
        p1 = (1 + s11) * (1 + s22)
        d = sympy.sqrt(p1 - s12**2)
        return s12 / 4 + (
            s12 * sympy.atan(s12 / d) + (s12**2 + s11 * s22 * d**2) / (p1 * d)
        ) / (2 * sympy.pi)

    def _Tdot(self):
        s11, s12, s22 = S.PAIR_ARGS
        p1 = (1 + s11) * (1 + s22)
        d2 = p1 - s12**2
        d = sympy.sqrt(d2)
        return sympy.Rational(1, 4) + sympy.atan(s12 / d) / (2 * sympy.pi) + s12 / (
            2 * sympy.pi * d
        ) * (1 / d2 + (1 - s11 * s22) / p1 + 1)

    def _diag(self):
        s = S.s
        r = sympy.sqrt(1 + 2 * s)
        return s * (sympy.Rational(1, 4) + (s / ((1 + s) * r) + sympy.atan(s / r) / 2) / sympy.pi)

    def _diag_dot(self):
        s = S.s
        r = sympy.sqrt(1 + 2 * s)
        return (
            sympy.Rational(1, 4)
            + sympy.atan(s / r) / (2 * sympy.pi)
            + s / (2 * sympy.pi * r) * (1 / (1 + 2 * s) + (1 - s**2) / (1 + s) ** 2 + 1)
        )

    def special_cases(self) -> Identities:
        return []


def sin_forms(a, b, c) -> tuple:
    """``(T, Tdot, diag, diag_dot)`` of ``a sin(b x + c)`` for sympy numbers ``a, b, c``.

    A function of exact values (not of a layer's float fields), so that other layers'
    identities can use it with arguments such as ``c + pi / 2`` (Cos) or ``sqrt(2 gamma)``
    (Rbf) and be proved exactly.
    """
    s11, s12, s22 = S.PAIR_ARGS
    minus = sympy.exp(-(b**2) * (s11 + s22 - 2 * s12) / 2)
    plus = sympy.exp(-(b**2) * (s11 + s22 + 2 * s12) / 2) * sympy.cos(2 * c)
    d = sympy.exp(-2 * b**2 * S.s) * sympy.cos(2 * c)
    return (a**2 / 2 * (minus - plus), a**2 * b**2 / 2 * (minus + plus),
            a**2 / 2 * (1 - d), a**2 * b**2 / 2 * (1 + d))


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

    def _abc(self):
        return _q(self.a), _q(self.b), _q(self.c)

    def phi_expr(self, x):
        a, b, c = self._abc()
        return a * sympy.sin(b * x + c)

    def dphi_expr(self, x):
        a, b, c = self._abc()
        return a * b * sympy.cos(b * x + c)

    def _T(self):
        return sin_forms(*self._abc())[0]

    def _Tdot(self):
        return sin_forms(*self._abc())[1]

    def _diag(self):
        return sin_forms(*self._abc())[2]

    def _diag_dot(self):
        return sin_forms(*self._abc())[3]

    def special_cases(self) -> Identities:
        base = Sin(a=1, b=self.b, c=self.c)
        a2 = _q(self.a) ** 2
        return [("T == a^2 Sin(1, b, c).T", self.T_expr(), a2 * base.T_expr()),
                ("Tdot == a^2 Sin(1, b, c).Tdot", self.Tdot_expr(), a2 * base.Tdot_expr())]


@dataclass(frozen=True, kw_only=True)
class Identity(Pointwise):
    """``Identity``: x (T = s12, Tdot = 1). Linear, so it keeps a Gaussian input Gaussian."""

    spec_name = "Identity"
    gaussian: ClassVar[str] = "keeps"
    needs_gaussian_input: ClassVar[bool] = False

    def phi_expr(self, x):
        return x

    def dphi_expr(self, x):
        return sympy.Integer(1)

    def _T(self):
        return S.s12

    def _Tdot(self):
        return sympy.Integer(1)

    def _diag(self):
        return S.s

    def _diag_dot(self):
        return sympy.Integer(1)

    def special_cases(self) -> Identities:
        return self._same_as(ABRelu(a=1, b=1), "ABRelu(1, 1)")


# ---------------------------------------------------------------------------------------------
# no closed form: quadrature of the printed phi, phi'


@dataclass(frozen=True, kw_only=True)
class Tanh(Pointwise):
    """``Tanh``: no closed form; kernels by the quadrature of ``compiler/quadrature.py``.

    ``T_expr`` / ``Tdot_expr`` are unevaluated sympy functions (for ``explain``).
    """

    spec_name = "Tanh"
    closed_form: ClassVar[bool] = False
    odd: ClassVar[bool] = True

    def phi_expr(self, x):
        return sympy.tanh(x)

    def dphi_expr(self, x):
        return 1 - sympy.tanh(x) ** 2

    def special_cases(self) -> Identities:
        return []


@dataclass(frozen=True, kw_only=True)
class Softplus(Pointwise):
    """``Softplus(beta=1)``: log(1 + exp(beta * x)) / beta (no closed form: quadrature)."""

    spec_name = "Softplus"
    closed_form: ClassVar[bool] = False
    beta: float = 1.0

    def __post_init__(self) -> None:
        _number(self, "beta")
        if self.beta <= 0:
            raise LayerArgError("beta", f"'beta' must be > 0, got {self.beta!r}")

    def phi_expr(self, x):
        b = _q(self.beta)
        return sympy.log(1 + sympy.exp(b * x)) / b

    def dphi_expr(self, x):
        b = _q(self.beta)
        return 1 / (1 + sympy.exp(-b * x))

    def special_cases(self) -> Identities:
        return []
