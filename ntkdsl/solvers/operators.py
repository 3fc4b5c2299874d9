"""Kernel operators: "multiply the train kernel by a block of vectors", whatever holds it.

Every iterative solver in :mod:`ntkdsl.solvers` sees the train kernel only
through :class:`KernelOperator`: ``matmat(V) = K V`` for a block ``V`` of shape
``(n, c)``, a few rows ``K[idx, :]`` (for the pivoted-Cholesky preconditioner)
and the diagonal. Three backends:

* :class:`DenseOperator`: an in-memory matrix.
* :class:`ArrayOperator`: any 2-D array that slices like numpy by row ranges
  (a ``np.load(..., mmap_mode="r")`` ``.npy``, a zarr array, the ``.nngp`` /
  ``.ntk`` of a kernel store), streamed by blocks of rows. Storage may be float32
  or float64; each block is converted to float64 and products accumulate in
  float64, so memory is bounded by one block.
* :class:`MatrixFreeOperator`: tiles recomputed from the spec on the fly with
  ``model.kernel_fn(x_rows, x_train)``; the kernel is never stored.

All return float64 numpy arrays, check every block for NaN/inf, and count the
passes over the kernel and the largest block they held (``stats``), which the
tests use to prove that a solve stayed within bounded memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..diagnostics import InputError

DEFAULT_BLOCK_BYTES = 128 * 2**20
CACHE_BLOCK_BYTES = 16 * 2**20
"""A read block is converted to float64 and multiplied in sub-blocks of about this size:
the float64 copy then stays in cache instead of being written to memory and read back.
Measured on a float32 memory-mapped n = 40,000 kernel (2 cores): a one-vector product
4.2 s with 279-row blocks -> 1.4 s with 32-row sub-blocks; 51 vectors 7.7 s -> 4.7 s."""


@dataclass
class OperatorStats:
    """Counters of one operator: passes over the kernel, rows read, largest block in bytes."""

    passes: int = 0
    rows_read: int = 0
    max_block_bytes: int = 0

    def block(self, rows: int, n: int, itemsize: int = 8) -> None:
        """Record one block of ``rows x n`` entries held at once."""
        self.rows_read += rows
        self.max_block_bytes = max(self.max_block_bytes, rows * n * itemsize)


class KernelOperator:
    """A symmetric ``(n, n)`` train kernel seen through products (see module docs).

    Subclasses implement :meth:`_row_block` (rows ``i0:i1`` as float64); the rest
    is shared. ``shift`` is added to the diagonal in :meth:`matmat` (the
    regulariser; see :func:`regularized`).
    """

    n: int
    shift: float = 0.0
    name: str = "kernel"
    storage_dtype: Any = np.float64

    def __init__(self) -> None:
        self.stats = OperatorStats()
        self._diag: np.ndarray | None = None

    # -- to implement -------------------------------------------------------
    def _row_block(self, i0: int, i1: int) -> np.ndarray:
        raise NotImplementedError

    def _rows_at(self, idx: np.ndarray) -> np.ndarray:
        return np.concatenate([self._row_block(int(i), int(i) + 1) for i in idx], axis=0)

    def block_rows(self) -> int:
        """Rows per streamed block (bounded memory: about ``DEFAULT_BLOCK_BYTES``)."""
        return max(1, min(self.n, DEFAULT_BLOCK_BYTES // (12 * max(self.n, 1))))

    # -- shared -------------------------------------------------------------
    def _checked(self, block: np.ndarray, i0: int) -> np.ndarray:
        block = np.asarray(block, dtype=np.float64)
        if not np.all(np.isfinite(block)):
            bad = np.argwhere(~np.isfinite(block))[0]
            raise InputError(f"{self.name}: expected finite kernel entries, got "
                             f"{block[tuple(bad)]} at row {i0 + int(bad[0])}, "
                             f"column {int(bad[1])}")
        return block

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """``(K + shift I) V`` for ``V`` of shape ``(n, c)`` (or ``(n,)``), in float64."""
        v = np.asarray(v, np.float64)
        vec = v.ndim == 1
        v2 = v[:, None] if vec else v
        if v2.shape[0] != self.n:
            raise InputError(f"{self.name}: expected vectors with {self.n} rows, "
                             f"got shape {v.shape}")
        out = self._matmat(v2)
        if self.shift:
            out += self.shift * v2
        self.stats.passes += 1
        return out[:, 0] if vec else out

    def _matmat(self, v: np.ndarray) -> np.ndarray:
        out = np.empty((self.n, v.shape[1]), np.float64)
        b = self.block_rows()
        sub = max(1, CACHE_BLOCK_BYTES // (8 * max(self.n, 1)))
        for i0 in range(0, self.n, b):
            i1 = min(self.n, i0 + b)
            blk = self._row_block(i0, i1)
            self.stats.block(i1 - i0, self.n)
            for j0 in range(0, i1 - i0, sub):
                j1 = min(i1 - i0, j0 + sub)
                out[i0 + j0:i0 + j1] = np.asarray(blk[j0:j1], np.float64) @ v
            # a NaN/inf entry of K makes its row of K V non-finite (v is finite), so the
            # block is searched only then, not converted a second time for the check
            if not np.all(np.isfinite(out[i0:i1])):
                self._checked(blk, i0)
                raise InputError(f"{self.name}: expected finite vectors in the product, "
                                 f"got NaN/inf")
        return out

    def rows(self, idx) -> np.ndarray:
        """Rows ``K[idx, :]`` (without the shift) as float64 ``(len(idx), n)``."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = self._checked(self._rows_at(idx), int(idx[0]) if idx.size else 0)
        self.stats.block(len(idx), self.n)
        return out

    def diagonal(self) -> np.ndarray:
        """The diagonal of ``K`` (without the shift), float64 ``(n,)``; computed once."""
        if self._diag is None:
            self._diag = self._diagonal()
            if not np.all(np.isfinite(self._diag)):
                raise InputError(f"{self.name}: expected a finite diagonal, got NaN/inf")
        return self._diag

    def _diagonal(self) -> np.ndarray:
        d = np.empty(self.n)
        b = self.block_rows()
        for i0 in range(0, self.n, b):
            i1 = min(self.n, i0 + b)
            blk = self._row_block(i0, i1)
            self.stats.block(i1 - i0, self.n)
            d[i0:i1] = np.asarray(blk, np.float64)[np.arange(i1 - i0), np.arange(i0, i1)]
        return d

    def trace(self) -> float:
        """``trace(K)`` (without the shift)."""
        return float(np.sum(self.diagonal()))


