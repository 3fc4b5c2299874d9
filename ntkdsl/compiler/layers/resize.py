"""Upsampling: ``Resize(factor, method="nearest" | "linear")``.

A fixed linear map of the activations, separable over the spatial axes:
``y = R x`` on each axis with ``R`` the ``(n * factor, n)`` interpolation matrix
of ``jax.image.resize`` (the finite layer is ``jax.image.resize`` itself, so
both use one definition). Its kernel rule is ``rules.linear`` with
``K' = R K R^T`` on each axis pair (``covariance.axis_pair_map``). Nearest
upsampling copies one input position into each output position, so the
diagonal of its output needs only the diagonal of its input; linear
interpolation mixes neighbours and needs every pair of positions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..._lazy import lazy
from .. import covariance as cv
from ..terms import call
from .affine import check_window
from .base import LayerArgError, Shape, ShapeError, Stride, per_axis, upsampling
from .structural import Structural, _window_text

jax = lazy("jax")
jnp = lazy("jax.numpy")

METHODS = ("nearest", "linear")


@functools.lru_cache(maxsize=256)
def resize_matrix(n: int, out: int, method: str) -> np.ndarray:
    """``(out, n)``: the matrix of ``jax.image.resize`` along one axis, in float64."""
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        m = jax.image.resize(jnp.eye(n, dtype=jnp.float64), (out, n), method=method)
        return np.asarray(m, dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class Resize(Structural):
    """``Resize(factor, method="nearest")``: upsample every spatial axis by ``factor``.

    As neural-tangents' ``stax.ImageResize(shape=(-1, n1 * f1, ..., -1), method)``.
    """

    spec_name = "Resize"
    factor: int | tuple[int, ...]
    method: str = "nearest"

    #: "as_output" for nearest (set per instance): it copies positions
    input_entries: ClassVar[str] = "full"
    spatial: ClassVar[str] = "needs"

    def __post_init__(self) -> None:
        check_window(self.factor, "factor")
        if self.method not in METHODS:
            raise LayerArgError("method", f"'method' must be \"nearest\" or \"linear\", got "
                                f"{self.method!r}")
        if self.method == "nearest":
            object.__setattr__(self, "input_entries", "as_output")

    def out_shape(self, shape: Shape) -> Shape:
        nd = len(shape) - 1
        if nd < 1:
            raise ShapeError(f"Resize needs spatial axes, but its input has shape {shape} "
                             "(no spatial axes)")
        fs = per_axis(self.factor, nd, "factor")
        return (*(n * f for n, f in zip(shape[:-1], fs)), shape[-1])

    def window_args(self) -> dict[str, Stride]:
        return {"factor": self.factor}

    def stride(self) -> Stride:
        return upsampling(self.factor)

    def _mats(self, sizes):
        fs = per_axis(self.factor, len(sizes), "factor")
        return tuple((resize_matrix(n, n * f, self.method),) for n, f in zip(sizes, fs))

    def cov_map(self, k):
        full, nd = k.full, k.nd

        def M(a):
            sizes = [a.shape[2 * i] if full else a.shape[i] for i in range(nd)]
            return cv.axis_pair_map(a, full, nd, self._mats(sizes))

        return M

    def explain_map(self, latex: bool):
        note = (f"R = {self.method} upsampling by {_window_text(self.factor)}: "
                "R K R^T on each axis")
        return call("R({args})", "\\mathcal{{R}}({args})"), note

    def apply(self, params, x):
        """``jax.image.resize`` of the spatial axes (the batch and channel axes kept)."""
        nd = x.ndim - 2
        fs = per_axis(self.factor, nd, "factor")
        shape = (x.shape[0], *(n * f for n, f in zip(x.shape[1:-1], fs)), x.shape[-1])
        return jax.image.resize(x, shape, method=self.method)
