"""Transposed and locally connected convolutions: ConvTranspose and ConvLocal.

Both follow the affine rule of ``compiler/rules.py`` (``K' = W^2 A(K) + b^2``,
``Theta' = K' + W^2 A(Theta)``; standard: ``fan_in A(K) + W^2 A(Theta) + [b > 0]``)
with ``fan_in = C_in * prod(kernel)``, as neural-tangents.

* ``ConvTranspose``: ``y[o] = sum_d W_d x[i]`` over the ``(i, d)`` with
  ``o = s*i + pad - d`` (``lax.conv_transpose``, whose SAME output is ``n*s``
  long and VALID ``n*s + max(k - s, 0)``); ``CIRCULAR`` is the VALID output
  folded onto ``n*s`` positions (centred, as neural-tangents). Independent
  weights per offset ``d`` make ``A`` separable over the axes:
  ``A(K) = prod(kernel)^-1 sum_d T_d K T_d^T`` per axis with ``T_d`` the 0/1
  index map of offset ``d`` (``covariance.axis_pair_map``).
* ``ConvLocal``: ``Conv`` with independent weights (and biases) per output
  position, so outputs at different positions are uncorrelated: its output
  covariance is Conv's patch average on the diagonal ``K[p, p]`` and zero off
  it. It reads only the diagonal of its input; when later layers need pairs of
  positions the output is written out as a full state that is zero off the
  diagonal (``covariance.diag_to_full``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..._lazy import lazy
from ...diagnostics import InputError
from .. import covariance as cv
from .. import finite
from ..terms import call
from .affine import Affine, _window_text, check_padding, check_window
from .base import Shape, ShapeError, Stride, per_axis, upsampling, windowed_spatial

jax = lazy("jax")
jnp = lazy("jax.numpy")
lax = lazy("jax.lax")


def transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
    """(low, high) padding of ``lax.conv_transpose`` for SAME / VALID (jax's rule)."""
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
    else:
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    return pad_a, pad_len - pad_a


def transpose_length(n: int, k: int, s: int, padding: str) -> int:
    """Output length of a transposed convolution over ``n`` positions."""
    if padding in ("SAME", "CIRCULAR"):
        return n * s
    return n * s + max(k - s, 0)


@functools.lru_cache(maxsize=256)
def fold_matrix(raw: int, out: int) -> np.ndarray:
    """``(out, raw)``: CIRCULAR's fold of a VALID transposed output onto ``out`` positions.

    ``y[o] = sum of raw[j]`` over ``j = o + c (mod out)``, ``c = (raw - out) // 2``.
    """
    f = np.zeros((out, raw))
    c = (raw - out) // 2
    for j in range(raw):
        f[(j - c) % out, j] = 1.0
    return f


@functools.lru_cache(maxsize=256)
def transpose_maps(n: int, k: int, s: int, padding: str) -> tuple[np.ndarray, ...]:
    """The ``(out, n)`` 0/1 matrices ``T_d``, one per filter offset ``d``, of one axis."""
    inner = "VALID" if padding == "CIRCULAR" else padding
    lo, _ = transpose_padding(k, s, inner)
    out = transpose_length(n, k, s, inner)
    mats = []
    for d in range(k):
        t = np.zeros((out, n))
        for i in range(n):
            o = s * i + lo - d
            if 0 <= o < out:
                t[o, i] = 1.0
        mats.append(t)
    if padding == "CIRCULAR":
        f = fold_matrix(out, transpose_length(n, k, s, "CIRCULAR"))
        mats = [f @ t for t in mats]
    return tuple(mats)


def _check_spatial(layer: str, shape: Shape) -> int:
    nd = len(shape) - 1
    if nd < 1:
        raise ShapeError(
            f"{layer} needs spatial axes, but its input has shape {shape} (no spatial axes)")
    return nd


@dataclass(frozen=True, kw_only=True)
class ConvTranspose(Affine):
    """``ConvTranspose(out, kernel, strides=1, padding=SAME, ...)``: transposed convolution.

    The gradient of ``Conv`` with respect to its input, as ``lax.conv_transpose``
    (the filter is not flipped) and neural-tangents' ``stax.ConvTranspose``: the
    output of SAME and CIRCULAR is ``strides`` times longer on each axis.
    """

    spec_name = "ConvTranspose"
    out: int
    kernel: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    spatial: ClassVar[str] = "needs"
    vmap_is_slow: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_window(self.kernel, "kernel")
        check_window(self.strides, "strides")
        check_padding(self.padding)
        if self.padding == "CIRCULAR":
            # the fold may add two inputs of one offset into one output: the diagonal of
            # the output then needs covariances between positions
            object.__setattr__(self, "input_entries", "full")

    def out_shape(self, shape: Shape) -> Shape:
        nd = _check_spatial("ConvTranspose", shape)
        ks = per_axis(self.kernel, nd, "kernel")
        ss = per_axis(self.strides, nd, "strides")
        sp = tuple(transpose_length(n, k, s, self.padding)
                   for n, k, s in zip(shape[:-1], ks, ss))
        return (*sp, self.out)

    def window_args(self) -> dict[str, Stride]:
        return {"kernel": self.kernel, "strides": self.strides}

    def stride(self) -> Stride:
        return upsampling(self.strides)  # it multiplies each axis by its strides

    def fan_in(self, in_shape: Shape) -> int:
        nd = len(in_shape) - 1
        return in_shape[-1] * math.prod(per_axis(self.kernel, nd, "kernel"))

    def cov_map(self, k):
        nd, full = k.nd, k.full
        ks = per_axis(self.kernel, nd, "kernel")
        ss = per_axis(self.strides, nd, "strides")
        scale = 1.0 / math.prod(ks)

        def A(a):
            sizes = [a.shape[2 * i] if full else a.shape[i] for i in range(nd)]
            mats = tuple(transpose_maps(n, kk, s, self.padding)
                         for n, kk, s in zip(sizes, ks, ss))
            return cv.axis_pair_map(a, full, nd, mats) * scale

        return A

    def explain_map(self, latex: bool):
        note = (f"A = transposed patch average over a {_window_text(self.kernel)} window, "
                f"strides {_window_text(self.strides)}, padding {self.padding}: "
                "sum_d T_d K T_d^T / prod(kernel)")
        return call("A_T({args})", "\\mathcal{{A}}^{{T}}({args})"), note

    def init(self, key, shape: Shape) -> tuple[Shape, dict]:
        """Parameters ``{"w": (*kernel, C_in, out)[, "b": (out,)]}``."""
        nd = len(shape) - 1
        ks = per_axis(self.kernel, nd, "kernel")
        return self.out_shape(shape), self.init_params(
            key, (*ks, shape[-1], self.out), self.fan_in(shape))

    def apply(self, params: dict, x):
        """``lax.conv_transpose`` (CIRCULAR: VALID, then folded onto ``n * strides``)."""
        w = params["w"]
        nd = w.ndim - 2
        if x.ndim != nd + 2 or x.shape[-1] != w.shape[-2]:
            raise InputError(
                f"{self.describe()} expects input of shape (N, {nd} spatial axes, "
                f"{w.shape[-2]}), got {x.shape}")
        ks = tuple(w.shape[:nd])
        ss = per_axis(self.strides, nd, "strides")
        w_scale, b_scale = self.scales(w.shape[-2] * math.prod(ks))
        dtype = jnp.result_type(x, w)
        pad = "VALID" if self.padding == "CIRCULAR" else self.padding
        y = lax.conv_transpose(x.astype(dtype), w.astype(dtype), ss, pad,
                               dimension_numbers=finite.dimension_numbers(nd))
        if self.padding == "CIRCULAR":
            for i, (n, s) in enumerate(zip(x.shape[1:-1], ss)):
                f = jnp.asarray(fold_matrix(y.shape[1 + i], n * s), dtype)
                y = jnp.moveaxis(jnp.tensordot(f, y, axes=(1, 1 + i)), 0, 1 + i)
        y = y * w_scale
        if "b" in params:
            y = y + b_scale * params["b"]
        return y


@dataclass(frozen=True, kw_only=True)
class ConvLocal(Affine):
    """``ConvLocal(out, kernel, strides=1, padding=SAME, ...)``: a locally connected layer.

    ``Conv`` without weight sharing: every output position has its own filter
    and bias, as neural-tangents' ``stax.ConvLocal`` (``lax.conv_general_dilated_local``).
    """

    spec_name = "ConvLocal"
    out: int
    kernel: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    spatial: ClassVar[str] = "needs"
    #: reads only K[p, p]; declared "as_output" so that a full state can follow it
    #: (its output is then written out, zero between positions)
    input_entries: ClassVar[str] = "as_output"
    vmap_is_slow: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_window(self.kernel, "kernel")
        check_window(self.strides, "strides")
        check_padding(self.padding)

    def out_shape(self, shape: Shape) -> Shape:
        sp = windowed_spatial("ConvLocal", shape, self.kernel, self.strides, self.padding,
                              "kernel")
        return (*sp, self.out)

    def window_args(self) -> dict[str, Stride]:
        return {"kernel": self.kernel, "strides": self.strides}

    def stride(self) -> Stride:
        return self.strides

    def fan_in(self, in_shape: Shape) -> int:
        nd = len(in_shape) - 1
        return in_shape[-1] * math.prod(per_axis(self.kernel, nd, "kernel"))

    def cov_map(self, k):
        nd = k.nd
        ks = per_axis(self.kernel, nd, "kernel")
        ss = per_axis(self.strides, nd, "strides")
        return lambda a: cv.conv_cov(a, False, nd, ks, ss, self.padding)

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The affine rule on the diagonal ``K[p, p]``; zero between positions."""
        if not k.full:
            return super().kernel_rule(k, plan)
        full, nd = k.full, k.nd
        kd = replace(k.map(lambda a: cv.spatial_diag(a, full, nd)), full=False)
        out = super().kernel_rule(kd, plan)
        return replace(out.map(lambda a: cv.diag_to_full(a, nd)), full=True)

    def explain_map(self, latex: bool):
        note = (f"A = patch average of the diagonal K[p, p] over a "
                f"{_window_text(self.kernel)} window, strides {_window_text(self.strides)}, "
                f"padding {self.padding}; 0 between different positions (no weight sharing)")
        return call("A_local({args})", "\\mathcal{{A}}_{{\\mathrm{{loc}}}}({args})"), note

    def init(self, key, shape: Shape) -> tuple[Shape, dict]:
        """``{"w": (*out_spatial, C_in * prod(kernel), out)[, "b": (*out_spatial, out)]}``."""
        nd = len(shape) - 1
        ks = per_axis(self.kernel, nd, "kernel")
        out_shape = self.out_shape(shape)
        params = self.init_params(key, (*out_shape[:-1], shape[-1] * math.prod(ks), self.out),
                                  self.fan_in(shape))
        if "b" in params:  # one bias per output position
            b = finite.normal(jax.random.fold_in(key, 1), (*out_shape[:-1], self.out))
            params["b"] = b * self.b_std if self.parameterization == "standard" else b
        return out_shape, params

    def apply(self, params: dict, x):
        """``lax.conv_general_dilated_local`` (CIRCULAR: wrapped, then VALID)."""
        w = params["w"]
        nd = w.ndim - 2
        if x.ndim != nd + 2:
            raise InputError(f"{self.describe()} expects input of shape (N, {nd} spatial "
                             f"axes, C), got {x.shape}")
        ks = per_axis(self.kernel, nd, "kernel")
        if w.shape[-2] != x.shape[-1] * math.prod(ks):
            raise InputError(f"{self.describe()} expects {w.shape[-2] // math.prod(ks)} "
                             f"input channels, got input of shape {x.shape}")
        ss = per_axis(self.strides, nd, "strides")
        x, pads = finite.pad_for(x, self.padding, ks, ss)
        w_scale, b_scale = self.scales(w.shape[-2])
        dtype = jnp.result_type(x, w)
        y = lax.conv_general_dilated_local(
            x.astype(dtype), w.astype(dtype), window_strides=ss, padding=pads,
            filter_shape=ks, dimension_numbers=finite.dimension_numbers(nd)) * w_scale
        if "b" in params:
            y = y + b_scale * params["b"]
        return y

