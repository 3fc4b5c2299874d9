"""Layer graph -> one fused, jitted JAX function for the NNGP kernel and the NTK.

:func:`evaluate_kernel` is what ``Model.kernel_fn`` calls. Per (net, per-input
shape, tile shape, dtype, ``get``) the whole recursion (``analysis.plan`` then
each layer's ``kernel_rule``, see ``compiler/layers``) is traced once into a
single ``jax.jit`` function, compiled once and reused.

Symmetric work once: with ``x2=None`` the rows of a tile are paired with
themselves as a list of the pairs ``i <= j`` only (the upper triangle), and
the matrix is mirrored at the end, so each pair is computed once.

Chunks: a tile's pair list runs through the whole net in chunks of pairs
sized to the cache (``lax.map``; ``CHUNK_ENTRIES`` entries per array), the
per-input covariances computed once before the chunks; peak memory is then
the output plus the covariances, not the per-pair state of the whole tile.

Tiling (``batch_size=B``): x1 and x2 are cut into blocks of B rows (the last
one ragged: padded by repeating its last row, and the extra rows dropped), and
the kernel is assembled from tiles; with ``x2=None`` only the tiles on and
above the diagonal are computed, the others are their transposes. Entries
go through nearly the same arithmetic whichever tile they fall in (inputs
summed in a fixed order, spatial means summed slice by slice), so tiled
results agree with untiled ones to rounding: within a few ulps (measured
below 1e-14 relative to the largest entry), not bit for bit, because a
matmul's and XLA's vectorised loops round by shape. With no ``batch_size``
the tile size is the smaller of what fits a quarter of the available memory
and what keeps a tile to ``TILE_ENTRIES`` kernel entries (about a second of
work, so Ctrl-C, handled between tiles, stops a run promptly); a result that
cannot fit in memory at all is refused up front (see docs/kernels.md).

Precision: float64 by default, inside a local ``jax.enable_x64(True)``
context around each call (the user's ``jax.config`` is never changed); the
results are numpy arrays, so nothing of the context leaks out. float32 is
used when asked for, on float32 inputs, and every constant of the rules is a
Python scalar, so it stays float32.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..compile_cache import CachedFunction, available_cores, prepare_all
from ..diagnostics import InputError
from ..io import check_cast, progress_bar
from ..result import Kernel
from . import covariance as cv
from .adjacency import feature_shape, pack_inputs
from .adjacency import split as split_graphs
from .analysis import count_variance_readers, needs_cov_in, plan
from .covariance import KernelState, LayerPlan
from .graph import Net
from .inputs import check_inputs

GETS = ("nngp", "ntk")
_DTYPES = {"float64": np.float64, "float32": np.float32}
#: tiles at least this many show a progress bar by default
PROGRESS_MIN_TILES = 8


# ---------------------------------------------------------------------------------------------
# options


def parse_get(get) -> tuple[tuple[str, ...], bool]:
    """``get`` as a tuple of kernel names, and whether a single array is returned.

    Raises:
        InputError: an unknown name or an empty tuple.
    """
    single = isinstance(get, str)
    names = (get,) if single else tuple(get)
    if not names:
        raise InputError("get must name at least one of 'nngp', 'ntk', got an empty tuple")
    for n in names:
        if n not in GETS:
            raise InputError(f"get must be 'nngp', 'ntk' or a tuple of them, got {n!r}")
    return names, single


def parse_dtype(dtype) -> np.dtype:
    """``None`` -> float64; 'float32' / 'float64' or numpy dtypes; else InputError."""
    if dtype is None:
        return np.dtype(np.float64)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in _DTYPES:
        raise InputError(f"dtype must be float64 or float32, got {dtype!r}")
    return dt


# ---------------------------------------------------------------------------------------------
# the traced function of one tile


def _input_state(x1, x2, p: LayerPlan, rows, cols, need_ntk: bool, need_cov: bool
                 ) -> KernelState:
    """The kernels of the inputs: ``x1 . x2 / C`` per pair of positions (or per position).

    With spatial axes the products are formed by broadcasting in the state's
    layout and summed over channels in a fixed order, one fused pass with no
    transposes and no gather of the big tensor; every entry is computed the
    same way whatever the tile, so tiled and untiled results are equal.
    """
    nd = len(p.in_shape) - 1
    full = p.full_in and nd > 0
    c = p.in_shape[-1]
    same = x2 is None
    # graph inputs arrive packed with their adjacencies (compiler/adjacency.py)
    (x1, g1), (x2, g2) = split_graphs(x1, p), split_graphs(x2, p)
    graphs = None if g1 is None else (g1, g1 if same else g2)
    y2 = x1 if same else x2

    def side(x, idx, which):
        """(n, *S, C) -> spatial..., C, batch, broadcast for side 1 or 2 of the layout."""
        x = jnp.moveaxis(x, 0, -1)  # (*S, C, n)
        if idx is not None:
            x = x[..., idx]
        else:  # grid: (n1, 1) against (1, n2)
            x = x[..., :, None] if which == 1 else x[..., None, :]
        if full:
            shape = []
            for n in x.shape[:nd]:
                shape += [n, 1] if which == 1 else [1, n]
            x = x.reshape(shape + list(x.shape[nd:]))
        return x

    if nd == 0:
        # x1, x2 are (k0, v1) and (v2,) here: see fc_inputs
        (nngp, v1), v2 = x1, (None if same else x2)
        if rows is not None:
            nngp = nngp[rows, cols]
        cov1 = cov2 = None
        if need_cov:
            cov1 = v1
            cov2 = cov1 if same else v2
        return KernelState(nngp=nngp, ntk=None, want_ntk=need_ntk, cov1=cov1, cov2=cov2,
                           same=same, rows=rows, cols=cols, full=False, nd=0)
    else:
        prod = side(x1, rows, 1) * side(y2, cols, 2)
        nngp = jnp.sum(prod, axis=(2 * nd if full else nd)) / c

    def cov(x):
        xs = jnp.moveaxis(x, 0, -1)
        if not full:
            return jnp.sum(xs * xs, axis=nd) / c
        s1, s2 = [], []
        for n in xs.shape[:nd]:
            s1 += [n, 1]
            s2 += [1, n]
        a = xs.reshape(s1 + list(xs.shape[nd:]))
        b = xs.reshape(s2 + list(xs.shape[nd:]))
        return jnp.sum(a * b, axis=2 * nd) / c

    cov1 = cov2 = None
    if need_cov:
        cov1 = cov(x1)
        cov2 = cov1 if same else cov(x2)
    return KernelState(nngp=nngp, ntk=None, want_ntk=need_ntk, cov1=cov1, cov2=cov2,
                       same=same, rows=rows, cols=cols, full=full, nd=nd, adjacency=graphs)


def _fc_gram_fn(x1, x2):
    c = x1.shape[-1]
    k0 = jnp.matmul(x1, x2.T, precision=jax.lax.Precision.HIGHEST) / c
    return k0, jnp.sum(x1 * x1, axis=-1) / c, jnp.sum(x2 * x2, axis=-1) / c


_fc_gram = CachedFunction(lambda: jax.jit(_fc_gram_fn), ("fc_gram",))


def fc_inputs(a1, a2):
    """For a fully connected net: the input Gram matrix and row norms of one tile.

    A tiled kernel computes this per tile (from the tile's rows), so no array of
    the result's size exists besides the result; a matmul's rounding depends on
    the matrix shape, so tiled results agree with untiled ones to rounding
    (about 1e-16 relative), not bit for bit.
    """
    k0, v1, v2 = _fc_gram(a1, a1 if a2 is None else a2)
    return k0, v1, v2


def _final(a, k: KernelState):
    """An output with spatial axes left: the per-output kernel is the mean over positions."""
    return cv.mean_positions(a, k.full, k.nd) if k.nd else a


#: entries per kernel array that one chunk of a pair list holds on CPU (see
#: build_tile_fn): 512 KB in float64, so a chunk's intermediates stay in cache
#: (measured best of 16k..256k on the benchmark nets, benchmarks/README.md)
CHUNK_ENTRIES = 1 << 16
#: the same on an accelerator, where a chunk must fill the device rather than a
#: cache (not measured: no GPU was available to the session that chose it)
ACCEL_CHUNK_ENTRIES = 1 << 24


def chunk_entries() -> int:
    """Entries per array of one chunk on the default backend."""
    return CHUNK_ENTRIES if jax.default_backend() == "cpu" else ACCEL_CHUNK_ENTRIES


def chunk_pairs(p: LayerPlan, m: int, entries: int | None = None) -> int:
    """Pairs per chunk: a chunk's arrays hold about :func:`chunk_entries` entries each."""
    entries = chunk_entries() if entries is None else entries
    return max(1, min(m, entries // positions_factor(p)))


def _index_dtype(m: int):
    return jnp.int32 if m < 2**30 else jnp.int64  # i * n stays below 2 m


def symmetric_pairs(n: int) -> int:
    """Length of a symmetric tile's pair list of ``n`` rows (see :func:`_pair_of`)."""
    return (n + 1) // 2 * (n + 1)


def _pair_of(q, n1: int, n2: int | None):
    """``(rows, cols)`` of the pair positions ``q`` (integer array) in a tile's pair list.

    A grid (``n2`` given) is row-major. A symmetric tile (``n2 is None``) lists the
    upper triangle ``i <= j`` folded into a rectangle of ``ceil(n / 2)`` rows of
    ``n + 1`` pairs: folded row ``t`` holds the triangle's row ``t`` (columns
    ``t .. n - 1``) and then its row ``n - 1 - t`` (columns ``n - 1 - t .. n - 1``),
    so a position's pair takes one division by a constant and a select (a row-major
    triangle needs a square root per pair; the fold took 5-10% off a fully connected
    kernel). When ``n`` is odd the middle row's second half
    repeats pairs of its first; those results are never read (:func:`_pair_position`).
    """
    if n2 is not None:
        return q // n2, q % n2
    w = n1 + 1
    t = q // w
    c = q - t * w
    first = c < n1 - t
    return jnp.where(first, t, n1 - 1 - t), jnp.where(first, t + c, c - 1)


def _pair_position(lo, hi, n: int):
    """Position of pair ``(lo, hi)``, ``lo <= hi``, in the folded list of :func:`_pair_of`."""
    w = n + 1
    return jnp.where(2 * lo <= n - 1, lo * w + hi - lo, (n - 1 - lo) * w + hi + 1)


def build_tile_fn(p: LayerPlan, n1: int, n2: int | None, gets: tuple[str, ...],
                  chunk: int | None = None):
    """The jitted function of one tile.

    The pairs of the tile (the upper triangle ``i <= j`` of a symmetric tile,
    ``n2 is None``; else the whole grid, row-major) are run as a pair list in
    chunks of ``chunk`` pairs (``lax.map``; default :func:`chunk_pairs`), so that each layer's
    intermediates (XLA stores several per pointwise map: the shared roots
    and divides of T and Tdot) stay in cache instead of making passes over
    main memory. The per-input covariances are computed once, before the
    chunks (recorded at each layer that reads them, then replayed in every chunk).

    Arguments:
        p: the net's plan (for ``net.body``).
        n1: rows of the x1 tile.
        n2: rows of the x2 tile; ``None``: the tile of x1 with itself
            (symmetric: pairs ``i <= j`` only, mirrored).
        gets: which kernels to return.
        chunk: pairs per chunk; ``None``: :func:`chunk_pairs`.

    Returns:
        ``fn(x1)`` (symmetric) or ``fn(x1, x2)``, returning a tuple of
        ``(n1, n2)`` arrays in the order of ``gets``. For a fully connected
        net the inputs are ``fc_inputs``' ``(k0, v1)`` and ``v2``, or raw
        ``(n, features)`` arrays.
    """
    need_ntk = "ntk" in gets
    need_cov = needs_cov_in(p.layer, False)
    sym = n2 is None
    # the pair list (the folded upper triangle, or the grid row-major) and the mirror
    # gather are computed from iotas inside the function, not stored as constants: the
    # executable stays small (it is cached on disk) and compiles faster
    m = symmetric_pairs(n1) if sym else n1 * n2
    mc = chunk_pairs(p, m) if chunk is None else max(1, min(m, chunk))
    nchunks = -(-m // mc)
    shape = (n1, n1 if sym else n2)

    def outputs(k: KernelState, n_out):
        outs = []
        for g in gets:
            a = k.nngp if g == "nngp" else k.ntk
            if a is None:  # a net without any Dense/Conv: the NTK is zero
                outs.append(jnp.zeros(n_out, k.nngp.dtype))
            else:
                outs.append(_final(a, k))
        return tuple(outs)

    def assemble(a):
        a = a.reshape(-1)[:m]
        if not sym:
            return a.reshape(shape)
        # position of pair (min(i, j), max(i, j)) in the list: the matrix is one gather
        # (XLA's CPU scatter is serial, a gather is a vectorised loop)
        it = _index_dtype(m)
        i = jax.lax.broadcasted_iota(it, shape, 0)
        j = jax.lax.broadcasted_iota(it, shape, 1)
        return a[_pair_position(jnp.minimum(i, j), jnp.maximum(i, j), n1)]

    def chunked(x1, x2):
        covs = None
        if len(p.in_shape) > 1:
            # per-input covariances at every pointwise layer, once (a one-pair list whose
            # pair kernels are dead code); a fully connected net's are vectors of the
            # tile's rows, which each chunk computes itself (loop-invariant, so XLA hoists
            # them), and the net is traced once
            probe = np.zeros(1, np.int32)
            k = cv.run(p, _input_state(x1, x2, p, probe, probe, need_ntk, need_cov))
            covs = tuple(c for _, c in k.recorded)
        it = _index_dtype(nchunks * mc)

        def body(ci):
            # the last chunk's padding repeats the last pair (its results are dropped)
            q = jnp.minimum(ci * mc + jax.lax.iota(it, mc), m - 1)
            r, c = _pair_of(q, n1, n2)
            if covs is None:
                return outputs(cv.run(p, _input_state(x1, x2, p, r, c, need_ntk, need_cov)),
                               (mc,))
            kc = replace(_input_state(x1, x2, p, r, c, need_ntk, False), replay=covs)
            return outputs(cv.run(p, kc), (mc,))

        res = jax.lax.map(body, jnp.arange(nchunks, dtype=it))
        return tuple(assemble(a) for a in res)

    def fn(x1, x2=None):
        if len(p.in_shape) == 1 and not isinstance(x1, tuple):
            # a fully connected net called on raw (n, features) arrays (as predict does):
            # its Gram matrix here (evaluate_kernel passes fc_inputs)
            k0, v1, v2 = _fc_gram(x1, x1 if x2 is None else x2)
            x1, x2 = (k0, v1), (None if x2 is None else v2)
        if nchunks > 1:
            return chunked(x1, x2)
        rows, cols = _pair_of(jax.lax.iota(_index_dtype(m), m), n1, n2)
        k = _input_state(x1, x2, p, rows, cols, need_ntk, need_cov)
        k = cv.run(p, k)
        return tuple(a if a.ndim == 2 else assemble(a) for a in outputs(k, shape))

    return jax.jit(fn)


# ---------------------------------------------------------------------------------------------
# memory model and tiling


def positions_factor(p: LayerPlan) -> int:
    """The largest number of kernel entries per pair of inputs at any point of the net."""
    best = 1

    def visit(q: LayerPlan | None):
        nonlocal best
        if q is None:
            return
        for shape, full in ((q.in_shape, q.full_in), (q.out_shape, q.full_out)):
            npos = math.prod(shape[:-1]) if len(shape) > 1 else 1
            best = max(best, npos * npos if full else npos)
        for c in q.children:
            visit(c)

    visit(p)
    return best


#: bytes per pair of inputs of a tile outside the chunks: the stacked chunk results,
#: the assembled (n1, n2) kernels, the pair indices and the mirror gather (measured
#: ~120 B per pair on a 1797-image Flatten CNN, nngp + ntk in float64; see docs/kernels.md)
PAIR_BYTES = 160
#: arrays of one chunk's size (CHUNK_ENTRIES entries) alive at once inside a chunk
CHUNK_LIVE = 32
#: what a tile costs whatever its size (XLA's compilation of the chunk loop, buffers):
#: measured ~250 MB above the interpreter's baseline for a 200-image GAP tile
OVERHEAD_BYTES = 256 << 20


def tile_bytes(p: LayerPlan, n1: int, n2: int, symmetric: bool, itemsize: int) -> int:
    """The modelled peak memory of one tile of ``n1 x n2`` inputs (bytes).

    Pairs are processed in cache-sized chunks, so the per-pair state never
    exists for the whole tile; what grows with the tile is its output (per
    pair) and the per-input covariances kept for every pointwise layer
    (``positions_factor`` entries per input: ``P^2`` for pooled readouts).
    """
    pairs = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    inputs = n1 if symmetric else n1 + n2
    covs = 2 * count_variance_readers(p) * inputs * positions_factor(p) * itemsize
    return (pairs * PAIR_BYTES + covs + CHUNK_LIVE * chunk_entries() * itemsize
            + OVERHEAD_BYTES)


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or 4 GiB if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def default_batch_size(p: LayerPlan, n1: int, n2: int, symmetric: bool, itemsize: int,
                       memory: int | None = None) -> int | None:
    """A tile size that keeps a tile's modelled peak within a quarter of the available memory.

    Returns:
        ``None`` when the whole kernel fits (no tiling), else the tile size B
        (the largest with :func:`tile_bytes` ``(B, B)`` within the budget).
    """
    budget = (available_memory() if memory is None else memory) // 4
    if tile_bytes(p, n1, n2, symmetric, itemsize) <= budget:
        return None
    lo, hi = 1, max(n1, n2)
    while lo < hi:  # largest b with an off-diagonal b x b tile within the budget
        mid = (lo + hi + 1) // 2
        if tile_bytes(p, mid, mid, False, itemsize) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


#: kernel entries (pairs x positions) one tile may hold when the tile size is chosen
#: automatically: about a second of work on one CPU core, so that Ctrl-C (handled
#: between tiles) stops a run promptly and the progress bar moves
TILE_ENTRIES = 1 << 23


def responsive_batch_size(p: LayerPlan, n1: int, n2: int, symmetric: bool,
                          entries: int = TILE_ENTRIES) -> int | None:
    """The largest tile size whose tiles hold at most ``entries`` kernel entries.

    Returns:
        ``None`` when the whole kernel is within that (one tile), else the size B.
    """
    pf = positions_factor(p)
    pairs = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    if pairs * pf <= entries:
        return None
    return max(1, math.isqrt(max(1, entries // pf)))


def tile_threads() -> int:
    """Threads that compute the tiles of a tiled kernel at once: this process's cores."""
    return available_cores()


def result_bytes(n1: int, n2: int, n_kernels: int, itemsize: int) -> int:
    """Bytes of the result itself: ``n_kernels`` arrays of ``n1 x n2``."""
    return n1 * n2 * n_kernels * itemsize


def _blocks(n: int, b: int) -> list[tuple[int, int]]:
    return [(s, min(s + b, n)) for s in range(0, n, b)]


def _padded(x: np.ndarray, lo: int, hi: int, b: int) -> np.ndarray:
    """Rows lo:hi, padded to b rows by repeating the last one (results for them are dropped)."""
    blk = x[lo:hi]
    if hi - lo < b:
        blk = np.concatenate([blk, np.repeat(blk[-1:], b - (hi - lo), axis=0)])
    return blk


def _progress(total: int, progress) -> Any:
    if progress is None and total < PROGRESS_MIN_TILES:
        return None
    if progress is False:
        return None
    return progress_bar(total, "kernel tiles", progress, unit="tile", leave=True)


# ---------------------------------------------------------------------------------------------
# entry point


def _net(model) -> Net:
    net = getattr(model, "net", model)
    if not isinstance(net, Net):
        raise InputError(f"expected a Model or a Net, got {type(model).__name__}")
    return net


def get_plan(model, in_shape: tuple[int, ...]) -> LayerPlan:
    """The plan of ``model``'s net for inputs of ``in_shape`` (cached on the net)."""
    net = _net(model)
    return plan(net, feature_shape(net, in_shape))  # a graph net's rows are packed


@functools.lru_cache(maxsize=64)
def _tile_fn_cached(net: Net, in_shape: tuple[int, ...], n1: int, n2: int | None,
                    dtype: str, gets: tuple[str, ...]):
    # compiled once per process, and kept on disk for the next one (compile_cache.py);
    # the key is everything the traced function reads: the net (not its name), the
    # shapes, the chunk size
    key = ("tile", repr(net.body), net.input_shape, in_shape, n1, n2, dtype, gets,
           chunk_entries())
    return CachedFunction(lambda: build_tile_fn(plan(net, in_shape), n1, n2, gets), key)


def _tile_fn(model, p: LayerPlan, n1: int, n2: int | None, dt: np.dtype, gets):
    """The jitted function of one tile shape, cached on the (hashable) net and shapes."""
    return _tile_fn_cached(_net(model), p.in_shape, n1, n2, dt.name, tuple(gets))


def evaluate_kernel(model, x1, x2=None, get=GETS, *, dtype=None, batch_size=None,
                    progress=None, out=None, adjacency1=None, adjacency2=None):
    """The analytic NNGP kernel and/or NTK between the rows of ``x1`` and ``x2``.

    Arguments:
        model: a :class:`ntkdsl.Model` (or a :class:`Net`).
        x1: inputs ``(n1, *input_shape)``, channel last.
        x2: inputs ``(n2, *input_shape)``; ``None`` means x1 with itself.
        get: ``"nngp"``, ``"ntk"`` or a tuple of them.
        dtype: float64 (default) or float32.
        batch_size: tile size over rows (any positive int; the last tile may be
            ragged); ``None``: no tiling unless the kernel would not fit in
            memory, then a size chosen from the available memory.
        progress: show a progress bar over tiles; ``None``: when there are
            at least ``PROGRESS_MIN_TILES`` tiles (and stderr is a terminal).
        out: optional ``{name: array}`` of preallocated ``(n1, n2)`` outputs (a
            ``np.memmap``, a zarr array): tiles are written there as they finish,
            so the result need not fit in memory.
        adjacency1, adjacency2: for a net with ``Aggregate``, each graph's adjacency
            ``(n1, nodes, nodes)`` / ``(n2, nodes, nodes)`` (arrays or
            ``ntkdsl.graphs.EdgeList``); given to another net, an error.

    Memory: a tile holds at most its own pairs (``TILE_ENTRIES`` kernel entries
    when the tile size is chosen automatically), so the peak is the result plus
    one tile; a result that cannot fit in the available memory is refused up
    front (pass ``out`` or use the kernel store) instead of failing halfway.

    Returns:
        For a string ``get`` the ``(n1, n2)`` numpy array; for a tuple a
        :class:`Kernel` with those attributes set. Computed in a local
        ``jax.enable_x64(True)`` context: the caller's jax configuration is
        left as it was.

    Raises:
        InputError: bad inputs or options (one line: expected vs received).
    """
    with jax.enable_x64(True):
        return _evaluate(model, x1, x2, get, dtype, batch_size, progress, out,
                         (adjacency1, adjacency2))


def _first_occurrences(*blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(keep, inverse)`` when the rows of ``blocks`` (taken in order) repeat, else ``None``.

    ``keep`` lists the first occurrence of each distinct row in its original order,
    ``inverse`` maps every row to its position in ``keep``. Rows are compared by a hash
    of their bytes (then exactly), one row at a time, so no copy of the inputs is made
    unless a row repeats.
    """
    seen: dict[int, list[int]] = {}
    rows = [r for b in blocks for r in b]
    inverse = np.empty(len(rows), np.int64)
    keep: list[int] = []
    for n, r in enumerate(rows):
        for k in seen.setdefault(hash(r.tobytes()), []):
            if np.array_equal(rows[keep[k]], r):
                inverse[n] = k
                break
        else:
            seen[hash(r.tobytes())].append(len(keep))
            inverse[n] = len(keep)
            keep.append(n)
    if len(keep) == len(rows):
        return None
    return np.asarray(keep), inverse


def _evaluate(model, x1, x2, get, dtype, batch_size, progress, out, graphs=(None, None),
              checked=False):
    gets, single = parse_get(get)
    dt = parse_dtype(dtype)
    net = _net(model)
    if checked:  # rows already checked, cast and (graph nets) packed by the caller
        a1, a2 = x1, x2
    else:
        a1, a2 = check_inputs(net, x1, x2)
        a1, a2 = pack_inputs(net, a1, a2, *graphs)  # graph rows carry their adjacency
        a1 = check_cast(a1, dt, "x1")
        a2 = None if a2 is None else check_cast(a2, dt, "x2")
    if out is None:
        # identical inputs must give identical entries: compute each distinct input once
        # (the kernel of a repeated row is then a copy, not a recomputation that XLA may
        # round differently in another vector lane)
        n1 = a1.shape[0]
        dup = _first_occurrences(a1) if a2 is None else _first_occurrences(a1, a2)
        if dup is not None and (a2 is None or len(dup[0]) * (len(dup[0]) + 1) // 2
                                <= n1 * a2.shape[0]):
            keep, inverse = dup
            rows = a1 if a2 is None else np.concatenate([a1, a2])
            k = _evaluate(model, rows[keep], None, gets, dt, batch_size, progress, None,
                          checked=True)
            i1 = inverse[:n1]
            i2 = i1 if a2 is None else inverse[n1:]
            full = {g: np.asarray(getattr(k, g))[np.ix_(i1, i2)] for g in gets}
            return full[gets[0]] if single else Kernel(nngp=full.get("nngp"),
                                                      ntk=full.get("ntk"))
    p = get_plan(model, tuple(a1.shape[1:]))
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    sym = a2 is None

    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
                or batch_size <= 0:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        b = int(batch_size)
    else:
        sizes = [default_batch_size(p, n1, n2, sym, dt.itemsize),
                 responsive_batch_size(p, n1, n2, sym)]
        sizes = [s for s in sizes if s is not None]
        b = min(sizes) if sizes else None
        if b is not None:
            # as many blocks as b allows, of equal size: a ragged last block is padded to b
            # rows, so 64 rows in blocks of 45 computed 4095 pairs for 2080
            n = max(n1, n2)
            b = -(-n // -(-n // b))
    if out is None:
        need = result_bytes(n1, n2, len(gets), dt.itemsize)
        have = available_memory()
        if need > 0.8 * have:
            raise InputError(
                f"the kernel itself needs {need / 2**30:.1f} GiB ({len(gets)} x {n1} x {n2} "
                f"{dt.name}) but only {have / 2**30:.1f} GiB of memory is available: write it "
                "to a kernel store (ntkdsl kernel --store K.zarr) or pass out= arrays")
    if out is not None:
        outs = _tiled(model, p, a1, a2, b or max(n1, n2), dt, gets, progress, out)
    elif b is None or b >= max(n1, n2):
        fc = fc_inputs(a1, a2) if len(p.in_shape) == 1 else None
        if fc is not None:
            k0, v1, v2 = fc
            outs = (_tile_fn(model, p, n1, None, dt, gets)((k0, v1)) if sym else
                    _tile_fn(model, p, n1, n2, dt, gets)((k0, v1), v2))
        elif sym:
            outs = _tile_fn(model, p, n1, None, dt, gets)(a1)
        else:
            outs = _tile_fn(model, p, n1, n2, dt, gets)(a1, a2)
        outs = tuple(np.asarray(o) for o in outs)
        for g, o in zip(gets, outs):
            check_finite(o, g, dt)
    else:
        outs = _tiled(model, p, a1, a2, b, dt, gets, progress)

    result = dict(zip(gets, outs))
    if single:
        return result[gets[0]]
    return Kernel(nngp=result.get("nngp"), ntk=result.get("ntk"))


def check_finite(a: np.ndarray, name: str, dt: np.dtype, offset: tuple[int, int] = (0, 0)
                 ) -> None:
    """Refuse a non-finite kernel computed from finite inputs, naming the entries.

    Raises:
        InputError: how many entries, the first one, and the likely cause.
    """
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    first = tuple(int(v) + o for v, o in zip(np.argwhere(bad)[0], offset))
    raise InputError(
        f"the {name} kernel has {int(bad.sum())} non-finite entries (the first at "
        f"{list(first)}) although the inputs are finite: the inputs' scale overflows "
        f"{dt.name} in this net; scale the inputs down"
        + (" or compute in float64" if dt == np.float32 else ""))


def tile_kernels(model, rows1: np.ndarray, rows2: np.ndarray | None, b1: int, b2: int,
                 gets: tuple[str, ...], dtype) -> dict[str, np.ndarray]:
    """One tile's kernels from its row blocks, padded to the tile shape so it compiles once.

    The one tile computation of the package: the in-memory tiler, the kernel store's
    engine and the planner's calibration all call it, so a tile's bits do not depend
    on which of them computed it.

    Arguments:
        model: a :class:`ntkdsl.Model` (or a ``Net``).
        rows1: the tile's rows of x1 (at most ``b1``), already checked and cast.
        rows2: its rows of x2 (at most ``b2``); ``None`` for a diagonal tile of a
            symmetric kernel (x1 with itself: its pairs ``i <= j`` only).
        b1, b2: the tile shape to pad to (the last block of a ragged split is padded by
            repeating its last row; those entries are dropped).
        gets: which kernels.
        dtype: ``float64`` or ``float32``.

    Returns:
        ``{name: array (len(rows1), len(rows2 or rows1))}``, numpy.
    """
    dt = parse_dtype(dtype)
    with jax.enable_x64(True):
        rows1 = np.asarray(rows1, dt)
        p = get_plan(model, tuple(rows1.shape[1:]))
        m1 = len(rows1)
        x1 = _padded(rows1, 0, m1, b1)
        if rows2 is None:
            x2, m2, fn = None, m1, _tile_fn(model, p, b1, None, dt, gets)
        else:
            rows2 = np.asarray(rows2, dt)
            m2 = len(rows2)
            x2, fn = _padded(rows2, 0, m2, b2), _tile_fn(model, p, b1, b2, dt, gets)
        if len(p.in_shape) == 1:  # fully connected: the tile's own Gram matrix
            k0, v1, v2 = _fc_gram(x1, x1 if x2 is None else x2)
            res = fn((k0, v1)) if x2 is None else fn((k0, v1), v2)
        else:
            res = fn(x1) if x2 is None else fn(x1, x2)
        return {g: np.asarray(r)[:m1, :m2] for g, r in zip(gets, res)}


def _tile_specs(p: LayerPlan, row_shape: tuple, b1: int, b2: int | None, dt: np.dtype):
    """The argument shapes of a ``b1 x b2`` tile function (``b2`` None: a diagonal tile)."""
    spec = jax.ShapeDtypeStruct
    if len(p.in_shape) == 1:  # fully connected: the tile's Gram matrix and row norms
        gram = (spec((b1, b1 if b2 is None else b2), dt), spec((b1,), dt))
        return (gram,) if b2 is None else (gram, spec((b2,), dt))
    x1 = spec((b1, *row_shape), dt)
    return (x1,) if b2 is None else (x1, spec((b2, *row_shape), dt))


def _prepare_symmetric_tiles(model, p: LayerPlan, row_shape: tuple, b: int, dt: np.dtype,
                             gets) -> None:
    """Load or compile the diagonal and the off-diagonal tile functions of ``b`` rows together."""
    prepare_all([(_tile_fn(model, p, b, None, dt, gets), _tile_specs(p, row_shape, b, None, dt)),
                 (_tile_fn(model, p, b, b, dt, gets), _tile_specs(p, row_shape, b, b, dt))])


def _tiled(model, p, a1, a2, b, dt, gets, progress, out=None):
    """Assemble the kernel from tiles of at most b x b (symmetric tiles computed once).

    A fully connected net's tile reads the Gram matrix of its own rows only, so no
    ``n1 x n2`` array exists besides the result; with ``out`` not even that.
    """
    sym = a2 is None
    n1 = a1.shape[0]
    n2 = n1 if sym else a2.shape[0]
    b1, b2 = min(b, n1), min(b, n2)
    blocks1 = _blocks(n1, b1)
    blocks2 = blocks1 if sym else _blocks(n2, b2)
    if sym:
        tiles = [(i, j) for i in range(len(blocks1)) for j in range(i, len(blocks1))]
    else:
        tiles = [(i, j) for i in range(len(blocks1)) for j in range(len(blocks2))]
    outs = ([out[g] for g in gets] if out is not None
            else [np.empty((n1, n2), dt) for _ in gets])
    threads = min(tile_threads(), len(tiles))
    if sym and len(blocks1) > 1:
        # the diagonal tiles (pairs i <= j) and the others are two functions: compiled at once
        _prepare_symmetric_tiles(model, p, a1.shape[1:], b1, dt, gets)
    elif not sym and threads > 1:
        # every tile of a grid is one function: made and compiled here, before the threads,
        # so that they share it (two threads asking the function cache at once would each
        # build and compile their own)
        _tile_fn(model, p, b1, b2, dt, gets).prepare(*_tile_specs(p, a1.shape[1:], b1, b2, dt))
    bar = _progress(len(tiles), progress)

    def compute(tile):
        i, j = tile
        (lo1, hi1), (lo2, hi2) = blocks1[i], blocks2[j]
        rows2 = None if sym and i == j else (a1 if sym else a2)[lo2:hi2]
        return tile_kernels(model, a1[lo1:hi1], rows2, b1, b2, gets, dt)

    def store(tile, res):
        (lo1, hi1), (lo2, hi2) = blocks1[tile[0]], blocks2[tile[1]]
        for g, o in zip(gets, outs):
            r = res[g]
            check_finite(r, g, dt, (lo1, lo2))
            o[lo1:hi1, lo2:hi2] = r
            if sym and tile[0] != tile[1]:
                o[lo2:hi2, lo1:hi1] = r.T
        if bar is not None:
            bar.update(1)

    try:
        if threads < 2:
            for tile in tiles:
                store(tile, compute(tile))
        else:
            _tiles_in_threads(tiles, compute, store, threads)
    finally:
        if bar is not None:
            bar.close()
    return tuple(outs)


def _tiles_in_threads(tiles, compute, store, threads: int) -> None:
    """``store(tile, compute(tile))`` for every tile, computed by ``threads`` threads.

    XLA runs an executable without the GIL, and one tile's chunk loop keeps a second
    core only partly busy (its per-chunk loops are small), so tiles side by side finish
    sooner (12-18% on the tiled benchmark cases b and d, 2 cores); the results are
    stored by this thread in tile order (``out=`` arrays such as a zarr store are
    written by one thread only), with at most two tiles per thread computed ahead, so
    memory stays a few tiles. An error or Ctrl-C here cancels the tiles not started and
    waits for the running ones (each at most ``TILE_ENTRIES`` entries of work).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    ex = ThreadPoolExecutor(threads, thread_name_prefix="ntkdsl-tile")
    pending: deque = deque()
    try:
        for tile in tiles:
            pending.append((tile, ex.submit(compute, tile)))
            if len(pending) >= 2 * threads:
                tile0, fut = pending.popleft()
                store(tile0, fut.result())
        while pending:
            tile0, fut = pending.popleft()
            store(tile0, fut.result())
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
