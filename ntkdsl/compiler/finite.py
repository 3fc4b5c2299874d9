"""Shared pieces of the finite-width layers: random normals, padding, conv dimension numbers.

Imports no layer; the layer classes call down into it.
"""

from __future__ import annotations

import itertools
import string

from .._lazy import lazy

jax = lazy("jax")
jnp = lazy("jax.numpy")

Shape = tuple[int, ...]

# letters for spatial axes in conv dimension numbers; N, C, I, O are taken
_SPATIAL = "".join(c for c in string.ascii_uppercase if c not in "NCIO")


def normal(key, shape: Shape, dtype=None):
    """Standard normal draws of ``shape`` (the default float dtype when ``dtype`` is None)."""
    return jax.random.normal(key, shape, dtype=dtype or jnp.result_type(float))


def dimension_numbers(nd: int) -> tuple[str, str, str]:
    """``lax.conv_general_dilated`` dimension numbers for channel-last data, HWIO weights."""
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


def pad_for(x, padding: str, window: Shape, strides: Shape):
    """``(x, pads)`` for a sliding window: CIRCULAR pads ``x`` by wrapping (pads then 0),
    SAME returns the zero pads for lax to apply, VALID none."""
    sizes = x.shape[1:-1]
    if padding == "VALID":
        return x, [(0, 0)] * len(sizes)
    pads = same_pads(sizes, window, strides)
    if padding == "CIRCULAR":
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode="wrap")
        return x, [(0, 0)] * len(sizes)
    return x, pads


def window_patches(x, padding: str, window: Shape, strides: Shape):
    """``(N, *out_spatial, prod(window) * C)``: every window of ``x`` (channel last) as a row.

    Features are ordered (window offsets, then channels), as HWIO weights reshaped to
    ``(-1, C_out)``, so a convolution is ``window_patches(x) @ w.reshape(-1, C_out)``.
    Built from strided slices, not from a convolution with an identity filter (whose
    cost would grow with the square of the row length).
    """
    x, pads = pad_for(x, padding, window, strides)
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    outs = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], window, strides)]
    rows = []
    for offsets in itertools.product(*(range(k) for k in window)):
        index = tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offsets, outs, strides))
        rows.append(x[(slice(None), *index, slice(None))])
    p = jnp.stack(rows, axis=-2)
    return p.reshape(*p.shape[:-2], -1)
