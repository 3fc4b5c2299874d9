"""Finite-width networks from the layer graph: ``init`` and ``apply``.

The same graph that defines the analytic kernels defines a finite network
whose infinite-width limit they are. Each layer class has thin ``init`` /
``apply`` methods that call the functions here (so importing the layer
classes never imports jax).

Parameterisations (``Dense`` and ``Conv``):

* ``"ntk"`` (paper eq. 1): the parameters are the trainable variables omega
  and beta, drawn from N(0, 1); ``apply`` computes
  ``W = W_std / sqrt(fan_in) * omega`` and ``b = b_std * beta``, so gradients
  with respect to the parameters give the paper's tangent kernel.
* ``"standard"`` (appendix F): ``W ~ N(0, W_std**2 / fan_in)``,
  ``b ~ N(0, b_std**2)``, used as they are.

``fan_in`` is the input channel count for Dense and ``C_in * prod(kernel)``
for Conv. A layer with ``b_std == 0`` has no bias parameter at all, so its
params are ``{"w": ...}`` only (``{"w", "b"}`` otherwise). Serial params are
a tuple with one entry per layer; Residual params are
``(branch_params, shortcut_params)`` with ``()`` for the identity shortcut.
Layers without parameters use ``()``.

Data are channel last with a leading batch axis; shapes passed to ``init``
exclude the batch axis.
"""

from __future__ import annotations

import math
import string
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..diagnostics import InputError
from .graph import Net
from .layers.base import Shape, ShapeError, per_axis

Params = Any

# letters for spatial axes in conv dimension numbers; N, C, I, O are taken
_SPATIAL = "".join(c for c in string.ascii_uppercase if c not in "NCIO")


def _normal(key, shape, dtype=None):
    return jax.random.normal(key, shape, dtype=dtype or jnp.result_type(float))


# -- affine layers ------------------------------------------------------------

def _affine_init(layer, key, w_shape: Shape, fan_in: int) -> dict:
    kw, kb = jax.random.split(key)
    w = _normal(kw, w_shape)
    params = {"w": w}
    if layer.b_std != 0:
        params["b"] = _normal(kb, (layer.out,))
    if layer.parameterization == "standard":
        params["w"] = w * (layer.W_std / math.sqrt(fan_in))
        if "b" in params:
            params["b"] = params["b"] * layer.b_std
    return params


def _affine_scales(layer, fan_in: int) -> tuple[float, float]:
    """Multipliers ``apply`` puts on the stored weights and biases."""
    if layer.parameterization == "ntk":
        return layer.W_std / math.sqrt(fan_in), layer.b_std
    return 1.0, 1.0


def dense_init(layer, key, shape: Shape) -> tuple[Shape, dict]:
    """Parameters of a Dense layer acting over the last axis of ``shape``."""
    out_shape = layer.out_shape(shape)
    fan_in = shape[-1]
    return out_shape, _affine_init(layer, key, (fan_in, layer.out), fan_in)


def dense_apply(layer, params: dict, x: jax.Array) -> jax.Array:
    """``x @ W + b`` over the last axis (per position for spatial inputs)."""
    w = params["w"]
    if x.shape[-1] != w.shape[0]:
        raise InputError(
            f"{layer.describe()} expects {w.shape[0]} input features on the last axis, "
            f"got input of shape {x.shape}"
        )
    w_scale, b_scale = _affine_scales(layer, w.shape[0])
    y = jnp.tensordot(x, w, axes=(x.ndim - 1, 0)) * w_scale
    if "b" in params:
        y = y + b_scale * params["b"]
    return y


def _dimension_numbers(nd: int) -> tuple[str, str, str]:
    sp = _SPATIAL[:nd]
    return f"N{sp}C", f"{sp}IO", f"N{sp}C"


def same_pads(sizes: Shape, window: Shape, strides: Shape) -> list[tuple[int, int]]:
    """(low, high) pads of SAME padding: total ``max((out-1)*s + k - n, 0)``, low = total // 2."""
    pads = []
    for n, k, s in zip(sizes, window, strides):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _pad_spatial(x: jax.Array, pads, mode: str) -> jax.Array:
    return jnp.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)


def _spatial_pads(padding: str, sizes: Shape, window: Shape, strides: Shape):
    """Explicit pads for VALID / SAME, and whether they wrap (CIRCULAR)."""
    if padding == "VALID":
        return [(0, 0)] * len(sizes), False
    return same_pads(sizes, window, strides), padding == "CIRCULAR"


