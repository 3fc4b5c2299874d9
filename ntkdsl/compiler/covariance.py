"""The kernel state and the covariance operations every layer's kernel rule is built from.

This module imports no layer: layers call down into it. It holds

* :class:`LayerPlan`, what the analysis pass decided for one layer at one
  point of the graph, and :class:`KernelState`, the kernels there while the
  fused kernel function is traced;
* the shared maps on covariances: the per-position diagonal, the patch average
  of a convolution, pooling windows, means over positions, and the broadcast
  of per-input variances against the pair layout;
* :func:`run`, which evaluates one plan node (the layer's rule, then the cuts
  the plan asks for).

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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from .._lazy import lazy

jnp = lazy("jax.numpy")

Array = Any  # a jax array (or a tracer) in the layout above
Shape = tuple[int, ...]


class KernelLayer(Protocol):
    """What the kernel pass needs of a layer: its paired rule on a state."""

    def kernel_rule(self, k: KernelState, plan: LayerPlan) -> KernelState: ...


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
        children: plans of nested layers, in the order of ``layer.children()``;
            ``None`` for an identity path of a branch statement.
        slot: for a layer that reads per-input variances, its index among them
            (in execution order): where its input covariances are recorded.
        times: how many identical iterations of this plan run in a row, as one loop
            (a ``repeat`` whose body keeps the state's shapes); ``children`` are then
            the plans of one iteration, numbered from slot 0, and ``slot`` is where
            the covariances all iterations record are kept, stacked.
    """

    layer: KernelLayer
    in_shape: Shape
    out_shape: Shape
    full_in: bool
    full_out: bool
    cov_out: bool
    children: tuple[LayerPlan | None, ...] = ()
    slot: int | None = None
    times: int = 1


@dataclass(frozen=True)
class KernelState:
    """The kernels at one point of the graph, while the kernel function is traced.

    Attributes:
        nngp: the NNGP kernel between the two batches.
        ntk: the NTK, or ``None`` while it is zero (at the input, and through
            layers without parameters before the first affine layer).
        want_ntk: whether the NTK is computed at all.
        cov1, cov2: per-input covariances (``None`` once no layer reads them);
            ``cov2 is cov1`` when ``same``.
        same: x2 is x1 (a symmetric tile).
        rows, cols: pair-list indices (numpy), or ``None`` for the grid layout.
        full: pairs of positions are held (else only the diagonal).
        nd: number of spatial axes.
        recorded: ``(slot, (cov1, cov2))`` for each variance-reading layer passed,
            when the covariances are computed once for all chunks of a pair list.
        replay: per slot, the recorded ``(cov1, cov2)`` to read instead of carrying
            them (the chunks of a pair list); ``None``: carry them.
        adjacency: per-input adjacencies of graph inputs (read by ``Aggregate``).
    """

    nngp: Array
    ntk: Array | None
    want_ntk: bool
    cov1: Array | None
    cov2: Array | None
    same: bool
    rows: np.ndarray | None
    cols: np.ndarray | None
    full: bool
    nd: int
    recorded: tuple[tuple[int, tuple[Array, Array]], ...] = ()
    replay: tuple[tuple[Array, Array], ...] | None = None
    #: graph inputs: the adjacencies ``(n1, nodes, nodes)``, ``(n2, nodes, nodes)`` of the
    #: tile's rows (the second is the first when ``same``); ``None`` for other nets
    adjacency: tuple[Array, Array] | None = None

    @property
    def nbatch(self) -> int:
        """Trailing batch axes of nngp/ntk: 1 (pair list) or 2 (grid)."""
        return 1 if self.rows is not None else 2

    def map(self, fn: Callable[[Array], Array]) -> KernelState:
        """Apply one linear map to nngp, ntk, cov1 and cov2 (a zero NTK stays zero)."""
        ntk = None if self.ntk is None else fn(self.ntk)
        cov1 = None if self.cov1 is None else fn(self.cov1)
        cov2 = cov1 if self.same or self.cov2 is None else fn(self.cov2)
        return replace(self, nngp=fn(self.nngp), ntk=ntk, cov1=cov1, cov2=cov2)

    def input_covariances(self, plan: LayerPlan) -> tuple[KernelState, Array, Array]:
        """The per-input covariances at a variance-reading layer, and the state after
        recording them (when the covariances are computed once for every chunk)."""
        if self.replay is not None:
            c1, c2 = self.replay[plan.slot]
            return self, c1, c2
        k = replace(self, recorded=(*self.recorded, (plan.slot, (self.cov1, self.cov2))))
        return k, self.cov1, self.cov2


