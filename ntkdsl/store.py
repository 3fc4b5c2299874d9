"""The kernel store: a zarr group holding one kernel job, resumable tile by tile.

Layout of ``K.zarr`` (a directory)::

    zarr.json        group metadata; attribute "ntkdsl" holds the job identity
    nngp/, ntk/      (n1, n2) float arrays, one chunk per tile, NaN where not computed
    inputs/x1, x2    copies of inputs given as in-memory arrays (not for files)
    done/I.J         one small marker per finished tile (I, J: block indices)

A tile is durable once its marker exists: the marker is written (and fsynced)
only after the tile's chunks and their directories are fsynced, so a crash at
any moment leaves every marked tile intact and at worst recomputes an unmarked
one. A symmetric job (x2 absent) computes only the tiles with ``I <= J`` and
writes each off-diagonal tile also to its mirrored chunk, so any zarr reader
sees the whole matrix. Stores are created under a temporary name and renamed
into place, so a half-created store never exists under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .diagnostics import InputError

FORMAT = "ntkdsl-kernel-store/1"
ATTR = "ntkdsl"
DONE_DIR = "done"

#: identity fields compared on a rerun, with the words used when they differ
IDENTITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("net_name", "net name"),
    ("net_params", "net parameters (overrides)"),
    ("net_layers", "layer graph (spec)"),
    ("x1", "x1 (inputs)"),
    ("x2", "x2 (inputs)"),
    ("dtype", "dtype"),
    ("tile", "tile size"),
    ("get", "get"),
)

_HASH_BLOCK_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class InputRef:
    """Where a worker reads the rows of one input: an ``.npy`` file or a zarr array.

    Arguments:
        path: absolute path of the ``.npy`` file or the zarr array (directory).
        kind: ``"npy"`` or ``"zarr"``.
        shape: the array's shape.
        dtype: the array's dtype name.
    """

    path: str
    kind: str
    shape: tuple[int, ...]
    dtype: str

    def open(self):
        """The array, memory-mapped (``.npy``) or lazily read (zarr): slicing reads only rows."""
        if self.kind == "npy":
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        import zarr

        return zarr.open_array(self.path, mode="r")

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` as an in-memory numpy array."""
        return np.asarray(self.open()[lo:hi])


