"""Checks of the runtime inputs (arrays) against a net, before any kernel is traced."""

from __future__ import annotations

import math

import numpy as np

from ..diagnostics import InputError
from .graph import Net
from .layers import AvgPool, Conv, Flatten, GlobalAvgPool

#: layers that read or change spatial axes: a net without any is fully connected
_SPATIAL_LAYERS = (Conv, AvgPool, GlobalAvgPool, Flatten)


def is_spatial(net: Net) -> bool:
    """Whether any layer of ``net`` works on spatial axes (Conv, pooling, Flatten)."""
    return any(isinstance(layer, _SPATIAL_LAYERS) for layer in net.walk())


def check_inputs(net: Net, x1, x2) -> tuple[np.ndarray, np.ndarray | None]:
    """Check runtime inputs against ``net`` and return them as numpy arrays.

    Rules: at least a batch and a feature axis; a fully connected net (no
    Conv, pooling or Flatten) takes ``(n, features)``, a convolutional one
    ``(n, *spatial, channels)`` with at least one spatial axis; x2 has the
    same per-input shape as x1; every value is finite; no empty batch.

    Arguments:
        net: the layer graph.
        x1, x2: the inputs (``x2`` may be ``None``).

    Returns:
        ``(x1, x2)`` as numpy arrays.

    Raises:
        InputError: one line naming the expected and the received shape or values.
    """
    arrays = []
    spatial = is_spatial(net)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            arrays.append(None)
            continue
        try:
            a = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise InputError(f"{name} must be a numeric array, got {type(x).__name__}: {e}"
                             ) from None
        if a.dtype.kind not in "biuf":
            raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
        expected = "(n, *spatial, channels)" if spatial else "(n, features)"
        if a.ndim < 2 or (not spatial and a.ndim != 2) or (spatial and a.ndim < 3):
            raise InputError(
                f"{name} has shape {a.shape}, but net '{net.name}' expects inputs of shape "
                f"{expected}"
            )
        if a.shape[0] == 0 or math.prod(a.shape[1:]) == 0:
            raise InputError(f"{name} has shape {a.shape}: it must have at least one row "
                             "and no empty axis")
        arrays.append(a)
    a1, a2 = arrays
    if a2 is not None and a2.shape[1:] != a1.shape[1:]:
        raise InputError(
            f"x2 has shape {a2.shape}, but x1 has shape {a1.shape}: expected x2 of shape "
            f"(n2, {', '.join(map(str, a1.shape[1:]))})"
        )
    for name, a in (("x1", a1), ("x2", a2)):
        if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise InputError(
                f"{name} must be finite, but {name}[{', '.join(map(str, bad))}] = "
                f"{a[tuple(bad)]}"
            )
    return a1, a2
