"""The base of every layer class, and the errors a layer raises.

One class per layer (see docs/design.md). A layer declares

* its parameters, as frozen dataclass fields, validated in ``__post_init__``;
* its shape rule, :meth:`Layer.out_shape`;
* its paired kernel rule (NNGP and NTK), used by ``compiler/kernels.py``;
* its finite-width ``init`` / ``apply``, used by ``compiler/network.py``.

Shapes here never include the batch axis: ``(features,)`` for fully
connected data, ``(*spatial, channels)`` for convolutional data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...diagnostics import Span

Shape = tuple[int, ...]


class LayerArgError(ValueError):
    """A layer argument is invalid; ``arg`` names it (None: the whole layer).

    The expander turns it into a located SpecError pointing at the argument.
    """

    def __init__(self, arg: str | None, message: str):
        self.arg = arg
        self.message = message
        super().__init__(message)


class ShapeError(ValueError):
    """An input shape does not fit a layer; the caller locates it at the layer."""


@dataclass(frozen=True, kw_only=True)
class Layer:
    """A node of the layer graph."""

    span: Span | None = field(default=None, compare=False, repr=False)

    #: the name a spec uses for this layer; ``None`` for internal nodes
    spec_name: ClassVar[str | None] = None

    def out_shape(self, shape: Shape) -> Shape:
        """The output shape (no batch axis) for an input of ``shape``."""
        return shape

    def children(self) -> tuple[Layer, ...]:
        """Nested layers (for Serial and Residual); empty for leaves."""
        return ()

    def describe(self) -> str:
        """A one-line, spec-like rendering of the layer with its arguments."""
        from dataclasses import fields

        args = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name != "span" and f.init
        ]
        name = self.spec_name or type(self).__name__
        return f"{name}({', '.join(args)})" if args else name


def per_axis(value: int | tuple[int, ...], ndim: int, what: str) -> tuple[int, ...]:
    """Expand an int to one value per spatial axis, or check a tuple's length."""
    if isinstance(value, int):
        return (value,) * ndim
    if len(value) != ndim:
        raise ShapeError(
            f"{what} has {len(value)} entries but the input has {ndim} spatial "
            f"ax{'es' if ndim != 1 else 'is'}"
        )
    return tuple(value)


def spatial_out(
    n: int, k: int, s: int, padding: str, what: str
) -> int:
    """Output length of a window of size k, stride s over n positions."""
    if padding == "VALID":
        if k > n:
            raise ShapeError(f"{what} of size {k} is larger than the VALID input of size {n}")
        return (n - k) // s + 1
    return -(-n // s)  # SAME and CIRCULAR: ceil(n / s)


def windowed_spatial(
    layer: str, shape: Shape, window, strides, padding: str, what: str
) -> tuple[int, ...]:
    """Output spatial sizes of a sliding window (Conv's filter, AvgPool's window).

    ``what`` names the window argument in messages (``"kernel"``, ``"window"``).
    """
    nd = len(shape) - 1
    if nd < 1:
        raise ShapeError(
            f"{layer} needs spatial axes, but its input has shape {shape} (no spatial axes)"
        )
    ws = per_axis(window, nd, what)
    ss = per_axis(strides, nd, "strides")
    return tuple(spatial_out(n, w, s, padding, what) for n, w, s in zip(shape[:-1], ws, ss))
