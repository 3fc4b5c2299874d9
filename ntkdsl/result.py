"""The result of a kernel computation: the NNGP kernel and the NTK side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kernel:
    """The kernels between two batches of inputs, each ``(n1, n2)``.

    Attributes:
        nngp: the NNGP kernel (``None`` if not asked for).
        ntk: the neural tangent kernel (``None`` if not asked for).
    """

    nngp: Any = None
    ntk: Any = None
