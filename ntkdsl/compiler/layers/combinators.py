"""Composite nodes: Serial (a sequence) and Residual (a sum of two paths).

A combinator declares how it combines its children (``combine``) and exposes
them (``children()``, ``None`` for an identity path); the passes fold over
that instead of asking for the type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..._lazy import lazy
from ...diagnostics import InputError
from .. import covariance as cv
from .base import Layer, Shape, ShapeError

jax = lazy("jax")


@dataclass(frozen=True, kw_only=True)
class Serial(Layer):
    """Layers applied in sequence. The body of every net and branch."""

    layers: tuple[Layer, ...] = ()
    combine: ClassVar[str] = "sequence"
    float_args: ClassVar[tuple[str, ...]] = ()

    def children(self) -> tuple[Layer, ...]:
        return self.layers

    def out_shape(self, shape: Shape) -> Shape:
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape

    def describe(self, short: bool = False) -> str:
        return "Serial"

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The children's rules in order."""
        for child in plan.children:
            k = cv.run(child, k)
        return k

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """One key per child (split in order), params as a tuple in layer order."""
        params = []
        keys = jax.random.split(key, max(len(self.layers), 1))
        for child, k in zip(self.layers, keys):
            try:
                shape, p = child.init(k, shape)
            except ShapeError as err:
                raise InputError(f"{child.describe()}: {err}") from None
            params.append(p)
        return shape, tuple(params)

    def apply(self, params: tuple, x):
        """Apply the children in sequence."""
        for child, p in zip(self.layers, params, strict=True):
            x = child.apply(p, x)
        return x


@dataclass(frozen=True, kw_only=True)
class Residual(Layer):
    """``y = shortcut(x) + branch(x)``; ``shortcut=None`` is the identity.

    The sum of kernels is exact only when the two paths are independent
    Gaussians; the front end enforces that each non-identity path ends in an
    affine layer (a layer whose ``gaussian`` is ``"makes"``).
    """

    spec_name = "Residual"
    branch: Serial
    shortcut: Serial | None = None
    combine: ClassVar[str] = "sum"
    float_args: ClassVar[tuple[str, ...]] = ()

    def children(self) -> tuple[Layer | None, ...]:
        return (self.branch, self.shortcut)

    def out_shape(self, shape: Shape) -> Shape:
        a = self.branch.out_shape(shape)
        b = shape if self.shortcut is None else self.shortcut.out_shape(shape)
        if a != b:
            what = "the input" if self.shortcut is None else "the shortcut"
            raise ShapeError(
                f"Residual branch gives shape {a} but {what} gives {b}; they must match to be added"
            )
        return a

    def describe(self, short: bool = False) -> str:
        return "Residual" if self.shortcut is None else "Residual with shortcut"

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """Independent Gaussian paths: the kernels add (``covariance.add_states``)."""
        states = [cv.cut(k, plan.full_out, plan.cov_out) if p is None else cv.run(p, k)
                  for p in plan.children]
        return cv.add_states(states)

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """Independent params for branch and shortcut (``()`` for the identity)."""
        kb, ks = jax.random.split(key)
        out_shape, pb = self.branch.init(kb, shape)
        ps: tuple = ()
        if self.shortcut is not None:
            sc_shape, ps = self.shortcut.init(ks, shape)
            if sc_shape != out_shape:
                raise InputError(
                    f"Residual branch gives shape {out_shape} but the shortcut gives {sc_shape}"
                )
        elif out_shape != tuple(shape):
            raise InputError(f"Residual branch gives shape {out_shape} but the input has {shape}")
        return out_shape, (pb, ps)

    def apply(self, params: tuple, x):
        """``branch(x) + shortcut(x)``."""
        pb, ps = params
        sc = x if self.shortcut is None else self.shortcut.apply(ps, x)
        return self.branch.apply(pb, x) + sc
