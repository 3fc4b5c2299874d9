"""Structural layers: AvgPool, GlobalAvgPool, Flatten (the same linear map on K and Theta)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .affine import PADDINGS, _check_window
from .base import Layer, LayerArgError, Shape, ShapeError, windowed_spatial


@dataclass(frozen=True, kw_only=True)
class AvgPool(Layer):
    """``AvgPool(window, strides=window, padding=VALID)``: average over spatial windows.

    ``strides=None`` means "equal to the window", as the language defines.
    """

    spec_name = "AvgPool"
    window: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str = "VALID"

    def __post_init__(self) -> None:
        _check_window(self.window, "window")
        if self.strides is not None:
            _check_window(self.strides, "strides")
        if self.padding not in PADDINGS:
            raise LayerArgError(
                "padding", f"'padding' must be SAME, VALID or CIRCULAR, got {self.padding!r}"
            )

    @property
    def effective_strides(self) -> int | tuple[int, ...]:
        return self.window if self.strides is None else self.strides

    def out_shape(self, shape: Shape) -> Shape:
        sp = windowed_spatial("AvgPool", shape, self.window, self.effective_strides,
                              self.padding, "window")
        return (*sp, shape[-1])

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The kernel map of average pooling (``plan``: analysis.LayerPlan)."""
        from .. import kernel_rules

        return kernel_rules.avg_pool(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """No params: ``(out_shape, ())``."""
        return self.out_shape(shape), ()

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.avg_pool_apply(self, x)


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool(Layer):
    """``GlobalAvgPool``: mean over all spatial axes."""

    spec_name = "GlobalAvgPool"

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ShapeError(
                f"GlobalAvgPool needs spatial axes, but its input has shape {shape} "
                "(no spatial axes)"
            )
        return (shape[-1],)

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The kernel map of global average pooling."""
        from .. import kernel_rules

        return kernel_rules.global_avg_pool(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """No params: ``(out_shape, ())``."""
        return self.out_shape(shape), ()

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.global_avg_pool_apply(x)


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """``Flatten``: all axes but the batch axis into one."""

    spec_name = "Flatten"

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The kernel map of Flatten: the mean of the per-position diagonal."""
        from .. import kernel_rules

        return kernel_rules.flatten(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """No params: ``(out_shape, ())``."""
        return self.out_shape(shape), ()

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.flatten_apply(x)
