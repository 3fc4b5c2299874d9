"""The layer graph: the IR every stage after the front end works on.

A :class:`Net` is a name, its resolved parameters and a :class:`Serial` body
of layer objects (``compiler/layers``); Residual nodes nest Serial bodies.
Everything is a frozen dataclass, so graphs are hashable values: compiled
kernel functions are cached on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..diagnostics import Span
from .layers import Layer, Serial

Value = int | float | str | tuple


@dataclass(frozen=True)
class Net:
    """A network after expansion: every block, repeat and default resolved."""

    name: str
    params: tuple[tuple[str, Value], ...]
    body: Serial
    filename: str = "<spec>"
    span: Span | None = field(default=None, compare=False, repr=False)
    #: the non-batch input shape an ``Input(shape)`` statement declares (-1: any size);
    #: None when the net has no Input statement
    input_shape: tuple[int, ...] | None = None

    def walk(self) -> Iterator[Layer]:
        """Every layer, depth first, in execution order (Serial nodes included)."""

        def go(node: Layer) -> Iterator[Layer]:
            yield node
            for child in node.children():
                if child is not None:
                    yield from go(child)

        return go(self.body)
