"""Compiled kernel functions kept on disk, so a new process skips tracing and compiling.

A :class:`CachedFunction` wraps a function that would be ``jax.jit``-ed. On its
first call with arguments of a new shape it looks for the compiled executable
on disk, under a key made of what the executable depends on (the caller's key,
e.g. the net and tile shape; the arguments' shapes and dtypes; ntkdsl's own
source code; the jax and jaxlib versions; the backend and device kind); if the
entry is there it is loaded (milliseconds), otherwise the function is traced,
compiled with ``jit(fn).lower(*args).compile()`` and the executable written for
the next process. Within a process the loaded executables are kept in memory.

Where: ``$NTKDSL_CACHE_DIR`` if set (``off``, ``0``, ``false`` or ``no``
switch the disk cache off), else ``$XDG_CACHE_HOME/ntkdsl`` or
``~/.cache/ntkdsl``; :func:`set_cache_dir` overrides both for this process.
Nothing of jax's configuration is touched (jax's own persistent compilation
cache is a global setting a library must not change; this cache is local to
ntkdsl's functions).

Safety when processes share the directory: an entry is written to a temporary
file in the same directory and renamed over its final name (atomic on POSIX),
so a reader sees a whole entry or none; every entry carries the SHA-256 of its
payload and its full key, checked before loading, so a truncated, corrupt or
colliding file is ignored (counted in :func:`stats` as ``errors``), removed
and recompiled. Two processes that miss together both compile and both write
the same entry; the second rename wins, and either file is valid.

Trust: an entry holds a compiled executable, i.e. machine code that loading
runs, so the directory must be as trusted as the user's own files: it is
created private (mode 0700), and a directory that is not owned by the user or
is writable by others is not used (a warning says so). The executable's jax
wrapper is a pickle; it is read by an unpickler that accepts only classes and
functions defined in jax, jaxlib and numpy (see docs/design.md, "The compile
cache").

The total size is bounded (:data:`MAX_BYTES`, least recently used entries
removed first).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._lazy import lazy

jax = lazy("jax")

ENV_DIR = "NTKDSL_CACHE_DIR"
_OFF_WORDS = {"off", "0", "false", "no"}
#: the disk cache's size bound; beyond it the least recently used entries go
MAX_BYTES = 2 << 30
#: after this many writes in a process the directory's size is checked again
_SIZE_CHECK_EVERY = 16
_MAGIC = b"NTKDSLX1"
_SUFFIX = ".xla"
_UNSET = object()

_override: Any = _UNSET
_writes_since_check = 0
_warned: set[str] = set()


@dataclass
class Stats:
    """Counters of this process's cache use (see :func:`stats`)."""

    #: executables loaded from disk
    hits: int = 0
    #: functions traced and compiled (no usable entry on disk, or the disk cache off)
    compiles: int = 0
    #: entries written
    writes: int = 0
    #: entries found unusable (corrupt, truncated, wrong key, failed to load)
    errors: int = 0


_stats = Stats()


def stats() -> Stats:
    """A copy of this process's counters: ``hits``, ``compiles``, ``writes``, ``errors``."""
    return Stats(**{f.name: getattr(_stats, f.name) for f in fields(Stats)})


def reset_stats() -> None:
    """Set every counter of :func:`stats` back to zero."""
    for f in fields(Stats):
        setattr(_stats, f.name, 0)


def set_cache_dir(path: str | os.PathLike | bool | None) -> None:
    """Choose the disk cache for this process (overrides ``$NTKDSL_CACHE_DIR``).

    Arguments:
        path: a directory (created if missing); ``False``: no disk cache
            (compiled functions are still kept in memory); ``None``: back to
            the default (``$NTKDSL_CACHE_DIR``, else the user's cache directory).
    """
    global _override
    if path is True:
        path = None
    _override = _UNSET if path is None else (None if path is False else Path(path))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ntkdsl``, or ``~/.cache/ntkdsl``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ntkdsl"


def cache_dir() -> Path | None:
    """The disk cache's directory now, or ``None`` when it is off."""
    if _override is not _UNSET:
        return _override
    env = os.environ.get(ENV_DIR)
    if env is not None and env.strip().lower() in _OFF_WORDS:
        return None
    return Path(env) if env else default_cache_dir()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _usable_dir() -> Path | None:
    """The cache directory, created private; ``None`` if off or not safe to use."""
    d = cache_dir()
    if d is None:
        return None
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except OSError as e:
        _warn_once(f"ntkdsl compile cache off: cannot create {d} ({e})")
        return None
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        _warn_once(f"ntkdsl compile cache off: {d} is not owned by you or is writable by "
                   "others (an entry holds executable code); set NTKDSL_CACHE_DIR")
        return None
    return d


# ---------------------------------------------------------------------------------------------
# keys


_fingerprint: str | None = None


