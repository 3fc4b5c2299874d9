"""Finite-width networks from the layer graph: ``init`` and ``apply`` of a whole net.

The same graph that defines the analytic kernels defines a finite network
whose infinite-width limit they are. Each layer class holds its own
``init(key, shape)`` / ``apply(params, x)`` (the parameterisations are
described in ``layers/affine.py``); this module checks shapes and parameter
structures for the whole net and calls into the body.

Serial params are a tuple with one entry per layer; Residual params are
``(branch_params, shortcut_params)`` with ``()`` for the identity shortcut.
Layers without parameters use ``()``. Data are channel last with a leading
batch axis; shapes passed to ``init`` exclude the batch axis.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..diagnostics import InputError
from .adjacency import check_adjacency
from .graph import Net
from .layers.base import Shape, ShapeError
from .layers.graph import adjacency_scope

Params = Any


# -- the whole net ------------------------------------------------------------

def _check_shape(input_shape) -> Shape:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise InputError(
            f"expected an input shape (a tuple of positive ints, no batch axis), "
            f"got {input_shape!r}"
        ) from None
    if not shape or any(s <= 0 for s in shape):
        raise InputError(
            f"expected an input shape (a tuple of positive ints, no batch axis), got {shape}"
        )
    return shape


def init(net: Net, key: jax.Array, input_shape) -> Params:
    """Random parameters of the finite network ``net``.

    Arguments:
        net: the layer graph.
        key: a ``jax.random`` key; the same key gives the same params.
        input_shape: the shape of one input, without the batch axis, channel
            last: ``(features,)`` or ``(*spatial, channels)``.

    Returns:
        The params pytree (a tuple per Serial, dicts ``{"w", "b"}`` for affine
        layers). Use ``jax.vmap(lambda k: init(net, k, shape))(keys)`` for an
        ensemble.

    Raises:
        InputError: when ``input_shape`` does not fit the net.
    """
    shape = _check_shape(input_shape)
    try:
        net.body.out_shape(shape)
    except ShapeError as err:
        raise InputError(
            f"net {net.name!r} cannot take inputs of shape {shape}: {err}"
        ) from None
    return net.body.init(key, shape)[1]


@lru_cache(maxsize=256)
def _expected_leaf_shapes(net: Net, shape: Shape):
    params = jax.eval_shape(lambda k: init(net, k, shape), jax.random.key(0))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    return treedef, tuple((jax.tree_util.keystr(p), leaf.shape) for p, leaf in leaves)


def apply(net: Net, params: Params, x, adjacency=None) -> jax.Array:
    """The finite network's outputs: pure, so it works under jit, grad and vmap.

    Arguments:
        net: the layer graph.
        params: from :func:`init` for inputs of shape ``x.shape[1:]``.
        x: inputs with a leading batch axis, channel last.
        adjacency: for a net with ``Aggregate``, each graph's adjacency
            ``(batch, nodes, nodes)``; must be left out for other nets.

    Returns:
        The outputs, ``(batch, *net output shape)``.

    Raises:
        InputError: when ``x`` does not fit the net or the params (named
            expected vs received).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if x.ndim < 2:
        raise InputError(
            f"expected inputs with a batch axis, (N, *input_shape), got shape {tuple(x.shape)}"
        )
    shape = tuple(x.shape[1:])
    try:
        net.body.out_shape(shape)
    except ShapeError as err:
        raise InputError(
            f"net {net.name!r} cannot take inputs of shape {tuple(x.shape)}: {err}"
        ) from None
    treedef, expected = _expected_leaf_shapes(net, shape)
    leaves, got_def = jax.tree_util.tree_flatten_with_path(params)
    if got_def != treedef:
        raise InputError(
            f"params do not have the structure net {net.name!r} needs: expected {treedef}, "
            f"got {got_def}"
        )
    for (path, want), (_, leaf) in zip(expected, leaves):
        got = tuple(np.shape(leaf))
        if got != want:
            raise InputError(
                f"params{path} has shape {got}, but inputs of shape (N, "
                f"{', '.join(map(str, shape))}) need {want} (were the params made for "
                "another input shape?)"
            )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    # numpy, not jnp: under an outer jit a jnp reduction of a constant is traced too
    if not isinstance(x, jax.core.Tracer) and not np.isfinite(np.asarray(x)).all():
        raise InputError(f"inputs of shape {tuple(x.shape)} contain NaN or infinite values")
    graphs = check_adjacency(net, tuple(x.shape), adjacency, "adjacency", "x")
    if graphs is None:
        return net.body.apply(params, x)
    with adjacency_scope(graphs):
        return net.body.apply(params, x)


def leaf_params(layer, params):
    """``(layer, params)`` for every leaf layer of the unrolled net, in order.

    Arguments:
        layer: a layer of the graph, e.g. ``model.net.body``.
        params: its params from ``init`` (a ``repeat``'s are ``(peeled, stacked)``;
            each iteration's are indexed back out here).

    Returns:
        A generator of ``(leaf_layer, leaf_params)`` pairs, sequences and repeats
        unrolled; branch statements are leaves.
    """
    if layer.combine == "sequence":
        steps = (layer.iteration_params(params) if hasattr(layer, "iteration_params")
                 else None)
        if steps is not None:
            for p in steps:
                yield from leaf_params(layer.body, p)
            return
        for child, p in zip(layer.layers, params):
            yield from leaf_params(child, p)
    else:
        yield layer, params