def open_input(path: str | os.PathLike, what: str) -> InputRef:
    """An :class:`InputRef` for an ``.npy`` file or a zarr array, checked to be numeric.

    Arguments:
        path: the file (``.npy``) or zarr array directory.
        what: the option name used in error messages, e.g. ``"--x1"``.

    Returns:
        The reference (absolute path, shape, dtype).

    Raises:
        InputError: missing, unreadable or non-numeric.
    """
    p = Path(path).absolute()
    if not p.exists():
        raise InputError(f"{what}: no such file: {path}")
    if p.is_dir():
        try:
            import zarr

            a = zarr.open_array(str(p), mode="r")
        except Exception as e:
            raise InputError(f"{what}: {path} is not a readable zarr array ({e})") from None
        kind = "zarr"
    else:
        try:
            a = np.load(str(p), mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{what}: {path} is not a readable .npy array ({e})") from None
        if not isinstance(a, np.ndarray):
            raise InputError(f"{what}: {path} is not a single .npy array")
        kind = "npy"
    dt = np.dtype(str(a.dtype))
    if dt.kind not in "biuf":
        raise InputError(f"{what}: expected a real numeric array, got dtype {dt} in {path}")
    return InputRef(str(p), kind, tuple(int(s) for s in a.shape), dt.name)


def hash_array(a, *, check_finite: bool = True) -> str:
    """A sha256 of an array's shape, dtype and values, read in blocks of rows.

    Arguments:
        a: a numpy, memory-mapped or zarr array (never read whole).
        check_finite: raise on NaN or infinity (read anyway for the hash).

    Returns:
        ``"sha256:<hex>"``.

    Raises:
        InputError: with ``check_finite``, a non-finite value (naming its row).
    """
    h = hashlib.sha256()
    shape = tuple(int(s) for s in a.shape)
    dt = np.dtype(str(a.dtype))
    h.update(json.dumps({"shape": shape, "dtype": dt.str}).encode())
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dt.itemsize)
    step = max(1, _HASH_BLOCK_BYTES // row_bytes)
    for lo in range(0, shape[0] if shape else 0, step):
        block = np.ascontiguousarray(np.asarray(a[lo:lo + step]))
        if check_finite and block.dtype.kind == "f" and not np.all(np.isfinite(block)):
            bad = lo + int(np.argwhere(~np.isfinite(block.reshape(len(block), -1)))[0, 0])
            raise InputError(f"inputs must be finite; row {bad} holds NaN or infinity")
        h.update(block.data)
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------
# tiles


def blocks(n: int, b: int) -> list[tuple[int, int]]:
    """Row ranges ``[(lo, hi), ...]`` of at most ``b`` rows covering ``0..n``."""
    return [(s, min(s + b, n)) for s in range(0, n, b)]


def tile_indices(nb1: int, nb2: int, symmetric: bool) -> list[tuple[int, int]]:
    """Every tile ``(i, j)`` to compute: the upper triangle ``i <= j`` when symmetric."""
    if symmetric:
        return [(i, j) for i in range(nb1) for j in range(i, nb1)]
    return [(i, j) for i in range(nb1) for j in range(nb2)]


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _marker_name(i: int, j: int) -> str:
    return f"{i}.{j}"


# ---------------------------------------------------------------------------------------------
# the store


@dataclass(frozen=True)
class KernelStore:
    """A kernel store opened for reading (see :func:`open_kernel`).

    Attributes:
        path: the store directory.
        metadata: the job identity and layout (a dict; see ``docs/scaling.md``).
        nngp: the ``(n1, n2)`` NNGP kernel as a lazy zarr array, or ``None``.
        ntk: the ``(n1, n2)`` NTK as a lazy zarr array, or ``None``.
    """

    path: Path
    metadata: dict[str, Any]
    nngp: Any = None
    ntk: Any = None
    _group: Any = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n1, n2)``."""
        return (int(self.metadata["n1"]), int(self.metadata["n2"]))

    @property
    def symmetric(self) -> bool:
        """Whether the job was x1 with itself (only the upper-triangle tiles computed)."""
        return bool(self.metadata["symmetric"])

    def all_tiles(self) -> list[tuple[int, int]]:
        """Every tile the job computes."""
        nb1, nb2 = self.metadata["blocks"]
        return tile_indices(nb1, nb2, self.symmetric)

    def done_tiles(self) -> set[tuple[int, int]]:
        """The tiles whose data is durably written."""
        return read_done(self.path)

    def missing_tiles(self) -> list[tuple[int, int]]:
        """The tiles still to compute, in order."""
        done = self.done_tiles()
        return [t for t in self.all_tiles() if t not in done]

    @property
    def complete(self) -> bool:
        """Whether every tile is done."""
        return not self.missing_tiles()

    def as_dask(self, name: str = "ntk"):
        """``nngp`` or ``ntk`` as a dask array chunked by tile (for out-of-core algebra)."""
        import dask.array as da

        arr = getattr(self, name)
        if arr is None:
            raise InputError(f"store {self.path} holds no {name} (get={self.metadata['get']})")
        return da.from_zarr(arr)

    def __getitem__(self, name: str):
        """``store["ntk"]``: the same as the attribute (lets dict-like callers use a store)."""
        if name not in ("nngp", "ntk") or getattr(self, name) is None:
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> list[str]:
        """The kernels the store holds."""
        return [g for g in ("nngp", "ntk") if getattr(self, g) is not None]


def read_done(path: str | os.PathLike) -> set[tuple[int, int]]:
    """The finished tiles recorded in a store (the marker files)."""
    d = Path(path) / DONE_DIR
    out: set[tuple[int, int]] = set()
    if not d.is_dir():
        return out
    for entry in os.scandir(d):
        i, sep, j = entry.name.partition(".")
        if sep and i.isdigit() and j.isdigit():
            out.add((int(i), int(j)))
    return out


def _read_attrs(path: Path) -> dict[str, Any]:
    """The store's ``ntkdsl`` metadata; InputError when the path is not a readable store."""
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise InputError(f"{path} is not an ntkdsl kernel store (no zarr.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is a corrupt kernel store: zarr.json is unreadable ({e})"
                         ) from None
    attrs = meta.get("attributes", {}).get(ATTR) if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
        raise InputError(f"{path} is not an ntkdsl kernel store (no '{ATTR}' metadata of "
                         f"format {FORMAT})")
    return attrs