def code_fingerprint() -> str:
    """SHA-256 of ntkdsl's own source files: a changed package never reads old entries."""
    global _fingerprint
    if _fingerprint is None:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
        _fingerprint = h.hexdigest()
    return _fingerprint


def environment() -> tuple:
    """What an executable depends on besides the function: versions, backend, device."""
    import jaxlib

    dev = jax.devices()[0]
    return (jax.__version__, jaxlib.__version__, sys.version_info[:2], dev.platform,
            getattr(dev.client, "platform_version", ""), dev.device_kind,
            bool(jax.config.jax_enable_x64), code_fingerprint())


def _leaf_signature(leaf) -> tuple:
    return (tuple(leaf.shape), str(leaf.dtype), bool(getattr(leaf, "weak_type", False)))


def signature(args: tuple) -> tuple:
    """The arguments' pytree structure, shapes and dtypes (what a compiled call needs)."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    return (str(tree), tuple(_leaf_signature(a) for a in leaves))


def _structure(tree) -> Any:
    """A JSON-able example of an output pytree of nested tuples/lists (leaves -> 0)."""
    return jax.tree_util.tree_unflatten(tree, [0] * tree.num_leaves)


def _from_structure(s) -> Any:
    if isinstance(s, list):
        return tuple(_from_structure(v) for v in s)
    return s


# ---------------------------------------------------------------------------------------------
# entries on disk


class _JaxOnlyUnpickler(pickle.Unpickler):
    """jax's executable unpickler, accepting only classes and functions of jax and numpy."""

    _ROOTS = ("jax", "jaxlib", "numpy")

    def find_class(self, module: str, name: str):
        if module.split(".")[0] not in self._ROOTS or "." in name or name.startswith("__"):
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cache entry")
        obj = super().find_class(module, name)
        owner = getattr(obj, "__module__", None) or ""
        if owner.split(".")[0] not in self._ROOTS and owner != "builtins":
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cache entry")
        if owner == "builtins" and not isinstance(obj, type):
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cache entry")
        return obj


def _unpickler_class():
    from jax.experimental import serialize_executable as se

    class Unpickler(_JaxOnlyUnpickler, se._JaxPjrtUnpickler):
        pass

    return Unpickler


def _serialize(compiled) -> tuple[bytes, Any]:
    from jax.experimental import serialize_executable as se

    payload, _, out_tree = se.serialize(compiled)
    return payload, _structure(out_tree)


def _deserialize(payload: bytes, args: tuple, out_structure):
    backend = jax.devices()[0].client
    devices = backend.devices()
    unloaded, args_info_flat, no_kwargs = _unpickler_class()(
        io.BytesIO(payload), backend, devices).load()
    in_tree = jax.tree_util.tree_structure((tuple(args), {}))
    out_tree = jax.tree_util.tree_structure(_from_structure(out_structure))
    args_info = in_tree.unflatten(args_info_flat)
    return jax.stages.Compiled(unloaded.load(), [], args_info, out_tree, no_kwargs=no_kwargs)


def _encode(key: str, out_structure, payload: bytes) -> bytes:
    header = json.dumps({"key": key, "out": out_structure}).encode()
    return (_MAGIC + len(header).to_bytes(8, "little") + header
            + hashlib.sha256(payload).digest() + payload)


def _decode(data: bytes, key: str) -> tuple[Any, bytes] | None:
    """``(out_structure, payload)``, or ``None`` for a file that is not a whole entry of ``key``."""
    n = len(_MAGIC)
    if len(data) < n + 8 or data[:n] != _MAGIC:
        return None
    hlen = int.from_bytes(data[n:n + 8], "little")
    start = n + 8 + hlen
    if len(data) < start + 32:
        return None
    try:
        header = json.loads(data[n + 8:start])
    except ValueError:
        return None
    digest, payload = data[start:start + 32], data[start + 32:]
    if header.get("key") != key or hashlib.sha256(payload).digest() != digest:
        return None
    return header.get("out"), payload


def _write(d: Path, path: Path, data: bytes) -> None:
    global _writes_since_check
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _stats.writes += 1
    _writes_since_check += 1
    if _writes_since_check >= _SIZE_CHECK_EVERY or _stats.writes == 1:
        _writes_since_check = 0
        prune(d)


def prune(d: Path | None = None, max_bytes: int | None = None) -> int:
    """Remove the least recently used entries until the cache is under ``max_bytes``.

    Arguments:
        d: the directory (default: :func:`cache_dir`).
        max_bytes: the bound (default :data:`MAX_BYTES`).

    Returns:
        The number of entries removed.
    """
    d = cache_dir() if d is None else d
    limit = MAX_BYTES if max_bytes is None else max_bytes
    if d is None or not d.is_dir():
        return 0
    entries = []
    for p in d.iterdir():
        if p.suffix != _SUFFIX:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(s for _, s, _ in entries)
    removed = 0
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        try:
            p.unlink()
            total -= size
            removed += 1
        except OSError:
            pass
    return removed


