"""Files in and out: one atomic writer, one array loader, one cast check, one progress bar.

Every command and every writer of the package goes through these, so the
rules below hold everywhere (``docs/cli.md`` states them for users).

Writing (:func:`atomic_write`, :func:`save_npz`):

* The destination is checked first (:func:`output_path`): an existing folder,
  a path under ``/proc`` or ``/sys``, a path below a regular file, a block
  device or a socket is refused with :class:`InputError` (the CLI's exit 2)
  naming the option. Missing parent folders are created.
* A symlink is followed: its target is replaced atomically, the link stays.
* A regular file (or a new path) is written to a temporary file in the same
  folder, flushed and ``fsync``-ed, then renamed over the destination, so
  readers see the old file or the new one, never half of one. The result has
  the permissions a plain ``open(path, "w")`` gives: the existing file's mode,
  or ``0666`` less the umask for a new file (the umask is never changed).
* A character device (``/dev/null``) or a FIFO is written through: opened and
  written like any stream, never replaced.
* Temporaries are named ``.NAME.ntkdsl-tmp-PID-RANDOM``; they are removed when
  the write fails or is interrupted (the CLI turns SIGTERM into an exception
  for its run), and a later write to the same destination removes those left
  by a process that no longer exists (SIGKILL).

Reading (:func:`load_array`, :func:`load_npz`): ``.npy`` / ``.npz`` only,
never pickles; the shape the header claims is compared with the file size
before anything is allocated; large ``.npy`` files are memory-mapped.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import stat
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .diagnostics import InputError

#: marker in the names of temporary files (``.NAME.ntkdsl-tmp-PID-RANDOM``)
TMP_MARK = ".ntkdsl-tmp-"
#: ``.npy`` files at least this large are memory-mapped instead of read
MMAP_MIN_BYTES = 64 << 20
#: pseudo file systems no output may go to
_REFUSED_ROOTS = ("/proc", "/sys")
#: elements checked per block by :func:`check_cast` (bounds its temporaries)
_CHECK_BLOCK = 1 << 22


# -- output paths ------------------------------------------------------------------------

def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def output_path(path: str | os.PathLike, flag: str = "-o") -> Path:
    """Check an output destination and return where the bytes will go.

    Arguments:
        path: the path the user gave.
        flag: how messages name the option (``"-o"``, ``"--out"``, ``"path"``).

    Returns:
        The resolved destination (symlinks followed). Missing parent folders are created.

    Raises:
        InputError: an empty path, an existing folder, a path under ``/proc`` or
            ``/sys``, a path below a regular file, a block device or socket, or a
            parent folder that cannot be created.
    """
    text = os.fspath(path)
    if not text:
        raise InputError(f"{flag}: expected a file path, got an empty string")
    real = os.path.realpath(text)
    for root in _REFUSED_ROOTS:
        if _under(os.path.abspath(text), root) or _under(real, root):
            raise InputError(f"{flag}: cannot write under {root}: {text}")
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):  # the folder check below names why
        st = None
    except OSError as e:
        raise InputError(f"{flag}: cannot write {text}: {e.strerror}") from None
    if st is not None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{flag}: {text} is a folder; expected a file path")
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise InputError(f"{flag}: {text} is not a regular file, a character device "
                             f"or a FIFO; refusing to write to it")
        return Path(real)
    dest = Path(real)
    ancestor = dest.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag}: cannot write {text}: {ancestor} is a file, not a folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag}: cannot create the folder {dest.parent}: "
                         f"{e.strerror}") from None
    return dest


# -- temporaries -------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


def temporary_name(dest: Path) -> Path:
    """A fresh temporary path beside ``dest``: ``.NAME.ntkdsl-tmp-PID-RANDOM``."""
    return dest.parent / f".{dest.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def remove_stale_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``dest`` left by processes that no longer exist.

    Arguments:
        dest: the destination file whose temporaries (``.NAME.ntkdsl-tmp-PID-*``
            in its folder) are looked for.

    Returns:
        The paths removed.
    """
    dest = Path(dest)
    prefix = f".{dest.name}{TMP_MARK}"
    removed = []
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text, _, rand = entry.name[len(prefix):].partition("-")
        if not (pid_text.isdigit() and rand):
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- writing -----------------------------------------------------------------------------

