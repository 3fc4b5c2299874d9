"""The tile engine: compute a kernel store's missing tiles in-process or on Dask.

A tile task is a pure function of (job, tile index): it reads its rows of the
inputs, computes the tile with the public ``Model.kernel_fn`` and writes it to
the store durably (see :mod:`ntkdsl.store`). Any worker can run any tile, so a
worker that dies mid-tile loses only that tile, which Dask runs again
elsewhere. Each worker process compiles the tile function once per job: the
model is cached per process under the job id, and every tile is padded to the
full tile size so all tiles share one compiled shape (one for the diagonal
tiles of a symmetric job).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .diagnostics import InputError
from .store import (
    InputRef,
    KernelStore,
    TileWriter,
    blocks,
    hash_array,
    open_input,
    open_kernel,
    prepare_store,
    set_metadata,
)

GETS = ("nngp", "ntk")


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to compute any tile of one job (small, picklable).

    Arguments:
        job_id: a hash of the job's identity (keys the per-process model cache).
        net: the layer graph (a frozen dataclass: pure data, no code).
        store: absolute path of the store directory.
        x1, x2: where to read the inputs (``x2`` ``None``: symmetric job).
        tile: rows per tile.
        gets: ``("nngp", "ntk")`` or a subset.
        dtype: ``"float64"`` or ``"float32"``.
    """

    job_id: str
    net: Any
    store: str
    x1: InputRef
    x2: InputRef | None
    tile: int
    gets: tuple[str, ...]
    dtype: str

    @property
    def symmetric(self) -> bool:
        """Whether x2 is x1 (upper-triangle tiles only)."""
        return self.x2 is None

    @property
    def n1(self) -> int:
        """Rows of x1."""
        return self.x1.shape[0]

    @property
    def n2(self) -> int:
        """Rows of x2 (of x1 when symmetric)."""
        return self.n1 if self.x2 is None else self.x2.shape[0]

    def tile_rows(self) -> tuple[int, int]:
        """The compiled tile shape ``(b1, b2)`` (the tile size, or less for tiny inputs)."""
        return min(self.tile, self.n1), min(self.tile, self.n2)


# ---------------------------------------------------------------------------------------------
# the tile task (runs on workers)

_MODELS: dict[str, Any] = {}
_WRITERS: dict[str, TileWriter] = {}


def _model(job: TileJob):
    """The job's model, compiled once per process (kernel_fn caches its compiled tiles on it)."""
    model = _MODELS.get(job.job_id)
    if model is None:
        from .model import Model

        model = _MODELS[job.job_id] = Model(job.net)
    return model


def block_kernels(model, rows1: np.ndarray, rows2: np.ndarray | None, b1: int, b2: int,
                  gets: tuple[str, ...], dtype: str) -> dict[str, np.ndarray]:
    """One tile's kernels: the compiler's one tile computation (``kernels.tile_kernels``)."""
    from .compiler.kernels import tile_kernels

    return tile_kernels(model, rows1, rows2, b1, b2, tuple(gets), dtype)


def compute_tile(job: TileJob, i: int, j: int) -> dict[str, Any]:
    """Compute tile ``(i, j)`` of ``job`` and write it to the store (then mark it done).

    Arguments:
        job: the job.
        i, j: block indices (``i <= j`` for a symmetric job).

    Returns:
        ``{"tile": (i, j), "seconds": compute time, "pid": worker process}``.
    """
    b1, b2 = job.tile_rows()
    r = blocks(job.n1, b1)[i]
    c = blocks(job.n2, b2)[j]
    x1 = job.x1.open()
    rows1 = np.asarray(x1[r[0]:r[1]])
    if job.symmetric:
        rows2 = None if i == j else np.asarray(x1[c[0]:c[1]])
    else:
        rows2 = np.asarray(job.x2.open()[c[0]:c[1]])
    t0 = time.perf_counter()
    values = block_kernels(_model(job), rows1, rows2, b1, b2, job.gets, job.dtype)
    seconds = time.perf_counter() - t0
    for g, v in values.items():
        if not np.all(np.isfinite(v)):
            raise InputError(f"tile ({i}, {j}): the {g} kernel is not finite")
    # keyed on the job too: a store replaced by --overwrite has other chunks under that path
    key = f"{job.job_id}:{job.store}"
    writer = _WRITERS.get(key)
    if writer is None:
        writer = _WRITERS[key] = TileWriter(Path(job.store))
    writer.write(i, j, r, c, values, job.symmetric)
    return {"tile": (i, j), "seconds": seconds, "pid": os.getpid()}


# ---------------------------------------------------------------------------------------------
# the driver


