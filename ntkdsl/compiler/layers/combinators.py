"""Composite nodes: Serial (a sequence) and Residual (a sum of two paths)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Layer, Shape, ShapeError


@dataclass(frozen=True, kw_only=True)
class Serial(Layer):
    """Layers applied in sequence. The body of every net and branch."""

    layers: tuple[Layer, ...] = ()

    def children(self) -> tuple[Layer, ...]:
        return self.layers

    def out_shape(self, shape: Shape) -> Shape:
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape

    def describe(self) -> str:
        return "Serial"

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The children's kernel rules in order (``plan``: analysis.LayerPlan)."""
        from .. import kernel_rules

        return kernel_rules.serial(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """Finite-width params for inputs of ``shape`` (no batch): ``(out_shape, params)``."""
        from .. import network

        return network.serial_init(self, key, shape)

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.serial_apply(self, params, x)


@dataclass(frozen=True, kw_only=True)
class Residual(Layer):
    """``y = shortcut(x) + branch(x)``; ``shortcut=None`` is the identity.

    The sum of kernels is exact only when the two paths are independent
    Gaussians; the front end enforces that each non-identity path ends in a
    Dense or Conv.
    """

    spec_name = "Residual"
    branch: Serial
    shortcut: Serial | None = None

    def children(self) -> tuple[Layer, ...]:
        return (self.branch,) if self.shortcut is None else (self.branch, self.shortcut)

    def out_shape(self, shape: Shape) -> Shape:
        a = self.branch.out_shape(shape)
        b = shape if self.shortcut is None else self.shortcut.out_shape(shape)
        if a != b:
            what = "the input" if self.shortcut is None else "the shortcut"
            raise ShapeError(
                f"Residual branch gives shape {a} but {what} gives {b}; they must match to be added"
            )
        return a

    def describe(self) -> str:
        return "Residual" if self.shortcut is None else "Residual with shortcut"

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The sum of the two paths' kernels."""
        from .. import kernel_rules

        return kernel_rules.residual(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """Finite-width params for inputs of ``shape`` (no batch): ``(out_shape, params)``."""
        from .. import network

        return network.residual_init(self, key, shape)

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.residual_apply(self, params, x)