def clear(d: Path | None = None) -> int:
    """Remove every entry of the disk cache; returns how many."""
    d = cache_dir() if d is None else d
    n = 0
    if d is not None and d.is_dir():
        for p in d.iterdir():
            if p.suffix == _SUFFIX:
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
    return n


# ---------------------------------------------------------------------------------------------
# the cached function


def _is_concrete(args: tuple) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(args))


class CachedFunction:
    """A function compiled once per argument signature, its executable cached on disk.

    Arguments:
        build: returns the ``jax.jit`` function to compile (called once, on the
            first call; it must be cheap: tracing happens only on a cache miss). A
            function without ``.lower`` (not jitted) is called directly, uncached.
        key: what identifies the function (hashable, with a stable ``repr``: e.g.
            the net and the tile shape); the arguments' shapes and the
            :func:`environment` are added to it.

    Calling it with concrete arrays runs the compiled executable; called under a
    jax transformation (tracers), it calls the built function directly.
    """

    def __init__(self, build: Callable[[], Callable], key: tuple):
        self._build = build
        self._fn: Callable | None = None
        self.key = key
        self._compiled: dict[tuple, Any] = {}
        # one lock per function: two functions compile at once (prepare_all), one
        # signature compiles once
        self._lock = threading.Lock()

    def function(self) -> Callable:
        """The underlying function, built on first use."""
        if self._fn is None:
            self._fn = self._build()
        return self._fn

    def __call__(self, *args):
        fn = self.function()
        if not hasattr(fn, "lower") or not _is_concrete(args):
            # only a jax.jit function is compiled here and cached: anything else (a
            # wrapper, a function under a transformation) is called as it is
            return fn(*args)
        return self._executable(args)(*args)

    def _executable(self, args: tuple):
        sig = signature(args)
        compiled = self._compiled.get(sig)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(sig)
                if compiled is None:
                    compiled = self._load_or_compile(args, sig)
                    self._compiled[sig] = compiled
        return compiled

    def prepare(self, *specs) -> None:
        """Load or compile the executable for arguments like ``specs``, without running it.

        Arguments:
            specs: the arguments, or ``jax.ShapeDtypeStruct`` pytrees of their shapes
                and dtypes (what a call with arrays of those shapes will need).
        """
        fn = self.function()
        if hasattr(fn, "lower"):
            self._executable(specs)

    def _key_text(self, sig: tuple) -> str:
        return repr((self.key, sig, environment()))

    def _load_or_compile(self, args: tuple, sig: tuple):
        d = _usable_dir()
        key = self._key_text(sig) if d is not None else ""
        path = None
        if d is not None:
            path = d / (hashlib.sha256(key.encode()).hexdigest() + _SUFFIX)
            compiled = self._load(path, key, args)
            if compiled is not None:
                return compiled
        compiled = self.function().lower(*args).compile()
        _stats.compiles += 1
        if path is not None:
            try:
                payload, out = _serialize(compiled)
                _write(d, path, _encode(key, out, payload))
            except Exception as e:  # a cache that cannot write is only slower
                _warn_once(f"ntkdsl compile cache: could not write an entry ({e})")
        return compiled

    @staticmethod
    def _load(path: Path, key: str, args: tuple):
        try:
            data = path.read_bytes()
        except OSError:
            return None
        entry = _decode(data, key)
        if entry is not None:
            try:
                compiled = _deserialize(entry[1], args, entry[0])
            except Exception:  # an unusable entry is recompiled
                compiled = None
            if compiled is not None:
                _stats.hits += 1
                try:
                    os.utime(path)  # least recently used goes first when pruning
                except OSError:
                    pass
                return compiled
        _stats.errors += 1
        try:
            path.unlink()
        except OSError:
            pass
        return None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def prepare_all(jobs) -> None:
    """Load or compile several functions' executables at once, one thread each.

    XLA compiles without holding the GIL, so with two cores two functions compile
    in about the time of the slower one (a tiled symmetric kernel needs two: its
    diagonal tiles and the others). The thread-local jax setting that the compiled
    functions depend on, ``jax.enable_x64``, is the caller's in every thread.

    Arguments:
        jobs: ``(function, specs)`` pairs: a :class:`CachedFunction` and the
            arguments (or ``jax.ShapeDtypeStruct`` pytrees) it will be called with.
    """
    jobs = list(jobs)
    if len(jobs) < 2 or available_cores() < 2:
        for f, specs in jobs:
            f.prepare(*specs)
        return
    from concurrent.futures import ThreadPoolExecutor

    x64 = bool(jax.config.jax_enable_x64)

    def one(job):
        f, specs = job
        with jax.enable_x64(x64):
            f.prepare(*specs)

    with ThreadPoolExecutor(len(jobs), thread_name_prefix="ntkdsl-compile") as ex:
        for _ in ex.map(one, jobs):  # re-raises a worker's error here
            pass