def _input(x, what: str, name: str) -> tuple[InputRef | None, np.ndarray | None]:
    """A file reference for a path, or the array itself (to be copied into the store)."""
    if isinstance(x, str | os.PathLike):
        return open_input(x, what), None
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return None, a


def _check_shapes(net, s1: tuple[int, ...], s2: tuple[int, ...] | None) -> None:
    from .compiler.frontend import infer_shapes

    for name, s in (("x1", s1), ("x2", s2)):
        if s is None:
            continue
        if len(s) < 2 or s[0] == 0:
            raise InputError(f"{name} has shape {s}: expected (n, *input_shape) with n >= 1")
    if s2 is not None and tuple(s2[1:]) != tuple(s1[1:]):
        raise InputError(f"x2 has shape {s2}, but x1 has {s1}: the per-input shapes must agree")
    infer_shapes(net, tuple(s1[1:]))


def _identity_hash(meta: dict[str, Any]) -> str:
    from .store import IDENTITY_FIELDS

    ident = {k: meta.get(k) for k, _ in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def _spec_text(net) -> str:
    try:
        return Path(net.filename).read_text()
    except (OSError, TypeError, ValueError):
        return ""


def compute_kernel_store(model, x1, x2=None, store: str | os.PathLike = "kernel.zarr", *,
                         get=GETS, dtype: str = "float64", tile_size: int | None = None,
                         client=None, overwrite: bool = False, progress: bool | None = None,
                         spec_text: str | None = None,
                         overrides: dict[str, str] | None = None,
                         log: Callable[[str], None] | None = None) -> KernelStore:
    """Compute the kernels of ``model`` into a resumable zarr store, tile by tile.

    Rerunning the same call after a crash computes only the missing tiles.

    Arguments:
        model: a :class:`ntkdsl.Model` (or its ``Net``).
        x1: inputs ``(n1, *input_shape)``: a path to an ``.npy`` file or a
            zarr array (workers read only their rows), or an array (copied
            into the store so that workers can read it).
        x2: the same for the second argument; ``None``: x1 with itself
            (only the upper-triangle tiles are computed).
        store: the store directory (``K.zarr``).
        get: ``"nngp"``, ``"ntk"`` or both (default).
        dtype: ``"float64"`` (default) or ``"float32"``.
        tile_size: rows per tile; ``None``: chosen from the memory model
            (see :func:`ntkdsl.plan.choose_tile`).
        client: a ``distributed.Client`` to run the tiles on; ``None``: in
            this process.
        overwrite: replace a store of a different job instead of refusing.
        progress: a tqdm bar over tiles; ``None``: when stderr is a terminal.
        spec_text: the spec source recorded in the metadata (default: the
            net's file, if readable).
        overrides: the ``--set`` overrides recorded in the metadata.
        log: called with one-line status messages (default: silent).

    Returns:
        The finished store (:func:`ntkdsl.open_kernel`).

    Raises:
        InputError: bad inputs, a store of a different job, an unwritable path.
        SpecError: the inputs' shape does not fit the net.
    """
    from . import __version__
    from .plan import choose_tile

    net = getattr(model, "net", model)
    from .compiler.adjacency import aggregates

    if aggregates(net):
        raise InputError(f"the kernel store does not support graph inputs yet (net "
                         f"'{net.name}' has Aggregate): compute the kernel with "
                         "Model.kernel_fn(..., adjacency1=...) or ntkdsl kernel -o OUT.npz")
    gets = (get,) if isinstance(get, str) else tuple(get)
    if not gets or any(g not in GETS for g in gets) or len(set(gets)) != len(gets):
        raise InputError(f"get must be nngp, ntk or both, got {get!r}")
    gets = tuple(g for g in GETS if g in gets)
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be float64 or float32, got {dtype!r}")
    ref1, arr1 = _input(x1, "--x1", "x1")
    ref2, arr2 = (None, None) if x2 is None else _input(x2, "--x2", "x2")
    s1 = ref1.shape if ref1 is not None else arr1.shape
    s2 = None if x2 is None else (ref2.shape if ref2 is not None else arr2.shape)
    _check_shapes(net, tuple(s1), None if s2 is None else tuple(s2))
    sym = x2 is None
    n1 = s1[0]
    n2 = n1 if sym else s2[0]
    itemsize = np.dtype(dtype).itemsize
    if tile_size is not None:
        if isinstance(tile_size, bool) or not isinstance(tile_size, int | np.integer) \
                or tile_size <= 0:
            raise InputError(f"tile size must be a positive integer, got {tile_size!r}")
        b = int(tile_size)
    else:
        workers = 1 if client is None else max(1, len(client.scheduler_info()["workers"]))
        b = choose_tile(model, tuple(s1[1:]), n1, n2, sym, itemsize, workers=workers)
    b1, b2 = min(b, n1), min(b, n2)

    def describe(ref, arr):
        a = ref.open() if ref is not None else arr
        return {"hash": hash_array(a), "shape": list(a.shape), "dtype": np.dtype(a.dtype).name}

    meta: dict[str, Any] = {
        "n1": int(n1), "n2": int(n2), "symmetric": sym,
        "blocks": [len(blocks(n1, b1)), len(blocks(n2, b2))],
        "tile": b, "dtype": dtype, "get": list(gets),
        "net_name": net.name, "net_params": repr(net.params), "net_layers": repr(net.body),
        "spec_text": _spec_text(net) if spec_text is None else spec_text,
        "spec_file": str(getattr(net, "filename", "")),
        "overrides": dict(overrides or {}),
        "x1": describe(ref1, arr1), "x2": None if sym else describe(ref2, arr2),
        "x1_path": ref1.path if ref1 is not None else None,
        "x2_path": ref2.path if ref2 is not None else None,
        "ntkdsl_version": __version__,
    }
    inputs = {}
    if arr1 is not None:
        inputs["x1"] = arr1
    if arr2 is not None:
        inputs["x2"] = arr2
    ks = prepare_store(store, meta, inputs=inputs, overwrite=overwrite)
    path = str(ks.path)
    if ref1 is None:
        ref1 = InputRef(f"{path}/inputs/x1", "zarr", tuple(arr1.shape), arr1.dtype.name)
    if not sym and ref2 is None:
        ref2 = InputRef(f"{path}/inputs/x2", "zarr", tuple(arr2.shape), arr2.dtype.name)
    job = TileJob(_identity_hash(meta), net, path, ref1, None if sym else ref2, b, gets, dtype)

    total = len(ks.all_tiles())
    todo = ks.missing_tiles()
    if log is not None:
        log(f"kernel store {store}: {total} tiles of {b1}x{b2}, {total - len(todo)} already "
            f"done, computing {len(todo)}")
    t0 = time.perf_counter()
    if todo:
        if client is None:
            _run_local(job, todo, progress)
        else:
            _run_dask(job, todo, client, progress)
    missing = ks.missing_tiles()
    if missing:  # a worker could only fail to mark a tile by raising, so this is a bug
        raise RuntimeError(f"{len(missing)} tiles were not recorded as done")
    set_metadata(path, complete=True)
    if log is not None:
        log(f"kernel store {store}: computed {len(todo)} tiles in "
            f"{time.perf_counter() - t0:.1f} s; {total} of {total} done")
    return open_kernel(path)


def _bar(total: int, progress: bool | None):
    show = sys.stderr.isatty() if progress is None else progress
    if not show or os.environ.get("NTKDSL_NO_PROGRESS") == "1":
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="kernel tiles", unit="tile", file=sys.stderr)


