"""Affine layers: Dense and Conv (paper eq. 1; standard parameterisation: appendix F)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Layer, LayerArgError, Shape, windowed_spatial

PADDINGS = ("SAME", "VALID", "CIRCULAR")
PARAMETERIZATIONS = ("ntk", "standard")


def _check_common(layer) -> None:
    if isinstance(layer.out, bool) or not isinstance(layer.out, int) or layer.out <= 0:
        raise LayerArgError("out", f"'out' must be a positive integer, got {layer.out!r}")
    for arg in ("W_std", "b_std"):
        v = getattr(layer, arg)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or v != v:
            raise LayerArgError(arg, f"'{arg}' must be a number >= 0, got {v!r}")
    if layer.parameterization not in PARAMETERIZATIONS:
        raise LayerArgError(
            "parameterization",
            f"'parameterization' must be \"ntk\" or \"standard\", got {layer.parameterization!r}",
        )


@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    """``Dense(out, W_std=1, b_std=0, parameterization="ntk")``: affine map over the last axis."""

    spec_name = "Dense"
    out: int
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    def __post_init__(self) -> None:
        _check_common(self)

    def out_shape(self, shape: Shape) -> Shape:
        return (*shape[:-1], self.out)

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The paired NNGP/NTK rule on a KernelState (``plan``: analysis.LayerPlan)."""
        from .. import kernel_rules

        return kernel_rules.dense(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """Finite-width params for inputs of ``shape`` (no batch): ``(out_shape, params)``."""
        from .. import network

        return network.dense_init(self, key, shape)

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.dense_apply(self, params, x)


def _check_window(value, arg: str) -> None:
    vals = value if isinstance(value, tuple) else (value,)
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in vals):
        raise LayerArgError(
            arg, f"'{arg}' must be a positive integer or a tuple of them, got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Conv(Layer):
    """``Conv(out, kernel, strides=1, padding=SAME, ...)``: convolution over the spatial axes."""

    spec_name = "Conv"
    out: int
    kernel: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    def __post_init__(self) -> None:
        _check_common(self)
        _check_window(self.kernel, "kernel")
        _check_window(self.strides, "strides")
        if self.padding not in PADDINGS:
            raise LayerArgError(
                "padding", f"'padding' must be SAME, VALID or CIRCULAR, got {self.padding!r}"
            )

    def out_shape(self, shape: Shape) -> Shape:
        sp = windowed_spatial("Conv", shape, self.kernel, self.strides, self.padding, "kernel")
        return (*sp, self.out)

    # -- infinite width (compiler/kernel_rules.py) --
    def kernel_rule(self, k, plan):
        """The paired NNGP/NTK rule on a KernelState (``plan``: analysis.LayerPlan)."""
        from .. import kernel_rules

        return kernel_rules.conv(self, k, plan)

    # -- finite width (compiler/network.py) --
    def init(self, key, shape):
        """Finite-width params for inputs of ``shape`` (no batch): ``(out_shape, params)``."""
        from .. import network

        return network.conv_init(self, key, shape)

    def apply(self, params, x):
        """The finite layer on ``x`` (with batch axis)."""
        from .. import network

        return network.conv_apply(self, params, x)
