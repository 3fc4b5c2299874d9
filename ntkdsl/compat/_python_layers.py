"""Nonlinearities given as Python functions (``stax.Elementwise``, ``stax.ElementwiseNumerical``).

A spec never runs Python, so these exist only in layer graphs built by the stax
front end: they are :class:`~ntkdsl.compiler.layers.Pointwise` nodes without a
``spec_name`` (not in the language's registry), whose kernel functions come from
the user's functions instead of sympy expressions. Everything downstream (the
kernel rule of ``Pointwise``, the checks, the tiling) is the native one.
``to_spec`` refuses them with a message that says how to write the nonlinearity
as an ``activation`` formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ..compiler import quadrature
from ..compiler.layers import Pointwise


@dataclass(frozen=True, kw_only=True)
class PythonPointwise(Pointwise):
    """Base: a nonlinearity whose ``phi`` (and kernels) are Python callables."""

    fn: Callable | None = None
    peer_name: ClassVar[str] = "Elementwise"

    def describe(self, short: bool = False) -> str:
        f = getattr(self.fn, "__name__", "fn")
        return f"{self.peer_name}({f})"

    def arguments(self) -> dict[str, object]:
        return {"fn": getattr(self.fn, "__name__", "fn")}

    def phi(self, x):
        if self.fn is None:
            raise NotImplementedError(f"{self.peer_name} was given no fn: its finite-width "
                                      "apply_fn is not available")
        return self.fn(x)

    def _dphi(self) -> Callable:
        return jnp.vectorize(jax.grad(lambda u: self.fn(u)))

    def vals_fn(self) -> Callable:
        d = self._dphi()
        return lambda x: (self.fn(x), d(x))

    # the symbolic machinery (explain, closed forms) needs sympy expressions these
    # layers do not have
    def phi_expr(self, x):
        raise NotImplementedError(f"{self.describe()} is a Python function, not a formula")

    dphi_expr = phi_expr

    def special_cases(self):
        return []


@dataclass(frozen=True, kw_only=True)
class NumericalPointwise(PythonPointwise):
    """``ElementwiseNumerical(fn, deg, df)``: kernels by ntkdsl's 2-D quadrature of fn, fn'."""

    df: Callable | None = None
    closed_form: ClassVar[bool] = False
    peer_name: ClassVar[str] = "ElementwiseNumerical"

    def _dphi(self) -> Callable:
        return self.df if self.df is not None else super()._dphi()

    def pair_fn(self) -> Callable:
        return _memo(self, "pair", lambda: quadrature.pair_quadrature(
            self.vals_fn(), with_dot=True))

    def t_fn(self) -> Callable:
        return _memo(self, "t", lambda: quadrature.pair_quadrature(
            self.vals_fn(), with_dot=False))

    def diag_fn(self) -> Callable:
        return _memo(self, "diag", lambda: quadrature.diag_quadrature(self.vals_fn()))


@dataclass(frozen=True, kw_only=True)
class KernelFnPointwise(PythonPointwise):
    """``Elementwise(fn, nngp_fn, d_nngp_fn)``: the user's ``E[fn(u) fn(v)]`` (and
    ``E[fn'(u) fn'(v)]``, by default ``d nngp_fn / d cov12``) as the kernel map."""

    nngp_fn: Callable | None = None
    d_nngp_fn: Callable | None = None

    def _t(self, s11, s12, s22):
        return self.nngp_fn(s12, s11, s22)

    def _tdot(self, s11, s12, s22):
        if self.d_nngp_fn is not None:
            return self.d_nngp_fn(s12, s11, s22)
        g = jax.grad(lambda c, a, b: self.nngp_fn(c, a, b))
        return jnp.vectorize(g)(s12, s11, s22)

    def pair_fn(self) -> Callable:
        return lambda a, b, c: (self._t(a, b, c), self._tdot(a, b, c))

    def t_fn(self) -> Callable:
        return self._t

    def diag_fn(self) -> Callable:
        return lambda s: self._t(s, s, s)


_CACHE: dict[tuple[PythonPointwise, str], Any] = {}


def _memo(layer: PythonPointwise, what: str, build: Callable):
    """The quadrature functions of a layer, built once (layers are hashable values)."""
    key = (layer, what)
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]