def open_kernel(path: str | os.PathLike, *, partial: bool = False) -> KernelStore:
    """Open a kernel store for reading.

    Arguments:
        path: the store directory (``K.zarr``).
        partial: allow a store whose run has not finished (its missing tiles
            read as NaN); by default such a store is an error.

    Returns:
        A :class:`KernelStore` with lazy, sliceable ``.nngp`` / ``.ntk``
        (``np.asarray(store.ntk[:100])`` reads only those rows' chunks) and
        ``.metadata``.

    Raises:
        InputError: not a store, a corrupt one, or (without ``partial``) an
            unfinished one.
    """
    import zarr

    p = Path(path)
    if not p.exists():
        raise InputError(f"no such kernel store: {path}")
    attrs = _read_attrs(p)
    try:
        group = zarr.open_group(zarr.storage.LocalStore(str(p), read_only=True), mode="r")
        arrays = {g: group[g] for g in attrs["get"]}
    except Exception as e:
        raise InputError(f"{path} is a corrupt kernel store: {type(e).__name__}: {e}") from None
    shape = (int(attrs["n1"]), int(attrs["n2"]))
    for g, a in arrays.items():
        if tuple(a.shape) != shape:
            raise InputError(f"{path} is a corrupt kernel store: {g} has shape {a.shape}, "
                             f"its metadata says {shape}")
    store = KernelStore(p, dict(attrs), arrays.get("nngp"), arrays.get("ntk"), group)
    if not partial:
        missing = store.missing_tiles()
        if missing:
            raise InputError(f"kernel store {path} is unfinished: {len(missing)} of "
                             f"{len(store.all_tiles())} tiles missing (rerun the same "
                             f"'ntkdsl kernel ... --store' command to finish it)")
    return store


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The names of the identity fields in which two stores' metadata differ."""
    return [words for key, words in IDENTITY_FIELDS
            if json.dumps(old.get(key), sort_keys=True) != json.dumps(new.get(key),
                                                                      sort_keys=True)]


def _is_replaceable(path: Path) -> bool:
    """Whether ``--overwrite`` may delete ``path``: an empty directory or some zarr store."""
    if path.is_dir():
        return not any(path.iterdir()) or (path / "zarr.json").is_file()
    return False


def prepare_store(path: str | os.PathLike, metadata: dict[str, Any], *,
                  inputs: dict[str, np.ndarray] | None = None,
                  overwrite: bool = False) -> KernelStore:
    """Create the store for a job, or reopen the one already there for the same job.

    Arguments:
        path: the store directory.
        metadata: the job's identity and layout (``n1``, ``n2``, ``symmetric``,
            ``blocks``, ``tile``, ``dtype``, ``get`` and the identity fields).
        inputs: in-memory inputs to copy into the store (``{"x1": a, ...}``).
        overwrite: replace an existing store of a different job (or a corrupt one).

    Returns:
        The store, open for the job (``partial``).

    Raises:
        InputError: the path holds a different job (naming what differs), a
            corrupt store or something that is not a store (all untouched), or
            cannot be written.
    """
    p = Path(path).absolute()
    meta = {"format": FORMAT, **metadata}
    if p.exists() or p.is_symlink():
        if not overwrite:
            old = _read_attrs(p)  # raises for a non-store or a corrupt one
            diff = identity_differences(old, meta)
            if diff:
                raise InputError(
                    f"kernel store {path} holds a different job: {', '.join(diff)} "
                    f"{'differs' if len(diff) == 1 else 'differ'}; pass --overwrite to "
                    "replace it (or choose another --store)")
            return open_kernel(p, partial=True)
        with contextlib.suppress(InputError):
            old = _read_attrs(p)
            if not identity_differences(old, meta):
                return open_kernel(p, partial=True)
        if not _is_replaceable(p):
            raise InputError(f"refusing to replace {path}: it is not a kernel store "
                             "(nor an empty directory)")
    _create(p, meta, inputs or {}, replace=p.exists())
    return open_kernel(p, partial=True)