def _run_local(job: TileJob, todo: list[tuple[int, int]], progress: bool | None) -> None:
    bar = _bar(len(todo), progress)
    try:
        for i, j in todo:
            compute_tile(job, i, j)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _run_dask(job: TileJob, todo: list[tuple[int, int]], client, progress: bool | None) -> None:
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]
    # the job is shipped once per worker, not once per tile
    [job_f] = client.scatter([job], broadcast=True, hash=False)
    futures = [client.submit(compute_tile, job_f, i, j, key=f"ntkdsl-tile-{run}-{i}-{j}",
                             pure=False) for i, j in todo]
    bar = _bar(len(todo), progress)
    try:
        for fut in as_completed(futures):
            fut.result()  # re-raises a tile's error (e.g. InputError) here
            if bar is not None:
                bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------------
# clusters


def worker_env(threads: int = 1) -> dict[str, str]:
    """Environment for single-threaded worker processes (one core each, no oversubscription)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        flags = (f"{flags} --xla_cpu_multi_thread_eigen=false "
                 f"intra_op_parallelism_threads={threads}").strip()
    return {"XLA_FLAGS": flags, "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def local_cluster(workers: int):
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes.

    Arguments:
        workers: how many worker processes.

    Returns:
        The cluster (a context manager; closing it stops the workers).
    """
    import logging

    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        silence_logs=logging.ERROR, dashboard_address=":0",
                        env=worker_env(1))


def dashboard(client) -> str | None:
    """The client's dashboard address, or ``None`` when the dashboard is not running."""
    try:
        info = client.scheduler_info()
        if not info.get("services", {}).get("dashboard"):
            return None
        return client.dashboard_link
    except Exception:
        return None
