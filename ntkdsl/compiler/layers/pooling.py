"""Sum pooling: SumPool and GlobalSumPool.

Both are fixed linear maps of the activations (``rules.linear``): the sum
over a window is ``prod(window)`` times the mean, so their covariance maps are
AvgPool's and GlobalAvgPool's scaled by the square of the number of summed
positions (``covariance.sum_pool_cov``, ``covariance.sum_leading``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..._lazy import lazy
from .. import covariance as cv
from .. import finite
from ..terms import call
from .affine import check_padding, check_window
from .base import Shape, ShapeError, Stride, per_axis, windowed_spatial
from .structural import Structural, _window_text

jnp = lazy("jax.numpy")
lax = lazy("jax.lax")


@dataclass(frozen=True, kw_only=True)
class SumPool(Structural):
    """``SumPool(window, strides=window, padding=VALID)``: sum over spatial windows.

    As neural-tangents' ``stax.SumPool``, except that ``strides`` defaults to the
    window (the peer's default is 1), as for ``AvgPool``; padded positions add zeros.
    """

    spec_name = "SumPool"
    window: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str = "VALID"

    input_entries: ClassVar[str] = "full"  # a window mixes positions
    spatial: ClassVar[str] = "needs"

    def __post_init__(self) -> None:
        check_window(self.window, "window")
        if self.strides is not None:
            check_window(self.strides, "strides")
        check_padding(self.padding)

    @property
    def effective_strides(self) -> int | tuple[int, ...]:
        """The strides, with ``None`` resolved to the window."""
        return self.window if self.strides is None else self.strides

    def arguments(self) -> dict[str, object]:
        return {"window": self.window, "strides": self.effective_strides,
                "padding": self.padding}

    def out_shape(self, shape: Shape) -> Shape:
        sp = windowed_spatial("SumPool", shape, self.window, self.effective_strides,
                              self.padding, "window")
        return (*sp, shape[-1])

    def window_args(self) -> dict[str, Stride]:
        return {"window": self.window, "strides": self.effective_strides}

    def stride(self) -> Stride:
        return self.effective_strides

    def cov_map(self, k):
        ws = per_axis(self.window, k.nd, "window")
        ss = per_axis(self.effective_strides, k.nd, "strides")
        return lambda a: cv.sum_pool_cov(a, ws, ss, self.padding)

    def explain_map(self, latex: bool):
        note = (f"S = sum over {_window_text(self.window)} windows of both positions, "
                f"strides {_window_text(self.effective_strides)}, padding {self.padding}")
        return call("S({args})", "\\mathcal{{S}}({args})"), note

    def apply(self, params, x):
        """Sum over each window (padded positions add zeros; CIRCULAR wraps)."""
        nd = x.ndim - 2
        ws = per_axis(self.window, nd, "window")
        ss = per_axis(self.effective_strides, nd, "strides")
        x, pads = finite.pad_for(x, self.padding, ws, ss)
        return lax.reduce_window(x, 0.0, lax.add, (1, *ws, 1), (1, *ss, 1),
                                 [(0, 0), *pads, (0, 0)])


@dataclass(frozen=True, kw_only=True)
class GlobalSumPool(Structural):
    """``GlobalSumPool``: sum over all spatial axes (as neural-tangents' ``stax.GlobalSumPool``)."""

    spec_name = "GlobalSumPool"
    input_entries: ClassVar[str] = "full"  # the sum over all pairs of positions
    spatial: ClassVar[str] = "removes"

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ShapeError(
                f"GlobalSumPool needs spatial axes, but its input has shape {shape} "
                "(no spatial axes)"
            )
        return (shape[-1],)

    def layout_after(self, k):
        return False, 0

    def cov_map(self, k):
        naxes = 2 * k.nd
        return lambda a: cv.sum_leading(a, naxes)

    def explain_map(self, latex: bool):
        m = call("sum_{{p,q}} {0}[p, q]", "\\sum_{{p, q}} {0}[p, q]")
        return m, "sum over all pairs of positions"

    def apply(self, params, x):
        """Sum over every spatial axis."""
        return jnp.sum(x, axis=tuple(range(1, x.ndim - 1)))