def _create(p: Path, meta: dict[str, Any], inputs: dict[str, np.ndarray], replace: bool) -> None:
    import zarr

    parent = p.parent
    blocker = next((q for q in (parent, *parent.parents) if q.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise InputError(f"cannot write the kernel store {p}: {blocker} is not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".creating", dir=parent))
    except OSError as e:
        raise InputError(f"cannot write the kernel store {p}: {e.strerror or e}") from None
    try:
        group = zarr.open_group(zarr.storage.LocalStore(str(tmp)), mode="w",
                                attributes={ATTR: meta})
        n1, n2 = int(meta["n1"]), int(meta["n2"])
        b = int(meta["tile"])
        chunks = (min(b, n1), min(b, n2))
        for g in meta["get"]:
            group.create_array(g, shape=(n1, n2), dtype=meta["dtype"], chunks=chunks,
                               compressors=None, fill_value=np.nan)
        for name, a in inputs.items():
            a = np.asarray(a)
            rows = max(1, min(len(a), (16 << 20) // max(1, a[:1].nbytes)))
            arr = group.create_array(f"inputs/{name}", shape=a.shape, dtype=a.dtype,
                                     chunks=(rows, *a.shape[1:]), compressors=None)
            arr[...] = a
        (tmp / DONE_DIR).mkdir()
        _fsync_tree(tmp)
        if replace:
            old = p.with_name(f".{p.name}.replaced-{os.getpid()}")
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
        _fsync_path(parent, directory=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write the kernel store {p}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath), directory=True)


def set_metadata(path: str | os.PathLike, **updates: Any) -> None:
    """Update fields of the store's ``ntkdsl`` metadata (zarr writes zarr.json atomically)."""
    import zarr

    group = zarr.open_group(zarr.storage.LocalStore(str(path)), mode="r+")
    attrs = dict(group.attrs[ATTR])
    attrs.update(updates)
    group.attrs[ATTR] = attrs


@dataclass
class TileWriter:
    """Writes finished tiles into a store durably (used by the engine's tile tasks).

    Arguments:
        path: the store directory.
    """

    path: Path
    _arrays: dict[str, Any] = field(default_factory=dict)

    def _array(self, name: str):
        if name not in self._arrays:
            import zarr

            group = zarr.open_group(zarr.storage.LocalStore(str(self.path)), mode="r+")
            self._arrays[name] = group[name]
        return self._arrays[name]

    def write(self, i: int, j: int, rows: tuple[int, int], cols: tuple[int, int],
              values: dict[str, np.ndarray], symmetric: bool) -> None:
        """Write tile ``(i, j)`` (and its mirror when symmetric), fsync it, then mark it done.

        Arguments:
            i, j: block indices.
            rows, cols: the tile's row and column ranges.
            values: ``{"nngp": array, "ntk": array}`` of shape ``(rows, cols)``.
            symmetric: also write the transpose at ``(j, i)`` (off-diagonal tiles).
        """
        (lo1, hi1), (lo2, hi2) = rows, cols
        touched: list[Path] = []
        for name, v in values.items():
            arr = self._array(name)
            arr[lo1:hi1, lo2:hi2] = v
            touched.append(self._chunk_path(arr, name, i, j))
            if symmetric and i != j:
                arr[lo2:hi2, lo1:hi1] = np.ascontiguousarray(v.T)
                touched.append(self._chunk_path(arr, name, j, i))
        for f in touched:
            _fsync_path(f)
        for d in {f.parent for f in touched}:
            _fsync_path(d, directory=True)
        self.mark_done(i, j)

    def _chunk_path(self, arr, name: str, i: int, j: int) -> Path:
        return self.path / name / arr.metadata.encode_chunk_key((i, j))

    def mark_done(self, i: int, j: int) -> None:
        """Record tile ``(i, j)`` as durable (atomic create, fsynced with its directory)."""
        d = self.path / DONE_DIR
        final = d / _marker_name(i, j)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=d)
        try:
            os.write(fd, b"done\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_path(d, directory=True)

