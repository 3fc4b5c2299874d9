"""Which kernel entries each layer needs: the analysis pass over the layer graph.

The kernel of a layer's output is a covariance over *pairs of inputs* and, for
data with spatial axes, over *pairs of positions*. Materialising every pair of
positions costs a factor ``P`` (the number of positions) over keeping only the
per-position variances ``K[p, p]``, so this pass decides, per point of the
graph, which of the two is needed:

* ``full``: the state holds ``K[p, q]`` for every pair of positions. Needed
  upstream of layers whose ``input_entries`` is ``"full"`` (``AvgPool`` and
  ``GlobalAvgPool``: their outputs mix positions),
  and nowhere else: Dense, Conv and the pointwise layers map a per-position
  diagonal to a per-position diagonal, and ``Flatten`` only reads the diagonal
  (the mean of ``K[p, p]``). A conv stack read out by Flatten thus never builds
  the ``(P, P, n1, n2)`` tensor.
* after the last layer that needs ``full`` the state is cut down to its
  diagonal (``full_out`` below), so later convolutions run on ``P`` entries
  per pair, not ``P**2``.
* ``cov``: the per-input variances (cov1 for the rows of x1, cov2 for x2) are
  only read by layers that declare ``reads_variances`` (the nonlinearities),
  so they are dropped after the last one.

Every answer comes from what the layers declare (``input_entries``,
``reads_variances``, ``combine``): the pass never asks for a layer's type.

The result is a :class:`LayerPlan` tree mirroring the layer graph
(positionally, so a layer object that appears twice gets two plans).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from ..diagnostics import InputError
from .covariance import LayerPlan
from .graph import Net
from .layers import Layer, Shape, ShapeError

__all__ = ["LayerPlan", "needs_cov_in", "needs_full_in", "plan"]


def _backward(layer: Layer | None, need_out: bool, leaf: Callable[[Layer, bool], bool]) -> bool:
    """What ``layer`` needs at its input, given what is needed at its output.

    One backward pass serves every requirement: a sequence runs its children in
    reverse, a sum of branches needs at its input what any branch needs (an
    identity path, ``None``, what its output needs), and ``leaf`` answers for
    every other layer from its declarations.
    """
    if layer is None:
        return need_out
    if layer.combine == "sequence":
        need = need_out
        for child in reversed(layer.children()):
            need = _backward(child, need, leaf)
        return need
    if layer.combine is not None:
        return any([_backward(c, need_out, leaf) for c in layer.children()])
    return leaf(layer, need_out)


def _full_leaf(layer: Layer, need_out: bool) -> bool:
    entries = layer.input_entries
    if entries == "full":
        return True
    if entries == "diagonal":
        return False
    if entries == "as_output":
        return need_out
    raise ValueError(f"{type(layer).__name__}.input_entries is {entries!r}")


def _cov_leaf(layer: Layer, cov_out: bool) -> bool:
    return True if layer.reads_variances else cov_out


def needs_full_in(layer: Layer, need_out: bool) -> bool:
    """Whether ``layer``'s input must hold every pair of positions."""
    return _backward(layer, need_out, _full_leaf)


def needs_cov_in(layer: Layer, cov_out: bool) -> bool:
    """Whether per-input variances must be known at ``layer``'s input."""
    return _backward(layer, cov_out, _cov_leaf)


class _Slots:
    """Hands out the indices of the variance-reading layers, in execution order."""

    def __init__(self) -> None:
        self.n = 0

    def take(self) -> int:
        self.n += 1
        return self.n - 1


