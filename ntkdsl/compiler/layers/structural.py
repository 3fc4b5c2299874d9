"""Structural layers: AvgPool, GlobalAvgPool, Flatten.

Each is a fixed linear map of the activations, so its kernel rule is
``rules.linear``: the same map on K and Theta (and the per-input variances).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from ..._lazy import lazy
from .. import covariance as cv
from .. import finite, rules
from ..terms import call
from .affine import check_padding, check_window
from .base import Layer, Shape, ShapeError, Stride, per_axis, windowed_spatial

jnp = lazy("jax.numpy")
lax = lazy("jax.lax")


@dataclass(frozen=True, kw_only=True)
class Structural(Layer):
    """Base of the parameter-free linear layers: ``rules.linear`` with the layer's map."""

    reads_variances: ClassVar[bool] = False
    kernel_map: ClassVar[bool] = False
    vmap_is_slow: ClassVar[bool] = False
    gaussian: ClassVar[str] = "keeps"
    needs_gaussian_input: ClassVar[bool] = False
    float_args: ClassVar[tuple[str, ...]] = ()
    #: the spatial layout after the map: (full, nd) from the state before it
    def layout_after(self, k: cv.KernelState) -> tuple[bool, int]:
        return k.full, k.nd

    def cov_map(self, k: cv.KernelState) -> Callable[[cv.Array], cv.Array]:
        """The map on a covariance in ``k``'s layout."""
        raise NotImplementedError

    def explain_map(self, latex: bool) -> tuple[Callable, str]:
        """The map for ``explain`` (a term map) and the note describing it."""
        raise NotImplementedError

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """``rules.linear``: the same map on nngp, ntk and the per-input variances."""
        M = self.cov_map(k)
        nngp, ntk = rules.linear(k.nngp, k.ntk, M=M)
        cov1 = None if k.cov1 is None else M(k.cov1)
        cov2 = cov1 if k.same or k.cov2 is None else M(k.cov2)
        full, nd = self.layout_after(k)
        return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, full=full, nd=nd)

    def explain_rule(self, k, theta, ctx):
        """``rules.linear`` on ``explain``'s terms."""
        M, note = self.explain_map(ctx.latex)
        return rules.linear(k, theta, M=M, bind=ctx.binder(note))

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """No parameters: ``(out_shape, ())``."""
        return self.out_shape(shape), ()


def _window_text(v) -> str:
    return "x".join(str(t) for t in v) if isinstance(v, tuple) else f"{v} (each axis)"


@dataclass(frozen=True, kw_only=True)
class AvgPool(Structural):
    """``AvgPool(window, strides=window, padding=VALID)``: average over spatial windows.

    ``strides=None`` means "equal to the window", as the language defines; padded
    zeros count in the mean.
    """

    spec_name = "AvgPool"
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
        sp = windowed_spatial("AvgPool", shape, self.window, self.effective_strides,
                              self.padding, "window")
        return (*sp, shape[-1])

    def window_args(self) -> dict[str, Stride]:
        return {"window": self.window, "strides": self.effective_strides}

    def stride(self) -> Stride:
        return self.effective_strides

    def cov_map(self, k):
        ws = per_axis(self.window, k.nd, "window")
        ss = per_axis(self.effective_strides, k.nd, "strides")
        return lambda a: cv.pool_cov(a, ws, ss, self.padding)

    def explain_map(self, latex: bool):
        note = (f"P = mean over {_window_text(self.window)} windows of both positions, "
                f"strides {_window_text(self.effective_strides)}, padding {self.padding}")
        return call("P({args})", "\\mathcal{{P}}({args})"), note

    def apply(self, params, x):
        """Mean over each window; padded zeros count in the denominator."""
        nd = x.ndim - 2
        ws = per_axis(self.window, nd, "window")
        ss = per_axis(self.effective_strides, nd, "strides")
        x, pads = finite.pad_for(x, self.padding, ws, ss)
        summed = lax.reduce_window(
            x, 0.0, lax.add, (1, *ws, 1), (1, *ss, 1),  # a literal 0 keeps it differentiable
            [(0, 0), *pads, (0, 0)],
        )
        return summed / math.prod(ws)


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool(Structural):
    """``GlobalAvgPool``: mean over all spatial axes."""

    spec_name = "GlobalAvgPool"
    input_entries: ClassVar[str] = "full"  # the mean over all pairs of positions
    spatial: ClassVar[str] = "removes"

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ShapeError(
                f"GlobalAvgPool needs spatial axes, but its input has shape {shape} "
                "(no spatial axes)"
            )
        return (shape[-1],)

    def layout_after(self, k):
        return False, 0

    def cov_map(self, k):
        naxes = 2 * k.nd
        return lambda a: cv.mean_leading(a, naxes)

    def explain_map(self, latex: bool):
        m = call("mean_{{p,q}} {0}[p, q]", "\\operatorname{{mean}}_{{p, q}} {0}[p, q]")
        return m, "mean over all pairs of positions"

    def apply(self, params, x):
        """Mean over every spatial axis."""
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


@dataclass(frozen=True, kw_only=True)
class Flatten(Structural):
    """``Flatten``: all axes but the batch axis into one."""

    spec_name = "Flatten"
    input_entries: ClassVar[str] = "diagonal"  # reads only K[p, p]
    spatial: ClassVar[str] = "flattens"

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def layout_after(self, k):
        return False, 0

    def cov_map(self, k):
        full, nd = k.full, k.nd
        return lambda a: cv.mean_positions(a, full, nd)

    def explain_map(self, latex: bool):
        m = call("mean_p {0}[p, p]", "\\operatorname{{mean}}_{{p}} {0}[p, p]")
        return m, "mean over positions of the diagonal"

    def apply(self, params, x):
        """All axes but the batch axis into one (row-major, channel fastest)."""
        return x.reshape(x.shape[0], -1)
