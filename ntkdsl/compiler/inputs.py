"""Checks of the runtime inputs (arrays) against a net, before any kernel is traced."""

from __future__ import annotations

import math

import numpy as np

from ..diagnostics import InputError
from .graph import Net


def is_spatial(net: Net) -> bool:
    """Whether any layer of ``net`` works on spatial axes (declares ``spatial`` other than
    ``"any"``): such a net takes ``(n, *spatial, channels)`` inputs."""
    return any(layer.combine is None and layer.spatial != "any" for layer in net.walk())


def check_declared_shape(net: Net, name: str, shape: tuple[int, ...]) -> None:
    """Check an array's shape (batch axis first) against the net's ``Input(shape)``.

    Arguments:
        net: a net with ``input_shape`` set.
        name: the array's name in the message (``x1``).
        shape: the array's shape.

    Raises:
        InputError: e.g. "x1 has shape (5, 8, 8), but net 'cnn' declares
            Input((8, 8, 1)): expected (n, 8, 8, 1)".
    """
    declared = net.input_shape
    assert declared is not None
    if len(shape) == len(declared) + 1 and all(
        d in (-1, s) for d, s in zip(declared, shape[1:])
    ):
        return
    text = ", ".join(map(str, declared)) + ("," if len(declared) == 1 else "")
    want = ", ".join("any" if d == -1 else str(d) for d in declared)
    raise InputError(f"{name} has shape {tuple(shape)}, but net '{net.name}' declares "
                     f"Input(({text})): expected (n, {want})")


def check_inputs(net: Net, x1, x2) -> tuple[np.ndarray, np.ndarray | None]:
    """Check runtime inputs against ``net`` and return them as numpy arrays.

    Rules: at least a batch and a feature axis; a fully connected net (no
    Conv, pooling or Flatten) takes ``(n, features)``, a convolutional one
    ``(n, *spatial, channels)`` with at least one spatial axis; a net with an
    ``Input(shape)`` statement takes exactly ``(n, *shape)`` (``-1``: any size
    on that axis); x2 has the same per-input shape as x1; every value is
    finite; no empty batch.

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
        if net.input_shape is not None:
            check_declared_shape(net, name, a.shape)
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