class _Stream:
    """A write-only, unseekable view of a device or FIFO (``/dev/null`` claims position 0
    after every write, which would corrupt writers that seek, like zip archives)."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.name = f.name

    def write(self, data) -> int:
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise OSError("not seekable")

    def seek(self, *args) -> int:
        raise OSError("not seekable")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any], *,
                 flag: str = "-o") -> Path:
    """Write a file atomically (see the module docs for every rule).

    Arguments:
        path: the destination.
        write: called with a binary file object open for writing; writes the content.
        flag: how error messages name the destination option.

    Returns:
        The resolved destination.

    Raises:
        InputError: a refused destination (:func:`output_path`) or an operating-system
            error while writing (no space, no permission), naming ``flag``.
    """
    dest = output_path(path, flag)
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(dest, "wb") as f:  # a device or FIFO: write through it
                write(_Stream(f))
            return dest
        remove_stale_temporaries(dest)
        tmp = temporary_name(dest)
        # A new file gets 0666 less the umask from open() itself; an existing file's
        # content may be private, so its temporary starts private and takes the old
        # mode just before the rename.
        mode = 0o600 if st is not None else 0o666
        try:
            with open(tmp, "xb", opener=lambda p, fl: os.open(p, fl, mode)) as f:
                write(f)
                f.flush()
                if st is not None:
                    os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
                    if st.st_uid != os.geteuid() or st.st_gid != os.getegid():
                        with contextlib.suppress(OSError):
                            os.fchown(f.fileno(), st.st_uid, st.st_gid)
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(dest.parent)
        return dest
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        raise InputError(f"{flag}: cannot write {os.fspath(path)}: "
                         f"{e.strerror or e}") from None


def save_npz(path: str | os.PathLike, arrays: dict[str, Any], *, flag: str = "-o") -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` with :func:`atomic_write`.

    Arguments:
        path: the destination.
        arrays: name -> array (saved with ``allow_pickle=False``).
        flag: how error messages name the destination option.

    Returns:
        The resolved destination.
    """
    def write(f):
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED,
                             allowZip64=True) as zf:
            for name, a in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)

    return atomic_write(path, write, flag=flag)


# -- reading -----------------------------------------------------------------------------

def _read_header(f, flag: str, path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            shape, _, dtype = fmt._read_array_header(f, version)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"{flag}: {path} is not a valid .npy array: {e}") from None
    return tuple(int(n) for n in shape), np.dtype(dtype), f.tell()


def _check_claim(shape, dtype: np.dtype, available: int, flag: str, path: str) -> None:
    if dtype.hasobject:
        raise InputError(f"{flag}: {path} holds Python objects (a pickle); only numeric "
                         f"arrays are read")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > available:
        raise InputError(f"{flag}: {path} is truncated or corrupt: its header claims shape "
                         f"{shape} of {dtype} ({claimed} bytes) but the file holds "
                         f"{max(available, 0)} bytes of data")


def _check_numeric(a: np.ndarray, flag: str, path: str) -> np.ndarray:
    if a.dtype.kind == "c":
        raise InputError(f"{flag}: expected real numbers, got complex values "
                         f"({a.dtype}) in {path}")
    if a.dtype.kind not in "biuf":
        raise InputError(f"{flag}: expected a numeric array, got dtype {a.dtype} in {path}")
    return a