def _build(layer: Layer, shape: Shape, full_in: bool, need_out: bool, cov_out: bool,
           force: bool, slots: _Slots) -> LayerPlan:
    if layer.combine == "sequence":
        rep = layer.repetition()
        if rep is not None:
            return _build_repeat(layer, *rep, shape, full_in, need_out, cov_out, force, slots)
        kids = layer.children()
        n = len(kids)
        need_after = [need_out] * n
        cov_after = [cov_out] * n
        for i in range(n - 1, 0, -1):
            need_after[i - 1] = force or needs_full_in(kids[i], need_after[i])
            cov_after[i - 1] = needs_cov_in(kids[i], cov_after[i])
        plans = []
        full, cur = full_in, shape
        for child, need, cov in zip(kids, need_after, cov_after):
            p = _build(child, cur, full, need, cov, force, slots)
            plans.append(p)
            full, cur = p.full_out, p.out_shape
        return LayerPlan(layer, shape, cur, full_in, full and need_out, cov_out, tuple(plans))
    if layer.combine is not None:
        kids = tuple(None if c is None else
                     _build(c, shape, full_in, need_out, cov_out, force, slots)
                     for c in layer.children())
        out = layer.out_shape(shape)
        full_out = full_in and need_out and len(out) > 1
        return LayerPlan(layer, shape, out, full_in, full_out, cov_out, kids)
    try:
        out = layer.out_shape(shape)
    except ShapeError as e:
        raise InputError(f"{layer.describe()} does not fit its input of shape {shape}: {e}"
                         ) from None
    if layer.input_entries == "full" and not full_in:
        raise AssertionError("analysis: a layer that needs pairs of positions reached with a "
                             "diagonal-only state")
    full_out = full_in and need_out and len(out) > 1
    slot = slots.take() if layer.reads_variances else None
    return LayerPlan(layer, shape, out, full_in, full_out, cov_out, slot=slot)


def _build_repeat(layer: Layer, body: Layer, count: int, shape: Shape, full_in: bool,
                  need_out: bool, cov_out: bool, force: bool, slots: _Slots) -> LayerPlan:
    """A ``repeat``: runs of identical iterations become one looped plan (``times``).

    Each iteration is planned with slots of its own (from 0), so iterations that
    see the same shapes and needs get equal plans; a run of two or more of them
    becomes one plan run ``times`` times (a loop). Iterations that differ (a body
    that changes the shape, the last one that may cut the state) keep plans of
    their own, numbered with the net's slots, and run unrolled.
    """
    need_after = [need_out] * count
    cov_after = [cov_out] * count
    for i in range(count - 1, 0, -1):
        need_after[i - 1] = force or needs_full_in(body, need_after[i])
        cov_after[i - 1] = needs_cov_in(body, cov_after[i])
    iters = []
    full, cur = full_in, shape
    for need, cov in zip(need_after, cov_after):
        p = _build(body, cur, full, need, cov, force, _Slots())
        iters.append(p)
        full, cur = p.full_out, p.out_shape
    segments = []
    i = 0
    while i < count:
        j = i + 1
        while j < count and iters[j] == iters[i]:
            j += 1
        if j - i >= 2:
            slot = slots.take() if count_variance_readers(iters[i]) else None
            segments.append(dataclasses.replace(iters[i], times=j - i, slot=slot))
        else:
            q = iters[i]
            segments.append(_build(body, q.in_shape, q.full_in, need_after[i], cov_after[i],
                                   force, slots))
        i = j
    return LayerPlan(layer, shape, cur, full_in, full and need_out, cov_out, tuple(segments))


@functools.lru_cache(maxsize=128)
def plan(net: Net, input_shape: Shape, *, force_full: bool = False) -> LayerPlan:
    """The plan of the whole net for inputs of ``input_shape`` (no batch axis).

    Cached on the (hashable) net and shape.

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
    full = len(input_shape) > 1 and (force_full or needs_full_in(net.body, False))
    cov = needs_cov_in(net.body, False)
    return _build(net.body, input_shape, full, force_full, cov, force_full, _Slots())


def count_variance_readers(p: LayerPlan | None) -> int:
    """How many layers of the plan read per-input variances (the memory model's covs)."""
    if p is None:
        return 0
    inner = sum(count_variance_readers(c) for c in p.children)
    if p.times > 1:  # a loop: every iteration's covariances are kept
        return p.times * inner
    return (1 if p.slot is not None else 0) + inner
