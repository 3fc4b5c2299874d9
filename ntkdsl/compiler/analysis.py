"""Which kernel entries each layer needs, and the checks on runtime inputs.

The kernel of a layer's output is a covariance over *pairs of inputs* and, for
data with spatial axes, over *pairs of positions*. Materialising every pair of
positions costs a factor ``P`` (the number of positions) over keeping only the
per-position variances ``K[p, p]``, so this pass decides, per point of the
graph, which of the two is needed:

* ``full``: the state holds ``K[p, q]`` for every pair of positions. Needed
  upstream of ``AvgPool`` and ``GlobalAvgPool`` (their outputs mix positions),
  and nowhere else: Dense, Conv and the pointwise layers map a per-position
  diagonal to a per-position diagonal, and ``Flatten`` only reads the diagonal
  (the mean of ``K[p, p]``). A conv stack read out by Flatten thus never builds
  the ``(P, P, n1, n2)`` tensor.
* after the last layer that needs ``full`` the state is cut down to its
  diagonal (``full_out`` below), so later convolutions run on ``P`` entries
  per pair, not ``P**2``.
* ``cov``: the per-input variances (cov1 for the rows of x1, cov2 for x2) are
  only read by pointwise layers, so they are dropped after the last one.

The result is a :class:`LayerPlan` tree mirroring the layer graph
(positionally, so a layer object that appears twice gets two plans).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..diagnostics import InputError
from .graph import Net
from .layers import (
    AvgPool,
    Flatten,
    GlobalAvgPool,
    Layer,
    Pointwise,
    Residual,
    Serial,
    Shape,
    ShapeError,
)


@dataclass(frozen=True)
class LayerPlan:
    """What the kernel evaluation of one layer (at one position of the graph) needs.

    Attributes:
        layer: the layer.
        in_shape, out_shape: per-input shapes (no batch axis).
        full_in: the incoming state holds every pair of positions.
        full_out: the state after this layer (and after any cut to the diagonal)
            holds every pair of positions.
        cov_out: per-input variances are still needed after this layer.
        children: plans of nested layers (Serial: one per layer; Residual:
            ``(branch, shortcut)`` with ``None`` for an identity shortcut).
    """

    layer: Layer
    in_shape: Shape
    out_shape: Shape
    full_in: bool
    full_out: bool
    cov_out: bool
    children: tuple[LayerPlan | None, ...] = ()


def _backward(layer: Layer, need_out: bool, leaf: Callable[[Layer, bool], bool]) -> bool:
    """What ``layer`` needs at its input, given what is needed at its output.

    One backward pass serves every requirement: Serial runs its children in
    reverse, Residual needs at its input what either path needs, and ``leaf``
    answers for every other layer.
    """
    if isinstance(layer, Serial):
        need = need_out
        for child in reversed(layer.layers):
            need = _backward(child, need, leaf)
        return need
    if isinstance(layer, Residual):
        short = need_out if layer.shortcut is None else _backward(layer.shortcut, need_out, leaf)
        return _backward(layer.branch, need_out, leaf) or short
    return leaf(layer, need_out)


def _full_leaf(layer: Layer, need_out: bool) -> bool:
    if isinstance(layer, AvgPool | GlobalAvgPool):
        return True  # pooling averages over pairs of positions
    if isinstance(layer, Flatten):
        return False  # reads the per-position diagonal only
    return need_out  # Dense, Conv, pointwise: diagonal in, diagonal out


def _cov_leaf(layer: Layer, cov_out: bool) -> bool:
    return True if isinstance(layer, Pointwise) else cov_out


def _needs_full_in(layer: Layer, need_out: bool) -> bool:
    """Whether ``layer``'s input must hold every pair of positions."""
    return _backward(layer, need_out, _full_leaf)


def _needs_cov_in(layer: Layer, cov_out: bool) -> bool:
    """Whether per-input variances must be known at ``layer``'s input."""
    return _backward(layer, cov_out, _cov_leaf)


def _build(layer: Layer, shape: Shape, full_in: bool, need_out: bool, cov_out: bool,
           force: bool = False) -> LayerPlan:
    if isinstance(layer, Serial):
        n = len(layer.layers)
        need_after = [need_out] * n
        cov_after = [cov_out] * n
        for i in range(n - 1, 0, -1):
            need_after[i - 1] = force or _needs_full_in(layer.layers[i], need_after[i])
            cov_after[i - 1] = _needs_cov_in(layer.layers[i], cov_after[i])
        plans = []
        full, cur = full_in, shape
        for child, need, cov in zip(layer.layers, need_after, cov_after):
            p = _build(child, cur, full, need, cov, force)
            plans.append(p)
            full, cur = p.full_out, p.out_shape
        return LayerPlan(layer, shape, cur, full_in, full and need_out, cov_out, tuple(plans))
    if isinstance(layer, Residual):
        branch = _build(layer.branch, shape, full_in, need_out, cov_out, force)
        short = (None if layer.shortcut is None
                 else _build(layer.shortcut, shape, full_in, need_out, cov_out, force))
        out = layer.out_shape(shape)
        full_out = full_in and need_out and len(out) > 1
        return LayerPlan(layer, shape, out, full_in, full_out, cov_out, (branch, short))
    try:
        out = layer.out_shape(shape)
    except ShapeError as e:
        raise InputError(f"{layer.describe()} does not fit its input of shape {shape}: {e}"
                         ) from None
    if isinstance(layer, AvgPool | GlobalAvgPool) and not full_in:
        raise AssertionError("analysis: pooling reached with a diagonal-only state")
    full_out = full_in and need_out and len(out) > 1
    return LayerPlan(layer, shape, out, full_in, full_out, cov_out)


def plan(net: Net, input_shape: Shape, *, force_full: bool = False) -> LayerPlan:
    """The plan of the whole net for inputs of ``input_shape`` (no batch axis).

    Arguments:
        net: the layer graph.
        input_shape: per-input shape, channel last.
        force_full: keep every pair of positions everywhere (the slow
            reference path, for tests: it must give the same kernels).

    Returns:
        The :class:`LayerPlan` of ``net.body``; its ``full_in`` says whether
        the input covariance is built over pairs of positions.

    Raises:
        InputError: the shape does not fit a layer of the net.
    """
    try:
        net.body.out_shape(input_shape)
    except ShapeError as e:
        raise InputError(f"inputs of shape {input_shape} do not fit net '{net.name}': {e}"
                         ) from None
    full = len(input_shape) > 1 and (force_full or _needs_full_in(net.body, False))
    cov = _needs_cov_in(net.body, False)
    return _build(net.body, input_shape, full, force_full, cov, force_full)