class DenseOperator(KernelOperator):
    """An in-memory ``(n, n)`` kernel matrix (float32 or float64)."""

    def __init__(self, k, name: str = "kernel") -> None:
        super().__init__()
        k = np.asarray(k)
        _check_square(k, name)
        self.k, self.n, self.name, self.storage_dtype = k, k.shape[0], name, k.dtype
        if not np.all(np.isfinite(k)):
            bad = int(np.sum(~np.isfinite(k)))
            raise InputError(f"{name}: expected finite values, got {bad} NaN/inf entries "
                             f"in an array of shape {k.shape}")

    def _row_block(self, i0, i1):
        return self.k[i0:i1]

    def _rows_at(self, idx):
        return self.k[idx]

    def _matmat(self, v):
        self.stats.block(self.n, self.n, self.k.dtype.itemsize)
        if self.k.dtype == np.float64:
            return self.k @ v
        return super()._matmat(v)

    def _diagonal(self):
        return np.diagonal(self.k).astype(np.float64)


class ArrayOperator(KernelOperator):
    """Any 2-D row-sliceable array (memory-mapped ``.npy``, zarr, a kernel store), streamed.

    Arguments:
        array: ``(n, n)``, supporting ``array[i0:i1]`` and ``.shape`` / ``.dtype``.
        block_bytes: memory for one float64 block of rows (default 128 MiB).
        name: how errors name the kernel.
    """

    def __init__(self, array, *, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 name: str = "kernel") -> None:
        super().__init__()
        _check_square(array, name)
        self.array, self.n, self.name = array, int(array.shape[0]), name
        self.storage_dtype = np.dtype(getattr(array, "dtype", np.float64))
        self.block_bytes = int(block_bytes)

    def block_rows(self) -> int:
        per_row = self.n * (8 + self.storage_dtype.itemsize)
        return max(1, min(self.n, self.block_bytes // max(per_row, 1)))

    def _row_block(self, i0, i1):
        return np.asarray(self.array[i0:i1])


class MatrixFreeOperator(KernelOperator):
    """Kernel tiles recomputed from the spec on every product: nothing of ``K`` is stored.

    A product walks the upper-triangle tiles (:func:`.tiles.upper_tiles`) and uses each
    twice, ``out[I] += K_IJ v[J]`` and ``out[J] += K_IJ^T v[I]``, so it costs half a
    kernel evaluation and holds one tile.

    Arguments:
        model: a compiled :class:`ntkdsl.Model`.
        x_train: ``(n, *input_shape)`` training inputs.
        get: ``"nngp"`` or ``"ntk"``.
        block_rows: side of one recomputed tile (default :func:`.tiles.tile_side`).
        name: how errors name the kernel.
    """

    def __init__(self, model, x_train, get: str = "ntk", *, block_rows: int | None = None,
                 name: str | None = None) -> None:
        from .tiles import prepared_rows, tile_side

        super().__init__()
        if get not in ("nngp", "ntk"):
            raise InputError(f"get: expected 'nngp' or 'ntk', got {get!r}")
        self.model, self.get = model, get
        self.x = prepared_rows(model, x_train)
        self.n = int(self.x.shape[0])
        self.name = name or f"{get}_train_train"
        self._block = int(block_rows or tile_side(self.n))

    def block_rows(self) -> int:
        return self._block

    def _tile(self, xa, xb=None):
        import jax

        with jax.enable_x64(True):
            return np.asarray(self.model.kernel_fn(xa, xb, self.get, dtype=np.float64,
                                                   progress=False), np.float64)

    def _matmat(self, v):
        from .tiles import upper_tiles

        out = np.zeros((self.n, v.shape[1]))
        for i0, i1, j0, j1, res in upper_tiles(self.model, self.x, (self.get,), self._block):
            t = res[self.get]
            self.stats.block(i1 - i0, j1 - j0)
            out[i0:i1] += t @ v[j0:j1]
            if j0 != i0:
                out[j0:j1] += t.T @ v[i0:i1]
        return out

    def _row_block(self, i0, i1):
        return self._tile(self.x[i0:i1], self.x)

    def _rows_at(self, idx):
        return self._tile(self.x[np.asarray(idx)], self.x)

    def _diagonal(self):
        d = np.empty(self.n)
        b = max(1, min(self.n, 256))
        for i0 in range(0, self.n, b):
            i1 = min(self.n, i0 + b)
            d[i0:i1] = np.diagonal(self._tile(self.x[i0:i1]))
        return d


class ShiftedOperator(KernelOperator):
    """``K + shift I`` sharing the products (and the counters) of another operator."""

    def __init__(self, base: KernelOperator, shift: float) -> None:
        self.base, self.shift = base, float(shift)
        self.n, self.name, self.storage_dtype = base.n, base.name, base.storage_dtype
        self.stats, self._diag = base.stats, None

    def _matmat(self, v):
        return self.base._matmat(v)

    def rows(self, idx):
        return self.base.rows(idx)

    def diagonal(self):
        return self.base.diagonal()


def as_operator(k, name: str = "kernel") -> KernelOperator:
    """Wrap a kernel as a :class:`KernelOperator`.

    Arguments:
        k: a :class:`KernelOperator` (returned as is), an in-memory ``numpy``/JAX
            matrix (:class:`DenseOperator`), or any other 2-D row-sliceable array such
            as a memory-mapped ``.npy`` or a zarr array (:class:`ArrayOperator`).
        name: how errors name the kernel.

    Returns:
        A :class:`KernelOperator`.
    """
    if isinstance(k, KernelOperator):
        return k
    if type(k) is np.ndarray or type(k).__module__.startswith("jax"):
        return DenseOperator(k, name=name)
    if not hasattr(k, "shape") or not hasattr(k, "__getitem__"):
        raise InputError(f"{name}: expected a matrix, a 2-D sliceable array or a "
                         f"KernelOperator, got {type(k).__name__}")
    return ArrayOperator(k, name=name)


def regularized(op: KernelOperator, diag_reg: float) -> KernelOperator:
    """``K + diag_reg * trace(K) / n * I``: the convention of :mod:`ntkdsl.predict`.

    Arguments:
        op: the kernel operator.
        diag_reg: relative regulariser ``>= 0``.

    Returns:
        A :class:`ShiftedOperator` (``op`` itself when ``diag_reg`` is 0).
    """
    diag_reg = float(diag_reg)
    if not (diag_reg >= 0 and math.isfinite(diag_reg)):
        raise InputError(f"diag_reg: expected a number >= 0, got {diag_reg}")
    if not diag_reg:
        return op
    return ShiftedOperator(op, diag_reg * op.trace() / op.n)


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _check_square(k, name: str) -> None:
    shape = tuple(getattr(k, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise InputError(f"{name}: expected a square matrix (n, n), got shape {shape}")
