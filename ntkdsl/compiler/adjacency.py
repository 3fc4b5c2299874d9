"""Graph inputs: checking each input's adjacency and carrying it with the input's row.

A net with a layer that reads adjacencies (``Aggregate``: ``uses_adjacency``)
takes pairs: node features ``x`` of shape ``(n, nodes, C)`` and an adjacency
``(n, nodes, nodes)`` per graph. Inside the kernel machinery a graph input
travels as ONE array, its features and its adjacency concatenated on the last
axis, ``(n, nodes, C + nodes)`` (:func:`pack`): every row-wise operation of the
kernel code (tiles of rows, the padding of a ragged tile, finding repeated
inputs by hashing rows, the train rows of a prediction) then carries each
graph's adjacency with its features without knowing about graphs, and two
inputs are "the same" only when their features *and* their graphs are. The
tile function splits the array again (:func:`split`) before the first layer,
knowing ``C`` from the plan's input shape.

This module imports no layer: it reads the ``uses_adjacency`` declaration only.
"""

from __future__ import annotations

import numpy as np

from ..diagnostics import InputError
from .graph import Net


def aggregates(net: Net) -> bool:
    """Whether ``net`` has a layer that reads each input's adjacency (``Aggregate``)."""
    return any(getattr(layer, "uses_adjacency", False) for layer in net.walk())


def plan_aggregates(p) -> bool:
    """Whether the plan tree ``p`` (a ``LayerPlan``) holds a layer that reads adjacencies."""
    if p is None:
        return False
    if getattr(p.layer, "uses_adjacency", False):
        return True
    return any(plan_aggregates(c) for c in p.children)


def feature_shape(net: Net, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-input feature shape ``(nodes, C)`` of a packed shape ``(nodes, C + nodes)``.

    Other nets' shapes are returned as they are.
    """
    shape = tuple(shape)
    if aggregates(net) and len(shape) == 2 and shape[1] > shape[0]:
        return (shape[0], shape[1] - shape[0])
    return shape


def _dense(adjacency, graphs: int):
    """An edge list (``ntkdsl.graphs.EdgeList``) as its dense array for ``graphs`` graphs;
    arrays as they are."""
    to_dense = getattr(adjacency, "to_dense", None)
    if to_dense is not None:
        return to_dense(graphs=graphs)
    return adjacency


def check_adjacency(net: Net, x_shape: tuple[int, ...], adjacency, name: str, x_name: str):
    """Check one input's adjacency against the net and its node features.

    Arguments:
        net: the layer graph.
        x_shape: the shape of the node features it goes with, ``(n, nodes, C)``.
        adjacency: ``None``, an array ``(n, nodes, nodes)`` (bool, int or float; a
            jax tracer is accepted and only its shape is checked) or an
            ``ntkdsl.graphs.EdgeList``.
        name, x_name: the two arrays' names in messages (``adjacency1``, ``x1``).

    Returns:
        The adjacency as an array (numpy unless traced), or ``None`` for a net
        that does not aggregate.

    Raises:
        InputError: missing for a net that aggregates, given to one that does not,
            of the wrong shape (naming expected and received), non-square, or not
            finite.
    """
    x_shape = tuple(x_shape)
    if not aggregates(net):
        if adjacency is not None:
            shape = tuple(getattr(adjacency, "shape", ()))
            raise InputError(
                f"{name} was given (shape {shape}), but net '{net.name}' has no Aggregate "
                "layer, so it takes no adjacency: leave it out")
        return None
    nodes = x_shape[1] if len(x_shape) == 3 else None
    want = (f"({x_shape[0]}, {nodes}, {nodes})" if nodes is not None
            else "(n, nodes, nodes)")
    if len(x_shape) != 3:
        raise InputError(
            f"{x_name} has shape {x_shape}, but net '{net.name}' aggregates over graphs: "
            "expected node features of shape (n, nodes, channels)")
    if adjacency is None:
        raise InputError(
            f"net '{net.name}' aggregates over graphs (Aggregate): give {name}, the "
            f"adjacency of each graph of {x_name} {x_shape}, of shape {want}")
    a = _dense(adjacency, x_shape[0])
    traced = _is_traced(a)
    if not traced:
        try:
            a = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise InputError(f"{name} must be a numeric array, got {type(adjacency).__name__}"
                             f": {e}") from None
        if a.dtype.kind not in "biuf":
            raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    shape = tuple(a.shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        what = "not square" if len(shape) == 3 else f"of rank {len(shape)}"
        raise InputError(f"{name} has shape {shape} ({what}), but {x_name} {x_shape} needs "
                         f"one square adjacency per graph: expected {want}")
    if shape != (x_shape[0], nodes, nodes):
        raise InputError(f"{name} has shape {shape}, but {x_name} has shape {x_shape}: "
                         f"expected {want}")
    if not traced and a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise InputError(f"{name} must be finite, but {name}[{', '.join(map(str, bad))}] = "
                         f"{a[bad]}")
    return a


def _is_traced(a) -> bool:
    try:
        import jax
    except ImportError:  # pragma: no cover - jax is a dependency
        return False
    return isinstance(a, jax.core.Tracer)


def pack(x: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """Node features ``(n, nodes, C)`` and adjacency ``(n, nodes, nodes)`` as one array
    ``(n, nodes, C + nodes)`` (see the module docstring)."""
    dt = np.result_type(x.dtype, adjacency.dtype, np.float32)
    return np.concatenate([np.asarray(x, dt), np.asarray(adjacency, dt)], axis=-1)


def pack_inputs(net: Net, a1: np.ndarray, a2: np.ndarray | None, adjacency1, adjacency2,
                names: tuple[str, str] = ("adjacency1", "x1")
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked inputs ``a1``, ``a2`` with their adjacencies packed in (unchanged for a net
    that does not aggregate). ``names``: the first adjacency's and input's names in
    messages.

    Raises:
        InputError: see :func:`check_adjacency`; ``adjacency2`` without ``x2``.
    """
    if a2 is None and adjacency2 is not None:
        raise InputError("adjacency2 was given without x2: give x2 too, or leave both out "
                         "for the kernel of x1 with itself")
    g1 = check_adjacency(net, a1.shape, adjacency1, *names)
    if g1 is None:
        return a1, a2
    if a2 is None:
        return pack(a1, g1), None
    g2 = check_adjacency(net, a2.shape, adjacency2, "adjacency2", "x2")
    return pack(a1, g1), pack(a2, g2)


def split(x, p):
    """A packed tile ``(n, nodes, C + nodes)`` as ``(features, adjacency)`` for plan ``p``;
    ``(x, None)`` when the plan does not aggregate."""
    if x is None or not plan_aggregates(p):
        return x, None
    c = p.in_shape[-1]
    return x[..., :c], x[..., c:]