# ---------------------------------------------------------------------------------------------
# spatial maps (spatial axes leading)


def spatial_diag(a: Array, full: bool, nd: int) -> Array:
    """The per-position diagonal ``K[p, p]`` of a state array (identity if not full)."""
    if not full:
        return a
    for t in range(nd):
        # the leading pair (p, p') -> its diagonal, placed after the t axes already done
        a = jnp.diagonal(a, axis1=0, axis2=1)
        a = jnp.moveaxis(a, -1, 2 * (nd - t - 1) + t)
    return a


def pad_amounts(n: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """(low, high, out) for a window of k, stride s over n positions (jax.lax conventions)."""
    if padding == "VALID":
        return 0, 0, (n - k) // s + 1
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2, out


def _pad(a: Array, axes: tuple[int, ...], lo: int, hi: int, circular: bool) -> Array:
    if lo == 0 and hi == 0:
        return a
    widths = [(0, 0)] * a.ndim
    for ax in axes:
        widths[ax] = (lo, hi)
    return jnp.pad(a, widths, mode="wrap" if circular else "constant")


def _slice(a: Array, starts: dict[int, int], length: int, stride: int) -> Array:
    """``a[..., start : start + stride*(length-1) + 1 : stride, ...]`` on the given axes."""
    idx = [slice(None)] * a.ndim
    for ax, st in starts.items():
        idx[ax] = slice(st, st + stride * (length - 1) + 1, stride)
    return a[tuple(idx)]


def conv_cov(a: Array, full: bool, nd: int, kernel: Shape, strides: Shape,
             padding: str) -> Array:
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
        lo, hi, out = pad_amounts(a.shape[axes[0]], k, s, padding)
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


def pool_cov(a: Array, window: Shape, strides: Shape, padding: str) -> Array:
    """Average pooling acting on a full covariance: mean over both windows, per axis."""
    circular = padding == "CIRCULAR"
    for i, (w, s) in enumerate(zip(window, strides)):
        for ax in (2 * i, 2 * i + 1):
            n = a.shape[ax]
            lo, hi, out = pad_amounts(n, w, s, padding)
            if w == 1 and s == 1:
                continue
            p = _pad(a, (ax,), lo, hi, circular)
            acc = None
            for d in range(w):
                sl = _slice(p, {ax: d}, out, s)
                acc = sl if acc is None else acc + sl
            a = acc / w
    return a


def mean_leading(a: Array, naxes: int) -> Array:
    """The mean over the ``naxes`` leading axes, summed slice by slice in a fixed order.

    Unlike ``jnp.mean``, whose reduction order XLA may choose by shape, every
    entry is summed the same way whatever the batch size, so tiled results
    agree with untiled ones to the last bits.
    """
    count = math.prod(a.shape[:naxes])
    for _ in range(naxes):
        acc = a[0]
        for i in range(1, a.shape[0]):
            acc = acc + a[i]
        a = acc
    return a * (1.0 / count)


def mean_positions(a: Array, full: bool, nd: int) -> Array:
    """The mean over positions of the diagonal ``K[p, p]`` (Flatten's readout)."""
    d = spatial_diag(a, full, nd)
    return mean_leading(d, nd) if nd else d


def side(v: Array, k: KernelState, which: int) -> Array:
    """Per-input variances ``v`` (spatial..., n) broadcast against nngp's layout."""
    idx = k.rows if which == 1 else k.cols
    if idx is not None:
        v = v[..., idx]
    else:
        v = v[..., :, None] if which == 1 else v[..., None, :]
    if k.full:
        # positions of side 1 sit on the even axes, side 2 on the odd ones
        new = []
        for n in v.shape[: k.nd]:
            new += [n, 1] if which == 1 else [1, n]
        v = v.reshape(new + list(v.shape[k.nd:]))
    return v


def cov_side(v: Array, nd: int, which: int) -> Array:
    """Per-position variances (spatial..., n) broadcast against a full cov (pairs)."""
    new = []
    for n in v.shape[:nd]:
        new += [n, 1] if which == 1 else [1, n]
    return v.reshape([*new, v.shape[-1]])


def snap_unit_correlation(s11: Array, s12: Array, s22: Array, ulps: int = 64) -> Array:
    """``s12`` with correlations within ``ulps`` rounding errors of +-1 set to exactly +-1.

    Identical inputs reach a nonlinearity through two numerical paths (their pair's
    covariance and each input's own variance), which differ in the last bits; the
    closed forms turn such a difference near correlation 1 into ~sqrt(eps) through
    ``sqrt(1 - c^2)``, and a deep net compounds it. Snapping makes identical inputs
    give identical entries in float32 and float64 alike; where the variances are
    bitwise equal the snapped covariance is that variance itself.
    """
    eps = jnp.finfo(jnp.result_type(s12)).eps
    # roots of positive variances only: sqrt'(0) = inf would turn the gradient of every
    # entry into NaN when one input has zero variance (the where's other branch is 0 * inf).
    # Each side's root is taken on its own (broadcastable) variances, not on the pairs:
    # XLA does not move a root before a broadcast, so a pair-shaped operand costs two
    # roots per entry of the chunk
    pos = (s11 > 0) & (s22 > 0)
    root = jnp.sqrt(jnp.where(s11 > 0, s11, 1.0)) * jnp.sqrt(jnp.where(s22 > 0, s22, 1.0))
    r = jnp.where(s11 == s22, s11, jnp.where(pos, root, 0.0))
    tol = ulps * eps * r
    return jnp.where(jnp.abs(s12 - r) <= tol, r, jnp.where(jnp.abs(s12 + r) <= tol, -r, s12))


def power_of_two_scale(*variances: Array) -> Array:
    """A power of two near the largest variance (at least the smallest normal number):
    dividing or multiplying by it or by its reciprocal is exact.

    A positively homogeneous nonlinearity's kernel map satisfies ``T(c s) = c T(s)``, so
    evaluating it on variances scaled by this factor (and scaling back) changes no bit of
    the result, yet keeps products such as ``s11 * s22`` from overflowing.
    """
    m = variances[0].max()
    for v in variances[1:]:
        m = jnp.maximum(m, v.max())
    # at least the smallest normal number, so that its reciprocal is a finite power of two
    # too (callers multiply by it instead of dividing: a divide per entry is one of the
    # costliest operations of a pair function on CPU); scaling subnormal variances up to
    # this is still exact and cannot overflow
    tiny = jnp.finfo(jnp.result_type(m)).tiny
    return jnp.where(m > tiny, jnp.exp2(jnp.floor(jnp.log2(jnp.where(m > tiny, m, 1.0)))), tiny)


def poison_large(s11: Array, s12: Array, s22: Array) -> Array:
    """``s12`` set to NaN where a variance is beyond what a closed form can square.

    The closed forms of non-homogeneous nonlinearities multiply two variances; past
    ``sqrt(max)`` that overflows and a few of them (erf's ``asin``) would then return a
    finite but wrong value. NaN instead reaches the finiteness check of the result,
    which reports the entries.
    """
    lim = jnp.sqrt(jnp.finfo(jnp.result_type(s12)).max) / 16
    return jnp.where((s11 > lim) | (s22 > lim), jnp.nan, s12)


# ---------------------------------------------------------------------------------------------
# evaluating the plan


def run(plan: LayerPlan, k: KernelState) -> KernelState:
    """Evaluate one plan node: the layer's rule, then the cuts the plan asks for."""
    k = plan.layer.kernel_rule(k, plan)
    return cut(k, plan.full_out, plan.cov_out)


def cut(k: KernelState, full_out: bool, cov_out: bool) -> KernelState:
    """Drop what later layers do not need: pairs of positions, per-input covariances."""
    if k.full and not full_out:
        full, nd = k.full, k.nd
        k = replace(k.map(lambda a: spatial_diag(a, full, nd)), full=False)
    if not cov_out and k.cov1 is not None:
        k = replace(k, cov1=None, cov2=None)
    return k


def add_states(states: list[KernelState]) -> KernelState:
    """The kernels of a sum of independent Gaussian branches: the branch kernels add.

    ``recorded`` covariances of every branch are kept (each branch records its
    own slots).
    """
    first = states[0]

    def total(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        out = vals[0]
        for v in vals[1:]:
            out = out + v
        return out

    covs = [s.cov1 for s in states]
    cov1 = None if any(c is None for c in covs) else total(covs)
    cov2 = cov1
    if not first.same:
        covs2 = [s.cov2 for s in states]
        cov2 = None if any(c is None for c in covs2) else total(covs2)
    recorded = dict(first.recorded)
    for s in states[1:]:
        recorded.update(s.recorded)
    return replace(first, nngp=total([s.nngp for s in states]), ntk=total([s.ntk for s in states]),
                   cov1=cov1, cov2=cov2, recorded=tuple(sorted(recorded.items(),
                                                               key=lambda kv: kv[0])))


# ---------------------------------------------------------------------------------------------
# maps of sum pooling, transposed and local convolutions, resizing, dropout


def sum_pool_cov(a: Array, window: Shape, strides: Shape, padding: str) -> Array:
    """Sum pooling on a full covariance: :func:`pool_cov` times ``prod(window)**2``."""
    return pool_cov(a, window, strides, padding) * float(math.prod(window)) ** 2


def sum_leading(a: Array, naxes: int) -> Array:
    """The sum over the ``naxes`` leading axes (:func:`mean_leading` times their size)."""
    return mean_leading(a, naxes) * float(math.prod(a.shape[:naxes]))


def axis_pair_map(a: Array, full: bool, nd: int, mats: tuple[tuple[np.ndarray, ...], ...]
                  ) -> Array:
    """``sum_d M_d K M_d^T`` on each spatial axis: the covariance of ``y = sum_d M_d x_d``.

    ``mats[i]`` are the ``(out, n)`` matrices of axis ``i``, one per independent term
    ``d`` (a filter offset of a transposed convolution; a single interpolation matrix
    for a resize). Full state: on the axis pair ``(2i, 2i+1)``,
    ``K'[o, o'] = sum_d sum_{p, p'} M_d[o, p] M_d[o', p'] K[p, p']``. Diagonal state:
    ``K'[o] = sum_d sum_p M_d[o, p]**2 K[p]``, which is exact when every row of each
    ``M_d`` has at most one non-zero entry (the caller's duty: otherwise it needs ``full``).
    """
    for i, ms in enumerate(mats):
        acc = None
        for m in ms:
            if full:
                mj = jnp.asarray(m, a.dtype)
                t = jnp.moveaxis(jnp.tensordot(mj, a, axes=(1, 2 * i)), 0, 2 * i)
                t = jnp.moveaxis(jnp.tensordot(mj, t, axes=(1, 2 * i + 1)), 0, 2 * i + 1)
            else:
                mj = jnp.asarray(m * m, a.dtype)
                t = jnp.moveaxis(jnp.tensordot(mj, a, axes=(1, i)), 0, i)
            acc = t if acc is None else acc + t
        a = acc
    return a


def diag_to_full(d: Array, nd: int) -> Array:
    """A diagonal state ``(P..., batch)`` as a full one that is zero off the diagonal.

    The covariance of a layer whose outputs at different positions are independent
    (a locally connected layer: independent weights per position).
    """
    if nd == 0:
        return d
    sp = d.shape[:nd]
    rest = d.shape[nd:]
    out = d.reshape([x for n in sp for x in (n, 1)] + list(rest))
    for i, n in enumerate(sp):
        shape = [1] * (2 * nd) + [1] * len(rest)
        shape[2 * i], shape[2 * i + 1] = n, n
        out = out * jnp.eye(n, dtype=d.dtype).reshape(shape)
    return out


def same_sample_diagonal(a: Array, factor: float, k: KernelState, batch: str) -> Array:
    """``a`` with the entries of one sample at one position multiplied by ``factor``.

    These are the entries whose two activations share a dropout mask: the same
    position (``p == p'`` on every spatial axis; every entry of a diagonal state)
    of the same sample. ``batch`` says which batch entries are the same sample:
    ``"all"`` (a per-input covariance ``cov1``/``cov2``), ``"pairs"`` (``nngp``/``ntk``:
    the pairs ``(i, i)`` when x2 is x1, none otherwise).
    """
    nb = a.ndim - (2 * k.nd if k.full else k.nd)
    mask = np.ones((1,) * nb, dtype=bool)
    if batch == "pairs":
        if not k.same:
            return a
        if k.rows is not None:
            # traced inside the chunks of a pair list: a jax comparison, not numpy
            mask = jnp.asarray(k.rows) == jnp.asarray(k.cols)
        else:
            mask = np.eye(a.shape[-2], a.shape[-1], dtype=bool)
    spatial = np.ones((), dtype=bool)
    if k.full:
        sp = a.shape[: 2 * k.nd]
        spatial = np.ones(sp, dtype=bool)
        for i in range(k.nd):
            shape = [1] * (2 * k.nd)
            shape[2 * i], shape[2 * i + 1] = sp[2 * i], sp[2 * i + 1]
            spatial = spatial & np.eye(sp[2 * i], sp[2 * i + 1], dtype=bool).reshape(shape)
    else:
        spatial = spatial.reshape((1,) * k.nd)
    where = jnp.asarray(spatial.reshape(spatial.shape + (1,) * nb)) & jnp.reshape(
        mask, (1,) * spatial.ndim + tuple(mask.shape))
    return jnp.where(where, a * factor, a)