def _regular_file(path: str | os.PathLike, flag: str) -> os.stat_result:
    text = os.fspath(path)
    try:
        st = os.stat(text)
    except FileNotFoundError:
        raise InputError(f"{flag}: no such file: {text}") from None
    except OSError as e:
        raise InputError(f"{flag}: cannot read {text}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{flag}: {text} is a folder; expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{flag}: {text} is not a regular file")
    if st.st_size == 0:
        raise InputError(f"{flag}: {text} is empty (0 bytes)")
    return st


def load_array(path: str | os.PathLike, flag: str, *, mmap_min_bytes: int = MMAP_MIN_BYTES
               ) -> np.ndarray:
    """Read one real numeric array from a ``.npy`` file, safely.

    Arguments:
        path: the file.
        flag: how messages name it (``"--x1"``).
        mmap_min_bytes: files at least this large are memory-mapped read-only.

    Returns:
        The array (a read-only ``np.memmap`` for large files).

    Raises:
        InputError: a missing, empty, non-regular, truncated or non-``.npy`` file, a
            header claiming more data than the file holds, object (pickle), complex
            or non-numeric data.
    """
    text = os.fspath(path)
    st = _regular_file(text, flag)
    try:
        with open(text, "rb") as f:
            head = f.read(6)
            if head.startswith(b"PK"):
                raise InputError(f"{flag}: {text} is an .npz archive; expected one .npy "
                                 f"array")
            if head != b"\x93NUMPY":
                raise InputError(f"{flag}: {text} is not a .npy array file")
            f.seek(0)
            shape, dtype, offset = _read_header(f, flag, text)
    except OSError as e:
        raise InputError(f"{flag}: cannot read {text}: {e.strerror}") from None
    _check_claim(shape, dtype, st.st_size - offset, flag, text)
    try:
        mmap = "r" if st.st_size >= mmap_min_bytes and math.prod(shape) > 0 else None
        a = np.load(text, mmap_mode=mmap, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{flag}: {text} is not a readable .npy array: {e}") from None
    return _check_numeric(a, flag, text)


def load_npz(path: str | os.PathLike, flag: str, names: Iterable[str] | None = None
             ) -> dict[str, np.ndarray]:
    """Read the arrays of an ``.npz`` archive, safely (headers checked before reading).

    Arguments:
        path: the archive.
        flag: how messages name it.
        names: the arrays to read (each must be present); ``None``: all of them.

    Returns:
        name -> array (real numeric).

    Raises:
        InputError: as :func:`load_array`, or a wanted array is missing.
    """
    text = os.fspath(path)
    _regular_file(text, flag)
    try:
        zf = zipfile.ZipFile(text)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{flag}: {text} is not an .npz archive ({e})") from None
    out = {}
    with zf:
        members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        wanted = list(members) if names is None else list(names)
        for name in wanted:
            info = members.get(name)
            if info is None:
                have = ", ".join(sorted(members)) or "none"
                raise InputError(f"{flag}: {text} has no array {name!r} (it holds: {have})")
            where = f"{text}[{name}]"
            try:
                with zf.open(info) as m:
                    shape, dtype, offset = _read_header(m, flag, where)
                    _check_claim(shape, dtype, info.file_size - offset, flag, where)
                with zf.open(info) as m:
                    a = np.lib.format.read_array(m, allow_pickle=False)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise InputError(f"{flag}: {where} is not a readable array: {e}") from None
            out[name] = _check_numeric(a, flag, where)
    return out


# -- casting -----------------------------------------------------------------------------

def _where(mask: np.ndarray, offset: int, shape: tuple[int, ...], limit: int = 3) -> list[str]:
    flat = np.flatnonzero(mask)[:limit] + offset
    return [str(tuple(int(i) for i in np.unravel_index(j, shape))) for j in flat]


def check_cast(a, dtype, name: str) -> np.ndarray:
    """Cast ``a`` to ``dtype``, refusing values that stop being what they were.

    Checked after the cast, so that what is computed on is what is checked:
    non-finite inputs, finite values that overflow to inf in the cast (float32
    inputs beyond 3.4e38, a longdouble 1e400, float64 1e39 cast to float32), and
    nonzero values that underflow to zero.

    Arguments:
        a: an array (or array-like) of real numbers.
        dtype: the compute dtype (``"float32"``, ``np.float64``, ...).
        name: how the message names the array (``"x1"``, ``"--x-test"``).

    Returns:
        ``a`` as a numpy array of ``dtype`` (no copy when it already is one).

    Raises:
        InputError: naming how many entries failed, the first few indices and
            what happened to them.
    """
    dt = np.dtype(dtype)
    arr = np.asarray(a)
    if arr.dtype.kind == "c":
        raise InputError(f"{name}: expected real numbers, got complex values ({arr.dtype})")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = arr.astype(dt, copy=False)
    if arr.dtype.kind != "f" and dt.kind == "f":
        return out  # integers and booleans are finite and fit every float dtype here
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    problems = {"not finite (NaN or inf)": [], f"overflow to inf in {dt}": [],
                f"underflow to 0 in {dt}": []}
    counts = dict.fromkeys(problems, 0)
    for lo in range(0, flat_in.size, _CHECK_BLOCK):
        x, y = flat_in[lo:lo + _CHECK_BLOCK], flat_out[lo:lo + _CHECK_BLOCK]
        fin_x = np.isfinite(x)
        masks = (~fin_x, fin_x & ~np.isfinite(y), (x != 0) & (y == 0))
        for (what, where), mask in zip(problems.items(), masks):
            n = int(np.count_nonzero(mask))
            if n:
                counts[what] += n
                if len(where) < 3:
                    where.extend(_where(mask, lo, arr.shape, 3 - len(where)))
    bad = [f"{counts[w]} {'entry' if counts[w] == 1 else 'entries'} {w} "
           f"(at {', '.join(problems[w])}{', ...' if counts[w] > len(problems[w]) else ''})"
           for w in problems if counts[w]]
    if bad:
        rng = ""
        if dt.kind == "f" and any(counts[w] for w in list(problems)[1:]):
            info = np.finfo(dt)
            rng = (f"; {dt} holds magnitudes from {info.smallest_subnormal:.3g} "
                   f"to {info.max:.3g}")
        raise InputError(f"{name}: {'; '.join(bad)}{rng}")
    return out


# -- progress ----------------------------------------------------------------------------

_open_bars: list[Any] = []


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a progress bar should be drawn.

    Arguments:
        enabled: ``False``: never; ``True``: always (the caller asked for it);
            ``None``: when stderr is a terminal, unless the environment variable
            ``NTKDSL_NO_PROGRESS`` is set (to anything but ``""`` or ``"0"``).

    Returns:
        Whether to draw.
    """
    if enabled is not None:
        return bool(enabled)
    if enabled is None and os.environ.get("NTKDSL_NO_PROGRESS", "") not in ("", "0"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def progress_bar(total: int, desc: str, enabled: bool | None = None, **kwargs) -> Any:
    """A tqdm bar on stderr, drawn only when :func:`progress_enabled` says so.

    Arguments:
        total: the number of steps.
        desc: the bar's label.
        enabled: as :func:`progress_enabled`.
        kwargs: passed to ``tqdm`` (``unit``, ``leave``, ...).

    Returns:
        A ``tqdm`` object (disabled, drawing nothing, when not enabled); use it as
        a context manager or call ``close()``.
    """
    from tqdm import tqdm

    show = progress_enabled(enabled)
    bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=not show,
               **{"leave": False, **kwargs})
    if show:
        _open_bars[:] = [b for b in _open_bars if not b.disable]  # tqdm disables on close
        _open_bars.append(bar)
    return bar


def end_progress_line() -> None:
    """Close every bar still drawn, so that what is printed next starts on a fresh line."""
    while _open_bars:
        bar = _open_bars.pop()
        if bar.disable:
            continue
        with contextlib.suppress(Exception):
            bar.close()
