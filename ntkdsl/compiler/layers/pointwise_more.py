"""More pointwise nonlinearities: the rest of the built-in table of the language.

Closed forms (each proved by ``compiler/symbolic.py`` like those of ``pointwise.py``):
``Abs``, ``Sign``, ``Cos``, ``Exp``, ``Gaussian``, ``Rbf``, ``Monomial``,
``RectifiedMonomial`` (the arc-cosine kernels of every order), ``Polynomial`` and
``Hermite``. No closed form (the generic quadrature of ``compiler/quadrature.py``):
``Sigmoid``.

The polynomial kernels are computed two independent ways, which the special cases
then prove equal: through the Hermite expansion of the monomials
(``x^n = sum_m n! / (m! 2^k k!) He_m(x)``, ``n - m = 2k``, and
``E[He_m(z1) He_l(z2)] = delta_ml m! rho^m``; used by ``Monomial``) and through the
moment generating function ``E[exp(a u + b v)] = exp((a^2 s11 + 2 a b s12 + b^2 s22) / 2)``
(used by ``Polynomial`` and ``Hermite``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

from ..._lazy import lazy
from .base import LayerArgError
from .pointwise import (
    Identities,
    Pointwise,
    Relu,
    _abrelu_T,
    _abrelu_Tdot,
    _angle,
    _number,
    _q,
    sin_forms,
)

sympy = lazy("sympy")
S = lazy("ntkdsl.compiler.symbols")


def _degree(layer: Pointwise, name: str = "degree") -> None:
    """Check a non-negative integer argument (an integer-valued float is accepted as one)."""
    v = getattr(layer, name)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
        object.__setattr__(layer, name, v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise LayerArgError(name, f"'{name}' must be a non-negative integer, got {v!r}")


def _dfact(n: int) -> int:
    """``n!!`` with ``(-1)!! = 1``."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1


# ---------------------------------------------------------------------------------------------
# Gaussian moments of polynomials, two ways


