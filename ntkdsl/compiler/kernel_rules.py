"""The paired NNGP/NTK rules of every layer, on a :class:`KernelState`.

Each layer class's ``kernel_rule(k, plan)`` method delegates here (not ``kernel``:
``Conv.kernel`` is the filter size), so that the maths of all rules sits in one
module next to the state it acts on.

Layout (chosen for XLA on CPU, see docs/kernels.md): every kernel array has
its **spatial axes leading and its batch axes trailing**.

* full spatial state, ``nd`` spatial axes: ``(H, H', W, W', ..., *batch)``,
  the two positions of each spatial axis next to each other, so that the
  shifted slices of a convolution are long contiguous runs over the batch;
* diagonal state: ``(H, W, ..., *batch)``;
* no spatial axes (after Flatten / GlobalAvgPool, or a fully connected net):
  ``(*batch,)``.

The batch part of ``nngp`` / ``ntk`` is either a *grid* ``(n1, n2)`` (all
pairs of a tile of x1 and a tile of x2) or a *pair list* ``(m,)`` with index
vectors ``rows``, ``cols`` (the upper triangle ``i <= j`` when x2 is None, so
symmetric work is done once). The per-input variances ``cov1`` / ``cov2``
have batch part ``(n1,)`` / ``(n2,)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from .analysis import LayerPlan


@dataclass(frozen=True)
class KernelState:
    """The kernels of one point of the graph, during tracing.

    Attributes:
        nngp: the NNGP kernel between the two batches.
        ntk: the NTK, ``None`` when not asked for, or the Python float ``0.0``
            (the input layer's NTK, kept symbolic so no zeros are computed).
        cov1, cov2: per-input covariances (``None`` once no pointwise layer
            follows); ``cov2 is cov1`` when x2 is None (``same``).
        same: x2 is x1 (symmetric tile).
        rows, cols: pair-list indices (numpy), or ``None`` for the grid layout.
        full: pairs of positions are held (else only the diagonal).
        nd: number of spatial axes.
        covs: per-input covariances at each pointwise layer's input, keyed by
            ``id`` of the layer's plan: recorded there when ``replay`` is
            False, read from there (instead of being carried) when True. A
            chunked pair list (``kernels.build_tile_fn``) computes them once
            for all chunks.
        replay: read ``covs`` instead of ``cov1`` / ``cov2``.
    """

    nngp: object
    ntk: object
    cov1: object
    cov2: object
    same: bool
    rows: np.ndarray | None
    cols: np.ndarray | None
    full: bool
    nd: int
    covs: dict | None = None
    replay: bool = False

    @property
    def nbatch(self) -> int:
        """Trailing batch axes of nngp/ntk: 1 (pair list) or 2 (grid)."""
        return 1 if self.rows is not None else 2

    def map(self, fn, *, cov_fn=None) -> KernelState:
        """Apply a linear map (same on every array) to nngp, ntk, cov1, cov2.

        ``fn(array, nbatch)``; ``cov_fn`` (default ``fn``) for the covariances.
        The symbolic zero NTK stays zero.
        """
        cov_fn = cov_fn or fn
        ntk = self.ntk if self.ntk is None or isinstance(self.ntk, float) else fn(
            self.ntk, self.nbatch)
        cov1 = None if self.cov1 is None else cov_fn(self.cov1, 1)
        cov2 = cov1 if self.same or self.cov2 is None else cov_fn(self.cov2, 1)
        return replace(self, nngp=fn(self.nngp, self.nbatch), ntk=ntk, cov1=cov1, cov2=cov2)


# ---------------------------------------------------------------------------------------------
# spatial helpers (spatial axes leading)


def spatial_diag(a, full: bool, nd: int):
    """The per-position diagonal ``K[p, p]`` of a state array (identity if not full)."""
    if not full:
        return a
    for t in range(nd):
        # the leading pair (p, p') -> its diagonal, placed after the t axes already done
        a = jnp.diagonal(a, axis1=0, axis2=1)
        a = jnp.moveaxis(a, -1, 2 * (nd - t - 1) + t)
    return a


def _pad_amounts(n: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """(low, high, out) for a window of k, stride s over n positions (jax.lax conventions)."""
    if padding == "VALID":
        return 0, 0, (n - k) // s + 1
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2, out


def _pad(a, axes: tuple[int, ...], lo: int, hi: int, circular: bool):
    if lo == 0 and hi == 0:
        return a
    widths = [(0, 0)] * a.ndim
    for ax in axes:
        widths[ax] = (lo, hi)
    return jnp.pad(a, widths, mode="wrap" if circular else "constant")


def _slice(a, starts: dict[int, int], length: int, stride: int):
    """``a[..., start : start + stride*(length-1) + 1 : stride, ...]`` on the given axes."""
    idx = [slice(None)] * a.ndim
    for ax, st in starts.items():
        idx[ax] = slice(st, st + stride * (length - 1) + 1, stride)
    return a[tuple(idx)]


def conv_cov(a, full: bool, nd: int, kernel: tuple[int, ...], strides: tuple[int, ...],
             padding: str):
    """The patch average ``A(K)`` of a convolution acting on a covariance.

    Full state: ``A(K)[i, i'] = mean_d K[s*i + d, s*i' + d]`` (the same offset
    d on both positions of each axis pair). Diagonal state: ``mean_d K[s*i + d]``.
    Zero padding for SAME, wrap-around for CIRCULAR.

    All offsets are summed in one pass over the padded array (for a 3x3
    filter: 9 shifted slices that XLA fuses into one loop), which measured
    faster than two separable passes (3 + 3 slices, but the intermediate is
    written and read back): see benchmarks/README.md.
    """
    circular = padding == "CIRCULAR"
    outs = []
    widths = [(0, 0)] * a.ndim
    for i, (k, s) in enumerate(zip(kernel, strides)):
        axes = (2 * i, 2 * i + 1) if full else (i,)
        lo, hi, out = _pad_amounts(a.shape[axes[0]], k, s, padding)
        for ax in axes:
            widths[ax] = (lo, hi)
        outs.append(out)
    if any(w != (0, 0) for w in widths):
        # one padded copy for all axes (padding axis by axis wrote one copy per axis)
        a = jnp.pad(a, widths, mode="wrap" if circular else "constant")
    acc = None
    for offs in itertools.product(*(range(k) for k in kernel)):
        idx = [slice(None)] * a.ndim
        for i, (d, s, out) in enumerate(zip(offs, strides, outs)):
            for ax in ((2 * i, 2 * i + 1) if full else (i,)):
                idx[ax] = slice(d, d + s * (out - 1) + 1, s)
        sl = a[tuple(idx)]
        acc = sl if acc is None else acc + sl
    return acc * (1.0 / math.prod(kernel))


def pool_cov(a, nd: int, window: tuple[int, ...], strides: tuple[int, ...], padding: str):
    """Average pooling acting on a full covariance: mean over both windows, per axis."""
    circular = padding == "CIRCULAR"
    for i, (w, s) in enumerate(zip(window, strides)):
        for ax in (2 * i, 2 * i + 1):
            n = a.shape[ax]
            lo, hi, out = _pad_amounts(n, w, s, padding)
            if w == 1 and s == 1:
                continue
            p = _pad(a, (ax,), lo, hi, circular)
            acc = None
            for d in range(w):
                sl = _slice(p, {ax: d}, out, s)
                acc = sl if acc is None else acc + sl
            a = acc / w
    return a


def mean_leading(a, naxes: int):
    """The mean over the ``naxes`` leading axes, summed slice by slice in a fixed order.

    Unlike ``jnp.mean``, whose reduction order XLA may choose by shape, every
    entry is summed the same way whatever the batch size, so tiled results
    equal untiled ones bit for bit.
    """
    count = math.prod(a.shape[:naxes])
    for _ in range(naxes):
        acc = a[0]
        for i in range(1, a.shape[0]):
            acc = acc + a[i]
        a = acc
    return a * (1.0 / count)


def mean_positions(a, full: bool, nd: int):
    """The mean over positions of the diagonal ``K[p, p]`` (Flatten's readout)."""
    d = spatial_diag(a, full, nd)
    return mean_leading(d, nd) if nd else d


# ---------------------------------------------------------------------------------------------
# the rules


def _bias(b_std: float) -> float:
    return float(b_std) ** 2


def dense(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """Dense: per position over the last axis; ``A`` is the identity."""
    return _affine(layer, k, plan, lambda a, nb: a, fan_in=plan.in_shape[-1])


def conv(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """Conv: ``A`` is the patch average over the filter, with the layer's padding."""
    from .layers.base import per_axis

    nd = k.nd
    ks = per_axis(layer.kernel, nd, "kernel")
    ss = per_axis(layer.strides, nd, "strides")
    full = k.full

    def A(a, nb):
        return conv_cov(a, full, nd, ks, ss, layer.padding)

    return _affine(layer, k, plan, A, fan_in=plan.in_shape[-1] * math.prod(ks))


def _affine(layer, k: KernelState, plan: LayerPlan, A, fan_in: int) -> KernelState:
    """``K' = W^2 A(K) + b^2``; NTK: ``Theta' = K' + W^2 A(Theta)`` (standard: appendix F).

    Standard parameterisation (what the peer computes): ``Theta' = fan_in * A(K)
    + W^2 A(Theta) + [b_std > 0]``.
    """
    w2, b2 = float(layer.W_std) ** 2, _bias(layer.b_std)
    standard = layer.parameterization == "standard"

    def aff(a, nb):
        return w2 * A(a, nb) + b2

    cov1 = None if k.cov1 is None else aff(k.cov1, 1)
    cov2 = cov1 if k.same or k.cov2 is None else aff(k.cov2, 1)
    nb = k.nbatch
    a_nngp = A(k.nngp, nb)
    nngp = w2 * a_nngp + b2
    ntk = k.ntk
    if ntk is not None:
        a_ntk = 0.0 if isinstance(ntk, float) else A(ntk, nb)
        if standard:
            ntk = fan_in * a_nngp + w2 * a_ntk + (1.0 if b2 > 0 else 0.0)
        else:
            ntk = nngp + w2 * a_ntk
    return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)


def _side(v, k: KernelState, which: int):
    """Per-input variances ``v`` (spatial..., n) broadcast against nngp's layout."""
    idx = k.rows if which == 1 else k.cols
    if idx is not None:
        v = v[..., idx]
    else:
        v = v[..., :, None] if which == 1 else v[..., None, :]
    if k.full:
        # positions of side 1 sit on the even axes, side 2 on the odd ones
        shape = list(v.shape[: k.nd])
        batch = list(v.shape[k.nd:])
        new = []
        for n in shape:
            new += [n, 1] if which == 1 else [1, n]
        v = v.reshape(new + batch)
    return v


def _cov_side(v, nd: int, which: int):
    """Per-position variances (spatial..., n) broadcast against a full cov (pairs)."""
    shape = list(v.shape[:nd])
    new = []
    for n in shape:
        new += [n, 1] if which == 1 else [1, n]
    return v.reshape([*new, v.shape[-1]])


def pointwise(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """``K' = T(K11, K12, K22)``, ``Theta' = Tdot(K11, K12, K22) * Theta``."""
    if k.replay:
        c1, c2 = k.covs[id(plan)]
    else:
        c1, c2 = k.cov1, k.cov2
        if k.covs is not None:
            k.covs[id(plan)] = (c1, c2)
    v1 = spatial_diag(c1, k.full, k.nd)
    v2 = v1 if k.same else spatial_diag(c2, k.full, k.nd)
    s11, s22 = _side(v1, k, 1), _side(v2, k, 2)
    s12 = k.nngp
    if k.same and k.rows is not None:
        # the pairs (i, i) of a symmetric list are the per-input covariance itself; take
        # them from cov1 bit for bit, so their correlation is exactly 1 where it should be
        # (the closed forms turn a 1-ulp mismatch there into ~1e-8 through sqrt(1 - c^2));
        # a select, not a scatter, so it fuses into the pair function's loop
        s12 = jnp.where(k.rows == k.cols, c1[..., k.rows], s12)
    ntk = k.ntk
    if ntk is None or isinstance(ntk, float):
        nngp = layer.t_fn()(s11, s12, s22)
    else:
        nngp, tdot = layer.pair_fn()(s11, s12, s22)
        ntk = tdot * ntk
    cov1 = cov2 = None
    if plan.cov_out and not k.replay:
        def cov_update(c, v):
            if not k.full:
                return layer.diag_fn()(c)
            return layer.t_fn()(_cov_side(v, k.nd, 1), c, _cov_side(v, k.nd, 2))

        cov1 = cov_update(c1, v1)
        cov2 = cov1 if k.same else cov_update(c2, v2)
    return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)


def avg_pool(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """AvgPool: the mean over both windows (padded zeros counted), on a full state."""
    from .layers.base import per_axis

    nd = k.nd
    ws = per_axis(layer.window, nd, "window")
    ss = per_axis(layer.effective_strides, nd, "strides")
    return k.map(lambda a, nb: pool_cov(a, nd, ws, ss, layer.padding))


def global_avg_pool(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """GlobalAvgPool: the mean over all pairs of positions."""
    naxes = 2 * k.nd
    return replace(k.map(lambda a, nb: mean_leading(a, naxes)), full=False, nd=0)


def flatten(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """Flatten: the mean over positions of ``K[p, p]``."""
    full, nd = k.full, k.nd
    return replace(k.map(lambda a, nb: mean_positions(a, full, nd)), full=False, nd=0)


def run(plan: LayerPlan, k: KernelState) -> KernelState:
    """Evaluate one plan node: the layer's rule, then the cuts the plan asks for."""
    k = plan.layer.kernel_rule(k, plan)
    return _cut(k, plan.full_out, plan.cov_out)


def _cut(k: KernelState, full_out: bool, cov_out: bool) -> KernelState:
    if k.full and not full_out:
        full, nd = k.full, k.nd
        k = replace(k.map(lambda a, nb: spatial_diag(a, full, nd)), full=False)
    if not cov_out and k.cov1 is not None:
        k = replace(k, cov1=None, cov2=None)
    return k


def serial(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """Serial: the children in order."""
    for child in plan.children:
        k = run(child, k)
    return k


def residual(layer, k: KernelState, plan: LayerPlan) -> KernelState:
    """Residual: independent Gaussian paths, so the kernels add."""
    branch_plan, short_plan = plan.children
    kb = run(branch_plan, k)
    ks = _cut(k, plan.full_out, plan.cov_out) if short_plan is None else run(short_plan, k)

    def add(a, b):
        if a is None or b is None:
            return None
        return a + b

    cov1 = add(kb.cov1, ks.cov1)
    cov2 = cov1 if k.same else add(kb.cov2, ks.cov2)
    ntk = add(kb.ntk, ks.ntk)
    return replace(kb, nngp=kb.nngp + ks.nngp, ntk=ntk, cov1=cov1, cov2=cov2)
