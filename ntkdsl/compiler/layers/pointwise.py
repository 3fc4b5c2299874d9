"""Pointwise nonlinearities.

Each class holds its parameters and (issue 3) its closed forms:
``T = E[phi(u) phi(v)]`` and ``Tdot = E[phi'(u) phi'(v)]`` over
``(u, v) ~ N(0, [[s11, s12], [s12, s22]])``, written once as sympy
expressions; the same expressions are checked in ``compiler/symbolic.py`` and
printed into the JAX code that runs. ``phi`` is the finite-width function.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Layer, LayerArgError


def _number(layer: Layer, *names: str) -> None:
    for n in names:
        v = getattr(layer, n)
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise LayerArgError(n, f"'{n}' must be a number, got {v!r}")


@dataclass(frozen=True, kw_only=True)
class Pointwise(Layer):
    """Base of the elementwise nonlinearities; the shape is unchanged."""


@dataclass(frozen=True, kw_only=True)
class Relu(Pointwise):
    """``Relu``: max(x, 0)."""

    spec_name = "Relu"


@dataclass(frozen=True, kw_only=True)
class LeakyRelu(Pointwise):
    """``LeakyRelu(alpha)``: x for x > 0, else alpha * x."""

    spec_name = "LeakyRelu"
    alpha: float

    def __post_init__(self) -> None:
        _number(self, "alpha")


@dataclass(frozen=True, kw_only=True)
class ABRelu(Pointwise):
    """``ABRelu(a, b)``: a * min(x, 0) + b * max(x, 0)."""

    spec_name = "ABRelu"
    a: float
    b: float

    def __post_init__(self) -> None:
        _number(self, "a", "b")


@dataclass(frozen=True, kw_only=True)
class Erf(Pointwise):
    """``Erf(a=1, b=1, c=0)``: a * erf(b * x) + c."""

    spec_name = "Erf"
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        _number(self, "a", "b", "c")


@dataclass(frozen=True, kw_only=True)
class Gelu(Pointwise):
    """``Gelu``: x * Phi(x), the exact form."""

    spec_name = "Gelu"


@dataclass(frozen=True, kw_only=True)
class Sin(Pointwise):
    """``Sin(a=1, b=1, c=0)``: a * sin(b * x + c)."""

    spec_name = "Sin"
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        _number(self, "a", "b", "c")


@dataclass(frozen=True, kw_only=True)
class Tanh(Pointwise):
    """``Tanh``: no closed form; kernels by Gauss-Hermite quadrature."""

    spec_name = "Tanh"


@dataclass(frozen=True, kw_only=True)
class Identity(Pointwise):
    """``Identity``: x."""

    spec_name = "Identity"
