"""The cost planner: what a kernel job will take before it runs.

From the layer graph and the memory model it chooses the tile size and
counts the tiles and the bytes on disk; a short calibration run of a few
small tiles on this machine measures the time per kernel entry, which is
extrapolated to the job (time = a + beta * entries per tile, fitted on two
tile sizes) and spread over K workers by greedy list scheduling.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np

from .diagnostics import InputError

#: most rows per tile: bigger tiles save little and make resuming coarse
MAX_TILE = 2048
#: fewest blocks per side the default tile size aims for (load balance, resumability)
MIN_BLOCKS = 8
#: smallest default tile: below it, per-call overhead dominates
MIN_TILE = 16
#: the calibration grows its tile until one takes this long (seconds)
CALIBRATION_SECONDS = 0.5


def _memory_model(model, input_shape: tuple[int, ...]):
    """``(tile_bytes(b1, b2, symmetric, itemsize), max_tile(n1, n2, sym, itemsize, memory))``.

    The only place that reads the compiler's memory model, whose home may move.
    """
    from .compiler import kernels

    p = kernels.get_plan(model, tuple(input_shape))

    def tile_bytes(b1: int, b2: int, symmetric: bool, itemsize: int) -> int:
        return int(kernels.tile_bytes(p, b1, b2, symmetric, itemsize))

    def max_tile(n1: int, n2: int, symmetric: bool, itemsize: int, memory: int) -> int:
        b = kernels.default_batch_size(p, n1, n2, symmetric, itemsize, memory=memory)
        return max(n1, n2) if b is None else int(b)

    return tile_bytes, max_tile


def available_memory() -> int:
    """Bytes of memory available on this machine now."""
    from .compiler import kernels

    return int(kernels.available_memory())


def choose_tile(model, input_shape: tuple[int, ...], n1: int, n2: int, symmetric: bool,
                itemsize: int, *, workers: int = 1, memory: int | None = None) -> int:
    """The default tile size of a store job.

    The largest size whose modelled peak fits a quarter of each worker's
    memory, at most :data:`MAX_TILE`, and small enough that each side has
    about :data:`MIN_BLOCKS` blocks (but at least :data:`MIN_TILE` rows).

    Arguments:
        model: a :class:`ntkdsl.Model`.
        input_shape: one input's shape.
        n1, n2: rows of x1 and x2.
        symmetric: x2 absent.
        itemsize: bytes per value (8 for float64).
        workers: worker processes sharing this machine's memory.
        memory: bytes per worker (default: available memory / workers).

    Returns:
        Rows per tile.
    """
    mem = available_memory() // max(1, workers) if memory is None else int(memory)
    _, max_tile = _memory_model(model, input_shape)
    b_mem = max_tile(n1, n2, symmetric, itemsize, mem)
    n = max(n1, n2)
    b_split = max(MIN_TILE, math.ceil(n / MIN_BLOCKS))
    return max(1, min(b_mem, MAX_TILE, b_split, n))


@dataclass(frozen=True)
class Calibration:
    """Measured tile times on this machine.

    Attributes:
        sizes: the calibration tile sizes (rows).
        grid_seconds: seconds of an off-diagonal tile at each size.
        diag_seconds: seconds of a diagonal tile at each size.
        compile_seconds: first-call (compile) time of the grid and diagonal tile functions.
        backend: the jax backend measured on.
    """

    sizes: tuple[int, ...]
    grid_seconds: tuple[float, ...]
    diag_seconds: tuple[float, ...]
    compile_seconds: float
    backend: str

    def _fit(self, seconds: tuple[float, ...], features) -> np.ndarray:
        """Non-negative least squares of ``seconds`` on ``features(size)`` over all sizes."""
        X = np.array([features(c) for c in self.sizes], float)
        y = np.asarray(seconds, float)
        keep = list(range(X.shape[1]))[-len(y):]  # no more terms than measurements
        while keep:
            coef, *_ = np.linalg.lstsq(X[:, keep], y, rcond=None)
            if np.all(coef >= 0):
                out = np.zeros(X.shape[1])
                out[keep] = coef
                return out
            keep.pop(int(np.argmin(coef)))
        return np.zeros(X.shape[1])

    def grid_time(self, b1: int, b2: int) -> float:
        """Predicted seconds of an off-diagonal tile of ``b1 x b2``.

        Fitted as ``a + gamma * (b1 + b2) + beta * b1 * b2``: a fixed cost, a
        per-input cost (each input's own covariances) and a per-entry cost.
        """
        coef = self._fit(self.grid_seconds, lambda c: (1.0, 2.0 * c, c * c))
        return float(coef @ (1.0, b1 + b2, b1 * b2))

    def diag_time(self, b: int) -> float:
        """Predicted seconds of a diagonal tile of ``b`` rows (x with itself)."""
        coef = self._fit(self.diag_seconds, lambda c: (1.0, c, c * (c + 1) / 2))
        return float(coef @ (1.0, b, b * (b + 1) / 2))


def calibrate(model, input_shape: tuple[int, ...], tile: int, dtype: str = "float64",
              gets: tuple[str, ...] = ("nngp", "ntk"), *,
              target_seconds: float = CALIBRATION_SECONDS, start: int = 8,
              max_size: int = 256, seed: int = 0) -> Calibration:
    """Time a few tiles on random inputs, growing the tile until one takes ``target_seconds``.

    At least three sizes are timed (when the tile allows), for the three terms
    of :meth:`Calibration.grid_time`. On a CPU the clock is this process's CPU
    time: it is what a single-threaded worker on an idle core takes, whatever
    the load on this machine while calibrating.

    Arguments:
        model: a :class:`ntkdsl.Model`.
        input_shape: one input's shape.
        tile: the job's tile size (the calibration never exceeds it).
        dtype: ``"float64"`` or ``"float32"``.
        gets: which kernels.
        target_seconds: stop growing once an off-diagonal tile takes this long.
        start: the first calibration tile's rows.
        max_size: stop growing at this many rows.
        seed: seed of the random inputs.

    Returns:
        The :class:`Calibration`.
    """
    import jax

    from .compiler.kernels import tile_kernels as block_kernels

    rng = np.random.default_rng(seed)
    sizes, grid, diag = [], [], []
    compile_s = 0.0
    c = max(1, min(start, tile, max_size))
    clock = time.process_time if jax.default_backend() == "cpu" else time.perf_counter
    while True:
        xa = rng.standard_normal((c, *input_shape))
        xb = rng.standard_normal((c, *input_shape))
        t0 = clock()
        block_kernels(model, xa, xb, c, c, gets, dtype)
        block_kernels(model, xa, None, c, c, gets, dtype)
        first = clock() - t0
        t0 = clock()
        block_kernels(model, xb, xa, c, c, gets, dtype)
        tg = clock() - t0
        t0 = clock()
        block_kernels(model, xb, None, c, c, gets, dtype)
        td = clock() - t0
        if not sizes:
            compile_s = max(first - tg - td, 0.0)
        sizes.append(c)
        grid.append(tg)
        diag.append(td)
        if (tg >= target_seconds and len(sizes) >= 3) or c >= min(tile, max_size):
            break
        c = min(2 * c, tile, max_size)
    return Calibration(tuple(sizes), tuple(grid), tuple(diag), compile_s,
                       jax.default_backend())


def makespan(costs: list[float], workers: int) -> float:
    """Wall time of greedy list scheduling of ``costs`` (in order) on ``workers`` workers."""
    if workers <= 1:
        return float(sum(costs))
    heap = [0.0] * workers
    for t in costs:
        heapq.heapreplace(heap, heap[0] + t)
    return max(heap)


def _makespan_counts(groups: list[tuple[int, float]], workers: int) -> float:
    """:func:`makespan` of ``count`` tiles of each ``cost``; a tight bound for many tiles."""
    total = sum(n * c for n, c in groups)
    if sum(n for n, _ in groups) > 100_000 or workers <= 1:
        return total if workers <= 1 else max(total / workers,
                                              max((c for n, c in groups if n), default=0))
    return makespan([c for n, c in groups for _ in range(n)], workers)


@dataclass(frozen=True)
class Plan:
    """A kernel job's cost (see :func:`make_plan`).

    Attributes:
        n1, n2: rows of x1 and x2; ``symmetric``: x2 absent.
        input_shape, dtype, gets, device: as given.
        tile: rows per tile; ``blocks``: blocks per side; ``tiles``: tiles computed.
        disk_bytes: the store's size (both kernels, full matrix, uncompressed).
        tile_bytes: modelled peak memory of one tile.
        memory: memory per worker assumed.
        calibration: the timing run (``None`` when not calibrated).
        tile_costs: ``(count, predicted seconds)`` of the diagonal and the other tiles
            (empty when not calibrated).
    """

    n1: int
    n2: int
    symmetric: bool
    input_shape: tuple[int, ...]
    dtype: str
    gets: tuple[str, ...]
    device: str
    tile: int
    blocks: tuple[int, int]
    tiles: int
    disk_bytes: int
    tile_bytes: int
    memory: int
    calibration: Calibration | None
    tile_costs: tuple[tuple[int, float], ...] = ()

    @property
    def compute_seconds(self) -> float | None:
        """Predicted total compute (one worker, excluding compilation)."""
        if self.calibration is None:
            return None
        return float(sum(n * c for n, c in self.tile_costs))

    def wall_seconds(self, workers: int) -> float | None:
        """Predicted wall time on ``workers`` workers, each compiling once."""
        if self.calibration is None:
            return None
        return self.calibration.compile_seconds + _makespan_counts(list(self.tile_costs),
                                                                   workers)

    def render(self, workers: int = 1) -> str:
        """The plan as text for the terminal."""
        shape = "x".join(map(str, self.input_shape))
        kind = "x1 with itself, upper-triangle tiles" if self.symmetric else "x1 by x2"
        lines = [
            f"kernel: {self.n1} x {self.n2} ({kind}), inputs {shape}, {self.dtype}, "
            f"get {','.join(self.gets)}",
            f"size on disk: {_bytes(self.disk_bytes)} "
            f"({len(self.gets)} x {self.n1} x {self.n2} x {np.dtype(self.dtype).itemsize} B)",
            f"tile: {self.tile} rows ({self.blocks[0]} x {self.blocks[1]} blocks, "
            f"{self.tiles} tiles to compute); memory per tile {_bytes(self.tile_bytes)} "
            f"(modelled peak, budget {_bytes(self.memory // 4)} = 1/4 of "
            f"{_bytes(self.memory)} per worker)",
        ]
        cal = self.calibration
        if cal is None:
            lines.append(f"time: not calibrated (no {self.device} on this machine)")
            return "\n".join(lines)
        sizes = ", ".join(f"{s}: {g:.3g} s" for s, g in zip(cal.sizes, cal.grid_seconds))
        lines.append(f"calibration on this machine ({cal.backend}): off-diagonal tile of "
                     f"{sizes}; compile {cal.compile_seconds:.1f} s")
        b1, b2 = min(self.tile, self.n1), min(self.tile, self.n2)
        lines.append(f"time per full tile: {_secs(cal.grid_time(b1, b2))} "
                     f"(diagonal {_secs(cal.diag_time(b1))})")
        lines.append(f"compute: {_secs(self.compute_seconds)} on one worker "
                     f"({self.compute_seconds / 3600:.3g} worker-hours)")
        for k in sorted({1, workers}):
            lines.append(f"wall time on {k} worker{'s' if k > 1 else ''}: "
                         f"{_secs(self.wall_seconds(k))}")
        return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _secs(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def make_plan(model, n: int, input_shape: tuple[int, ...], *, n2: int | None = None,
              dtype: str = "float64", gets: tuple[str, ...] = ("nngp", "ntk"),
              device: str = "cpu", workers: int = 1, tile: int | None = None,
              memory: int | None = None, calibrate_time: bool = True,
              calibration_rows: int | None = None) -> Plan:
    """Plan a kernel job of ``n`` (by ``n2``) inputs of ``input_shape``.

    Arguments:
        model: a :class:`ntkdsl.Model`.
        n: rows of x1.
        input_shape: one input's shape, e.g. ``(32, 32, 3)``.
        n2: rows of x2; ``None``: x1 with itself (symmetric).
        dtype: ``"float64"`` or ``"float32"``.
        gets: which kernels.
        device: ``"cpu"`` or ``"gpu"``: where the job will run; time is
            calibrated only when this machine's jax backend is that device.
        workers: workers sharing this machine's memory (for the tile size).
        tile: rows per tile (default: :func:`choose_tile`).
        memory: bytes per worker (default: available memory / workers).
        calibrate_time: run the calibration (else no time estimate).
        calibration_rows: time tiles of only this many rows (for nets whose
            small tiles already take long); default: grow from 8 rows until a
            tile takes :data:`CALIBRATION_SECONDS`.

    Returns:
        The :class:`Plan`.

    Raises:
        InputError: bad sizes or options. SpecError: the shape does not fit the net.
    """
    from .compiler.frontend import infer_shapes

    for name, v in (("n", n), ("n2", n2), ("workers", workers), ("tile", tile)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be float64 or float32, got {dtype!r}")
    if device not in ("cpu", "gpu"):
        raise InputError(f"device must be cpu or gpu, got {device!r}")
    input_shape = tuple(int(s) for s in input_shape)
    infer_shapes(getattr(model, "net", model), input_shape)
    sym = n2 is None
    m = n if sym else n2
    itemsize = np.dtype(dtype).itemsize
    mem = available_memory() // max(1, workers) if memory is None else int(memory)
    b = tile if tile is not None else choose_tile(model, input_shape, n, m, sym, itemsize,
                                                  workers=workers, memory=mem)
    b1, b2 = min(b, n), min(b, m)
    nb = (math.ceil(n / b1), math.ceil(m / b2))
    n_diag = nb[0] if sym else 0
    n_tiles = nb[0] * (nb[0] + 1) // 2 if sym else nb[0] * nb[1]
    tile_bytes, _ = _memory_model(model, input_shape)
    peak = tile_bytes(b1, b2, False, itemsize)
    if peak > mem:
        raise InputError(f"a tile of {b1} x {b2} needs about {_bytes(peak)} (modelled), more "
                         f"than the {_bytes(mem)} per worker: give more --memory or a "
                         "smaller --batch-size")
    cal = None
    costs: tuple[tuple[int, float], ...] = ()
    if calibrate_time:
        import jax

        backend = jax.default_backend()
        if (device == "cpu") == (backend == "cpu"):
            if calibration_rows is None:
                cal = calibrate(model, input_shape, max(b1, b2), dtype, gets)
            else:
                cal = calibrate(model, input_shape, max(b1, b2), dtype, gets,
                                start=calibration_rows, max_size=calibration_rows)
            grid = cal.grid_time(b1, b2)
            diag = cal.diag_time(b1)
            costs = ((n_diag, diag), (n_tiles - n_diag, grid))
    return Plan(n1=n, n2=m, symmetric=sym, input_shape=input_shape, dtype=dtype,
                gets=tuple(gets), device=device, tile=b, blocks=nb, tiles=n_tiles,
                disk_bytes=len(gets) * n * m * itemsize, tile_bytes=peak, memory=mem,
                calibration=cal, tile_costs=costs)