def conv_init(layer, key, shape: Shape) -> tuple[Shape, dict]:
    """Parameters of a Conv layer: weights ``(*kernel, C_in, out)``."""
    out_shape = layer.out_shape(shape)
    nd = len(shape) - 1
    ks = per_axis(layer.kernel, nd, "kernel")
    fan_in = shape[-1] * math.prod(ks)
    return out_shape, _affine_init(layer, key, (*ks, shape[-1], layer.out), fan_in)


def conv_apply(layer, params: dict, x: jax.Array) -> jax.Array:
    """Convolution over the spatial axes (channel last); CIRCULAR wraps around."""
    w = params["w"]
    nd = w.ndim - 2
    if x.ndim != nd + 2 or x.shape[-1] != w.shape[-2]:
        raise InputError(
            f"{layer.describe()} expects input of shape (N, {nd} spatial axes, {w.shape[-2]}), "
            f"got {x.shape}"
        )
    ks = tuple(w.shape[:nd])
    ss = per_axis(layer.strides, nd, "strides")
    pads, wrap = _spatial_pads(layer.padding, x.shape[1:-1], ks, ss)
    if wrap:
        x = _pad_spatial(x, pads, "wrap")
        pads = [(0, 0)] * nd
    w_scale, b_scale = _affine_scales(layer, w.shape[-2] * math.prod(ks))
    dtype = jnp.result_type(x, w)  # lax.conv needs one dtype for both operands
    y = lax.conv_general_dilated(
        x.astype(dtype), w.astype(dtype), window_strides=ss, padding=pads,
        dimension_numbers=_dimension_numbers(nd),
    ) * w_scale
    if "b" in params:
        y = y + b_scale * params["b"]
    return y


# -- structural layers --------------------------------------------------------

def avg_pool_apply(layer, x: jax.Array) -> jax.Array:
    """Mean over each window; padded zeros count in the denominator."""
    nd = x.ndim - 2
    ws = per_axis(layer.window, nd, "window")
    ss = per_axis(layer.effective_strides, nd, "strides")
    pads, wrap = _spatial_pads(layer.padding, x.shape[1:-1], ws, ss)
    if wrap:
        x = _pad_spatial(x, pads, "wrap")
        pads = [(0, 0)] * nd
    summed = lax.reduce_window(
        x, 0.0, lax.add, (1, *ws, 1), (1, *ss, 1),  # a literal 0 keeps it differentiable
        [(0, 0), *pads, (0, 0)],
    )
    return summed / math.prod(ws)


def global_avg_pool_apply(x: jax.Array) -> jax.Array:
    """Mean over every spatial axis."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def flatten_apply(x: jax.Array) -> jax.Array:
    """All axes but the batch axis into one (row-major, channel fastest)."""
    return x.reshape(x.shape[0], -1)


# -- combinators --------------------------------------------------------------

def serial_init(layer, key, shape: Shape) -> tuple[Shape, tuple]:
    """One key per child (split in order), params as a tuple in layer order."""
    params = []
    keys = jax.random.split(key, max(len(layer.layers), 1))
    for child, k in zip(layer.layers, keys):
        try:
            shape, p = child.init(k, shape)
        except ShapeError as err:
            raise InputError(f"{child.describe()}: {err}") from None
        params.append(p)
    return shape, tuple(params)


def serial_apply(layer, params: tuple, x: jax.Array) -> jax.Array:
    """Apply the children in sequence."""
    for child, p in zip(layer.layers, params, strict=True):
        x = child.apply(p, x)
    return x


def residual_init(layer, key, shape: Shape) -> tuple[Shape, tuple]:
    """Independent params for branch and shortcut (``()`` for the identity)."""
    kb, ks = jax.random.split(key)
    out_shape, pb = layer.branch.init(kb, shape)
    ps: tuple = ()
    if layer.shortcut is not None:
        sc_shape, ps = layer.shortcut.init(ks, shape)
        if sc_shape != out_shape:
            raise InputError(
                f"Residual branch gives shape {out_shape} but the shortcut gives {sc_shape}"
            )
    elif out_shape != tuple(shape):
        raise InputError(f"Residual branch gives shape {out_shape} but the input has {shape}")
    return out_shape, (pb, ps)


def residual_apply(layer, params: tuple, x: jax.Array) -> jax.Array:
    """``branch(x) + shortcut(x)``."""
    pb, ps = params
    sc = x if layer.shortcut is None else layer.shortcut.apply(ps, x)
    return layer.branch.apply(pb, x) + sc


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


def apply(net: Net, params: Params, x) -> jax.Array:
    """The finite network's outputs: pure, so it works under jit, grad and vmap.

    Arguments:
        net: the layer graph.
        params: from :func:`init` for inputs of shape ``x.shape[1:]``.
        x: inputs with a leading batch axis, channel last.

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
    return net.body.apply(params, x)