@functools.cache
def hermite_moment(i: int, j: int):
    """``E[u^i v^j]`` through the Hermite expansion of ``x^i`` and ``x^j``.

    With ``u = sqrt(s11) z1``, ``v = sqrt(s22) z2`` and ``corr(z1, z2) = rho``,
    ``E[z1^i z2^j] = sum_m c_im c_jm m! rho^m`` (``c_nm`` the Hermite coefficients of ``x^n``),
    so ``E[u^i v^j] = sum_m c_im c_jm m! s12^m s11^((i-m)/2) s22^((j-m)/2)``: a polynomial,
    since ``i - m`` and ``j - m`` are even.
    """
    def c(n, m):
        k = (n - m) // 2
        return sympy.Integer(math.factorial(n)) / (
            math.factorial(m) * 2**k * math.factorial(k))

    out = sympy.Integer(0)
    for m in range(min(i, j) + 1):
        if (i - m) % 2 or (j - m) % 2:
            continue
        out += c(i, m) * c(j, m) * math.factorial(m) * S.s12**m \
            * S.s11 ** ((i - m) // 2) * S.s22 ** ((j - m) // 2)
    return out


@functools.cache
def mgf_moment(i: int, j: int):
    """``E[u^i v^j] = i! j! [a^i b^j] exp(Q / 2)``, ``Q = a^2 s11 + 2 a b s12 + b^2 s22``.

    Only the term ``(Q/2)^k / k!`` with ``2k = i + j`` has total degree ``i + j``.
    """
    if (i + j) % 2:
        return sympy.Integer(0)
    a, b = sympy.symbols("a b")
    k = (i + j) // 2
    q = (a**2 * S.s11 + 2 * a * b * S.s12 + b**2 * S.s22) / 2
    coeff = sympy.Poly(sympy.expand(q**k), a, b).coeff_monomial(a**i * b**j)
    return sympy.expand(coeff * math.factorial(i) * math.factorial(j) / math.factorial(k))


def _poly_T(coef, moment=mgf_moment):
    """``E[p(u) p(v)]`` for ``p(x) = sum_i coef[i] x^i`` (coefficients sympy numbers)."""
    n = len(coef)
    return sympy.expand(sum(coef[i] * coef[j] * moment(i, j)
                            for i in range(n) for j in range(n) if coef[i] and coef[j]))


def _poly_Tdot(coef, moment=mgf_moment):
    return _poly_T([i * c for i, c in enumerate(coef)][1:], moment)


def _poly_diag(coef):
    """``E[p(u)^2]``, ``u ~ N(0, s)``, from the 1-D moments ``E[u^2k] = (2k-1)!! s^k``."""
    n = len(coef)
    return sympy.expand(sum(coef[i] * coef[j] * _dfact(i + j - 1) * S.s ** ((i + j) // 2)
                            for i in range(n) for j in range(n)
                            if (i + j) % 2 == 0 and coef[i] and coef[j]))


def _poly_diag_dot(coef):
    return _poly_diag([i * c for i, c in enumerate(coef)][1:])


class _PolynomialForms:
    """Closed forms of a polynomial ``phi`` with coefficients ``_coefs()`` (sympy numbers)."""

    def _coefs(self) -> list:
        raise NotImplementedError

    def phi_expr(self, x):
        return sum((c * x**i for i, c in enumerate(self._coefs())), sympy.Integer(0))

    def dphi_expr(self, x):
        return sum((i * c * x ** (i - 1) for i, c in enumerate(self._coefs()) if i),
                   sympy.Integer(0))

    def _T(self):
        return _poly_T(self._coefs())

    def _Tdot(self):
        return _poly_Tdot(self._coefs())

    def _diag(self):
        return _poly_diag(self._coefs())

    def _diag_dot(self):
        return _poly_diag_dot(self._coefs())


# ---------------------------------------------------------------------------------------------
# piecewise: Abs, Sign, the rectified monomials


@dataclass(frozen=True, kw_only=True)
class Abs(Pointwise):
    """``Abs``: ``|x|`` (= ``ABRelu(-1, 1)``).

    ``T = (2 sqrt(s11 s22 - s12^2) + s12 (pi - 2 theta)) / pi`` with ``theta`` the angle
    ``atan2(sqrt(s11 s22 - s12^2), s12)``; ``Tdot = 1 - 2 theta / pi``.
    """

    spec_name = "Abs"
    homogeneous: ClassVar[bool] = True

    def phi_expr(self, x):
        return sympy.Abs(x)

    def dphi_expr(self, x):
        return sympy.Piecewise((-1, x < 0), (1, True))

    def _T(self):
        return _abrelu_T(-1, 1)

    def _Tdot(self):
        return _abrelu_Tdot(-1, 1)

    def _diag(self):
        return S.s

    def _diag_dot(self):
        return sympy.Integer(1)

    def special_cases(self) -> Identities:
        from .pointwise import ABRelu
        s11, s12, s22 = S.PAIR_ARGS
        textbook = 2 / sympy.pi * (sympy.sqrt(s11 * s22 - s12**2)
                                   + s12 * sympy.asin(s12 / sympy.sqrt(s11 * s22)))
        return [*self._same_as(ABRelu(a=-1, b=1), "ABRelu(-1, 1)"),
                ("T == 2/pi (sqrt(s11 s22 - s12^2) + s12 asin(rho))", self.T_expr(), textbook)]


@dataclass(frozen=True, kw_only=True)
class Sign(Pointwise):
    """``Sign``: ``sign(x)``; NNGP only.

    ``T = 1 - 2 theta / pi = (2 / pi) asin(rho)`` (written with the angle
    ``theta = atan2(sqrt(s11 s22 - s12^2), s12)``, exact at correlation 1). phi jumps at 0,
    so ``phi' = 0`` almost everywhere: ``Tdot = 0`` and the NTK gets no contribution through
    the layer (gradients do not flow through a sign). Price's theorem does not apply;
    the check proves ``Tdot == 0`` instead (``Pointwise.jump``). At exactly zero variance
    ``T(0, 0, 0) = 0 = sign(0)^2`` but the diagonal form gives its limit 1.
    """

    spec_name = "Sign"
    jump: ClassVar[bool] = True

    def phi_expr(self, x):
        return sympy.sign(x)

    def dphi_expr(self, x):
        return sympy.Integer(0)

    def _T(self):
        return 1 - 2 * _angle() / sympy.pi

    def _Tdot(self):
        return sympy.Integer(0)

    def _diag(self):
        return sympy.Integer(1)

    def _diag_dot(self):
        return sympy.Integer(0)

    def special_cases(self) -> Identities:
        s11, s12, s22 = S.PAIR_ARGS
        return [("T == 2/pi asin(rho)", self.T_expr(),
                 2 / sympy.pi * sympy.asin(s12 / sympy.sqrt(s11 * s22)))]


@functools.cache
def arccos_J(n: int):
    """Cho & Saul's ``J_n(theta)`` as ``(P, Q)``: ``J_n = sin(theta) P(cos theta) +
    (pi - theta) Q(cos theta)``, P and Q polynomials in the symbol ``C = cos(theta)``.

    ``J_n = (-1)^n sin(theta)^(2n+1) (1/sin(theta) d/dtheta)^n ((pi - theta) / sin(theta))``
    (Cho & Saul 2009, eq. 4), expanded by sympy and reduced with ``sin^2 = 1 - cos^2``.
    """
    t, C, Sn, W = sympy.symbols("theta C Sn W")
    f = (sympy.pi - t) / sympy.sin(t)
    for _ in range(n):
        f = sympy.diff(f, t) / sympy.sin(t)
    J = sympy.expand((-1) ** n * sympy.sin(t) ** (2 * n + 1) * f)
    J = sympy.expand(J.subs({sympy.sin(t): Sn, sympy.cos(t): C}).subs(t, sympy.pi - W))
    poly = sympy.Poly(J, Sn, W)
    P = Q = sympy.Integer(0)
    for (ks, kw), coeff in poly.terms():
        term = coeff * (1 - C**2) ** (ks // 2)
        if ks % 2 and kw == 0:
            P += term
        elif ks % 2 == 0 and kw == 1:
            Q += term
        else:  # pragma: no cover - the structure is a theorem; fail loudly if it is not
            raise AssertionError(f"J_{n}: unexpected term Sn^{ks} W^{kw}")
    return sympy.expand(P), sympy.expand(Q), C


def _homogenise(p, C, degree: int):
    """``R^degree p(s12 / R)`` with ``R = sqrt(s11 s22)``, as a polynomial (even powers of R)."""
    if p == 0:
        return sympy.Integer(0)
    R = sympy.Symbol("R", positive=True)
    e = sympy.expand(R**degree * p.subs(C, S.s12 / R))
    out = sympy.Integer(0)
    for term in sympy.Add.make_args(e):
        k = sympy.degree(term, R)
        if k % 2:  # pragma: no cover
            raise AssertionError(f"odd power of R in {term}")
        out += term.subs(R, 1) * (S.s11 * S.s22) ** (k // 2)
    return sympy.expand(out)


def _det_root():
    """``sqrt(s11 s22 - s12^2)`` written ``sqrt((sqrt(s11 s22) - s12)(sqrt(s11 s22) + s12))``.

    The printer rewrites a bare ``sqrt(s11 s22 - s12^2)`` into this form (exactly 0 at
    correlation 1), but only when ``s11 s22`` is not also a shared subexpression of the
    polynomial factors; written so here, the form survives common-subexpression elimination.
    """
    r = sympy.sqrt(S.s11) * sympy.sqrt(S.s22)
    return sympy.sqrt((r - S.s12) * (r + S.s12))


def rectified_T(n: int):
    """The arc-cosine kernel of order ``n``: ``E[max(u,0)^n max(v,0)^n]`` (``Theta(u)Theta(v)``
    for ``n = 0``) = ``(s11 s22)^(n/2) J_n(theta) / (2 pi)``."""
    P, Q, C = arccos_J(n)
    root = _det_root()
    angle = sympy.atan2(root, S.s12)
    return (root * _homogenise(P, C, n - 1) + (sympy.pi - angle) * _homogenise(Q, C, n)) / (
        2 * sympy.pi)


def rectified_textbook_T(n: int):
    """Cho & Saul's form: ``(s11 s22)^(n/2) J_n(theta) / (2 pi)``, ``theta = acos(rho)``, with
    ``J_n`` the derivative formula itself (not reduced to polynomials)."""
    t = sympy.Symbol("theta")
    f = (sympy.pi - t) / sympy.sin(t)
    for _ in range(n):
        f = sympy.diff(f, t) / sympy.sin(t)
    J = (-1) ** n * sympy.sin(t) ** (2 * n + 1) * f
    r = sympy.sqrt(S.s11 * S.s22)
    return r**n * J.subs(t, sympy.acos(S.s12 / r)) / (2 * sympy.pi)


@dataclass(frozen=True, kw_only=True)
class RectifiedMonomial(Pointwise):
    """``RectifiedMonomial(degree)``: ``max(x, 0)^degree`` (degree 0: the step ``x >= 0``).

    ``T`` is the arc-cosine kernel of that order (Cho & Saul 2009):
    ``T_n = (s11 s22)^(n/2) J_n(theta) / (2 pi)``, ``J_0 = pi - theta``,
    ``J_1 = sin + (pi - theta) cos`` (Relu), ``J_2 = 3 sin cos + (pi - theta)(1 + 2 cos^2)``,
    ... (``arccos_J`` derives ``J_n`` for any ``n``). ``phi' = n phi_(n-1)``, so the
    derivative kernel is ``Tdot_n = n^2 T_(n-1)``; for degree 0 the step jumps, ``Tdot = 0``
    (NNGP only, like ``Sign``). Diagonal: ``(2n - 1)!! s^n / 2``.
    """

    spec_name = "RectifiedMonomial"
    degree: int

    def __post_init__(self) -> None:
        _degree(self)

    @property
    def jump(self) -> bool:  # type: ignore[override]
        return self.degree == 0

    @property
    def homogeneous(self) -> bool:  # type: ignore[override]
        return self.degree == 1

    def phi_expr(self, x):
        n = self.degree
        if n == 0:
            return sympy.Piecewise((0, x < 0), (1, True))
        return sympy.Max(x, 0) ** n

    def dphi_expr(self, x):
        n = self.degree
        if n == 0:
            return sympy.Integer(0)
        if n == 1:
            return sympy.Piecewise((0, x < 0), (1, True))
        return n * sympy.Max(x, 0) ** (n - 1)

    def _T(self):
        return rectified_T(self.degree)

    def _Tdot(self):
        n = self.degree
        return sympy.Integer(0) if n == 0 else n**2 * rectified_T(n - 1)

    def _diag(self):
        n = self.degree
        return sympy.Rational(_dfact(2 * n - 1), 2) * S.s**n

    def _diag_dot(self):
        n = self.degree
        return sympy.Integer(0) if n == 0 else sympy.Rational(
            n**2 * _dfact(2 * n - 3), 2) * S.s ** (n - 1)

    def rewrites(self):
        return (("T: Cho & Saul's J_n(acos rho) reduced to polynomials in s11 s22, s12, "
                 "sqrt(s11 s22 - s12^2) and atan2", rectified_textbook_T(self.degree),
                 self.T_expr()),)

    def special_cases(self) -> Identities:
        n = self.degree
        mirrored = self.T_expr().subs(S.s12, -S.s12)
        # max(x,0)^n + (-1)^n max(-x,0)^n = x^n, and the two halves are mirror images
        out = [("2 (T(s12) + (-1)^n T(-s12)) == Monomial(n).T",
                2 * (self.T_expr() + (-1) ** n * mirrored), Monomial(degree=n).T_expr())]
        if n == 1:
            out += self._same_as(Relu(), "Relu")
        return out


# ---------------------------------------------------------------------------------------------
# smooth nonlinearities with closed forms


@dataclass(frozen=True, kw_only=True)
class Cos(Pointwise):
    """``Cos(a=1, b=1, c=0)``: ``a cos(b x + c)`` (= ``Sin(a, b, c + pi/2)``).

    ``T = a^2/2 (exp(-b^2 (s11 + s22 - 2 s12)/2) + cos(2c) exp(-b^2 (s11 + s22 + 2 s12)/2))``,
    ``Tdot`` the same with ``a b`` for ``a`` and ``-`` for ``+``.
    """

    spec_name = "Cos"
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        _number(self, "a", "b", "c")

    def _abc(self):
        return _q(self.a), _q(self.b), _q(self.c)

    def phi_expr(self, x):
        a, b, c = self._abc()
        return a * sympy.cos(b * x + c)

    def dphi_expr(self, x):
        a, b, c = self._abc()
        return -a * b * sympy.sin(b * x + c)

    def _parts(self):
        s11, s12, s22 = S.PAIR_ARGS
        a, b, c = self._abc()
        minus = sympy.exp(-(b**2) * (s11 + s22 - 2 * s12) / 2)
        plus = sympy.exp(-(b**2) * (s11 + s22 + 2 * s12) / 2) * sympy.cos(2 * c)
        return a, b, minus, plus

    def _T(self):
        a, _, minus, plus = self._parts()
        return a**2 / 2 * (minus + plus)

    def _Tdot(self):
        a, b, minus, plus = self._parts()
        return a**2 * b**2 / 2 * (minus - plus)

    def _diag(self):
        a, b, c = self._abc()
        return a**2 / 2 * (1 + sympy.exp(-2 * b**2 * S.s) * sympy.cos(2 * c))

    def _diag_dot(self):
        a, b, c = self._abc()
        return a**2 * b**2 / 2 * (1 - sympy.exp(-2 * b**2 * S.s) * sympy.cos(2 * c))

    def special_cases(self) -> Identities:
        a, b, c = self._abc()
        T, Td, _, _ = sin_forms(a, b, c + sympy.pi / 2)
        return [("T == Sin(a, b, c + pi/2).T", self.T_expr(), T),
                ("Tdot == Sin(a, b, c + pi/2).Tdot", self.Tdot_expr(), Td)]


@dataclass(frozen=True, kw_only=True)
class Exp(Pointwise):
    """``Exp(a=1, b=1)``: ``a exp(b x)``.

    ``E[exp(b (u + v))] = exp(b^2 var(u + v) / 2)``: ``T = a^2 exp(b^2 (s11 + 2 s12 + s22) / 2)``
    and ``Tdot = b^2 T``.
    """

    spec_name = "Exp"
    a: float = 1.0
    b: float = 1.0

    def __post_init__(self) -> None:
        _number(self, "a", "b")

    def phi_expr(self, x):
        return _q(self.a) * sympy.exp(_q(self.b) * x)

    def dphi_expr(self, x):
        return _q(self.a) * _q(self.b) * sympy.exp(_q(self.b) * x)

    def _T(self):
        a, b = _q(self.a), _q(self.b)
        return a**2 * sympy.exp(b**2 * (S.s11 + 2 * S.s12 + S.s22) / 2)

    def _Tdot(self):
        return _q(self.b) ** 2 * self._T()

    def _diag(self):
        a, b = _q(self.a), _q(self.b)
        return a**2 * sympy.exp(2 * b**2 * S.s)

    def _diag_dot(self):
        return _q(self.b) ** 2 * self._diag()

    def special_cases(self) -> Identities:
        base = Exp(a=1, b=self.b)
        a2 = _q(self.a) ** 2
        return [("T == a^2 Exp(1, b).T", self.T_expr(), a2 * base.T_expr()),
                ("Tdot == a^2 Exp(1, b).Tdot", self.Tdot_expr(), a2 * base.Tdot_expr())]


@dataclass(frozen=True, kw_only=True)
class Gaussian(Pointwise):
    """``Gaussian(a=1, b=-1)``: ``a exp(b x^2)``, ``b < 0``.

    ``E[exp(b (u^2 + v^2))] = det(I - 2 b Sigma)^(-1/2)``: with
    ``D = (1 - 2 b s11)(1 - 2 b s22) - 4 b^2 s12^2`` (>= 1 for b < 0),
    ``T = a^2 / sqrt(D)`` and ``Tdot = 4 a^2 b^2 s12 / D^(3/2)``.
    """

    spec_name = "Gaussian"
    a: float = 1.0
    b: float = -1.0

    def __post_init__(self) -> None:
        _number(self, "a", "b")
        if self.b >= 0:
            raise LayerArgError("b", f"'b' must be < 0 (a * exp(b * x**2) with b >= 0 grows "
                                     f"too fast for a Gaussian expectation), got {self.b!r}")

    def phi_expr(self, x):
        return _q(self.a) * sympy.exp(_q(self.b) * x**2)

    def dphi_expr(self, x):
        a, b = _q(self.a), _q(self.b)
        return 2 * a * b * x * sympy.exp(b * x**2)

    def _D(self):
        b = _q(self.b)
        return (1 - 2 * b * S.s11) * (1 - 2 * b * S.s22) - 4 * b**2 * S.s12**2

    def _T(self):
        return _q(self.a) ** 2 / sympy.sqrt(self._D())

    def _Tdot(self):
        a, b = _q(self.a), _q(self.b)
        return 4 * a**2 * b**2 * S.s12 / self._D() ** sympy.Rational(3, 2)

    def _diag(self):
        return _q(self.a) ** 2 / sympy.sqrt(1 - 4 * _q(self.b) * S.s)

    def _diag_dot(self):
        a, b = _q(self.a), _q(self.b)
        return 4 * a**2 * b**2 * S.s / (1 - 4 * b * S.s) ** sympy.Rational(3, 2)

    def special_cases(self) -> Identities:
        base = Gaussian(a=1, b=self.b)
        a2 = _q(self.a) ** 2
        return [("T == a^2 Gaussian(1, b).T", self.T_expr(), a2 * base.T_expr()),
                ("Tdot == a^2 Gaussian(1, b).Tdot", self.Tdot_expr(), a2 * base.Tdot_expr())]


@dataclass(frozen=True, kw_only=True)
class Rbf(Pointwise):
    """``Rbf(gamma=1)``: ``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``.

    Its NNGP kernel is the RBF kernel of its input: ``T = exp(-gamma (s11 + s22 - 2 s12))``
    (``= exp(-gamma |x - x'|^2 / d)`` after ``Dense(W_std=1)`` on inputs of dimension d);
    ``Tdot = 2 gamma T``; the diagonal is 1.
    """

    spec_name = "Rbf"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        _number(self, "gamma")
        if self.gamma < 0:
            raise LayerArgError("gamma", f"'gamma' must be >= 0, got {self.gamma!r}")

    def _b(self):
        return sympy.sqrt(2 * _q(self.gamma))

    def phi_expr(self, x):
        return sympy.sqrt(2) * sympy.sin(self._b() * x + sympy.pi / 4)

    def dphi_expr(self, x):
        return sympy.sqrt(2) * self._b() * sympy.cos(self._b() * x + sympy.pi / 4)

    def _T(self):
        return sympy.exp(-_q(self.gamma) * (S.s11 + S.s22 - 2 * S.s12))

    def _Tdot(self):
        return 2 * _q(self.gamma) * self._T()

    def _diag(self):
        return sympy.Integer(1)

    def _diag_dot(self):
        return 2 * _q(self.gamma)

    def special_cases(self) -> Identities:
        T, Td, _, _ = sin_forms(sympy.sqrt(2), self._b(), sympy.pi / 4)
        return [("T == Sin(sqrt(2), sqrt(2 gamma), pi/4).T", self.T_expr(), T),
                ("Tdot == Sin(sqrt(2), sqrt(2 gamma), pi/4).Tdot", self.Tdot_expr(), Td)]


# ---------------------------------------------------------------------------------------------
# polynomials


@dataclass(frozen=True, kw_only=True)
class Monomial(Pointwise):
    """``Monomial(degree)``: ``x^degree``.

    ``T = E[u^n v^n] = sum_m c_nm^2 m! s12^m (s11 s22)^((n-m)/2)`` (the Hermite expansion,
    :func:`hermite_moment`), a polynomial; ``Tdot = n^2 E[u^(n-1) v^(n-1)]``; the diagonal
    ``(2n - 1)!! s^n``.
    """

    spec_name = "Monomial"
    degree: int

    def __post_init__(self) -> None:
        _degree(self)

    def phi_expr(self, x):
        return x**self.degree

    def dphi_expr(self, x):
        n = self.degree
        return sympy.Integer(0) if n == 0 else n * x ** (n - 1)

    def _T(self):
        return hermite_moment(self.degree, self.degree)

    def _Tdot(self):
        n = self.degree
        return sympy.Integer(0) if n == 0 else n**2 * hermite_moment(n - 1, n - 1)

    def _diag(self):
        return _dfact(2 * self.degree - 1) * S.s**self.degree

    def _diag_dot(self):
        n = self.degree
        return sympy.Integer(0) if n == 0 else n**2 * _dfact(2 * n - 3) * S.s ** (n - 1)

    def special_cases(self) -> Identities:
        n = self.degree
        unit = Polynomial(coef=(0,) * n + (1,))
        out = self._same_as(unit, f"Polynomial(e_{n}) (moment generating function)")
        if n == 1:
            from .pointwise import Identity
            out += self._same_as(Identity(), "Identity")
        return out


@dataclass(frozen=True, kw_only=True)
class Polynomial(_PolynomialForms, Pointwise):
    """``Polynomial(coef)``: ``coef[0] + coef[1] x + coef[2] x^2 + ...``.

    ``T = sum_ij c_i c_j E[u^i v^j]`` with the Gaussian moments from the moment generating
    function (:func:`mgf_moment`, Isserlis' theorem in closed form), ``Tdot`` the same for
    ``p'``: polynomials in ``s11, s12, s22``.
    """

    spec_name = "Polynomial"
    coef: tuple[float, ...]
    # the coefficients are a tuple of reals, not one real: the expander must not convert it
    float_args: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        c = self.coef
        if isinstance(c, list):
            c = tuple(c)
        if isinstance(c, int | float) and not isinstance(c, bool):
            c = (c,)
        if not isinstance(c, tuple) or not c or any(
                isinstance(v, bool) or not isinstance(v, int | float) or v != v
                or v in (float("inf"), float("-inf")) for v in c):
            raise LayerArgError("coef", "'coef' must be a non-empty tuple of numbers "
                                        f"(c0, c1, ...), got {self.coef!r}")
        object.__setattr__(self, "coef", c)

    def _coefs(self):
        return [_q(v) for v in self.coef]

    def special_cases(self) -> Identities:
        c = self._coefs()
        return [("T == sum c_i c_j E[u^i v^j] (Hermite expansion)", self.T_expr(),
                 _poly_T(c, hermite_moment)),
                ("Tdot == sum i j c_i c_j E[u^(i-1) v^(j-1)] (Hermite expansion)",
                 self.Tdot_expr(), _poly_Tdot(c, hermite_moment))]


@dataclass(frozen=True, kw_only=True)
class Hermite(_PolynomialForms, Pointwise):
    """``Hermite(degree)``: the normalised probabilists' Hermite polynomial ``He_n(x) / sqrt(n!)``.

    ``T`` for any variances from the Gaussian moments of its coefficients (as
    ``Polynomial``); at unit variances ``T = s12^n`` and ``Tdot = n s12^(n-1)`` (orthogonality,
    proved as special cases). ``He_n' = n He_(n-1)``.
    """

    spec_name = "Hermite"
    degree: int

    def __post_init__(self) -> None:
        _degree(self)

    def _coefs(self):
        n = self.degree
        p = sympy.Poly(sympy.hermite_prob(n, S.x), S.x).all_coeffs()[::-1]
        norm = sympy.sqrt(sympy.factorial(n))
        return [sympy.Integer(v) / norm for v in p]

    def special_cases(self) -> Identities:
        n = self.degree
        unit = {S.s11: 1, S.s22: 1}
        out = [(f"T(1, s12, 1) == s12^{n} (orthogonality)", self.T_expr().subs(unit), S.s12**n),
               (f"Tdot(1, s12, 1) == {n} s12^{max(n - 1, 0)}", self.Tdot_expr().subs(unit),
                n * S.s12 ** (n - 1) if n else sympy.Integer(0))]
        if n == 1:
            from .pointwise import Identity
            out += self._same_as(Identity(), "Identity")
        return out


# ---------------------------------------------------------------------------------------------
# no closed form


@dataclass(frozen=True, kw_only=True)
class Sigmoid(Pointwise):
    """``Sigmoid``: ``1 / (1 + exp(-x))`` (no closed form: quadrature).

    Written ``(1 + tanh(x / 2)) / 2`` (equal; proved as a rewrite), which neither
    overflows nor gives a NaN gradient at large ``|x|``; ``phi' = (1 - tanh(x/2)^2) / 4``.
    Accuracy of its kernels: ``compiler/quadrature.py``.
    """

    spec_name = "Sigmoid"
    closed_form: ClassVar[bool] = False

    def phi_expr(self, x):
        return (1 + sympy.tanh(x / 2)) / 2

    def dphi_expr(self, x):
        return (1 - sympy.tanh(x / 2) ** 2) / 4

    def rewrites(self):
        x = S.x
        # tanh rewritten in exponentials (an exact sympy transformation), so simplify sees it
        return (("phi: 1 / (1 + exp(-x)) == (1 + tanh(x/2)) / 2", 1 / (1 + sympy.exp(-x)),
                 self.phi_expr(x).rewrite(sympy.exp)),)

    def special_cases(self) -> Identities:
        return []
