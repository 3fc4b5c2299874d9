"""``ntkdsl kernel ... --store K.zarr [--workers N | --scheduler ADDR] [--overwrite]``.

The store options of the ``kernel`` subcommand and the code they run: the
kernels go tile by tile into a resumable zarr store (see docs/scaling.md),
computed in this process, on a local Dask cluster started and stopped here,
or on an existing Dask scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ..diagnostics import InputError


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--store``, ``--workers``, ``--scheduler`` and ``--overwrite`` to ``parser``."""
    from .common import positive_int

    parser.add_argument("--store", metavar="K.zarr",
                        help="write the kernels tile by tile into this zarr store (resumable: "
                             "rerun the same command to finish an interrupted run); "
                             "-o is then not needed")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="with --store: compute on a local Dask cluster of N "
                             "single-threaded worker processes")
    parser.add_argument("--scheduler", metavar="local|tcp://HOST:8786",
                        help="with --store: 'local' (the default with --workers) or the "
                             "address of a running Dask scheduler")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --store: replace a store that holds a different job")


def wants_store(args: argparse.Namespace) -> bool:
    """Whether the command writes a store; InputError for store options without ``--store``."""
    if getattr(args, "store", None):
        return True
    for flag, value in (("--workers", args.workers), ("--scheduler", args.scheduler),
                        ("--overwrite", args.overwrite or None)):
        if value is not None:
            raise InputError(f"{flag} needs --store K.zarr")
    return False


@contextlib.contextmanager
def _client(args: argparse.Namespace):
    """The Dask client the options ask for (``None``: compute in this process)."""
    scheduler = args.scheduler
    if scheduler is None and args.workers is None:
        yield None
        return
    from distributed import Client

    from ..engine import local_cluster

    if scheduler in (None, "local"):
        workers = args.workers or os.cpu_count() or 1
        with local_cluster(workers) as cluster, Client(cluster) as client:
            _announce(client, f"local Dask cluster of {workers} worker processes")
            yield client
        return
    if args.workers is not None:
        raise InputError("--workers starts a local cluster; it cannot be combined with "
                         f"--scheduler {scheduler}")
    if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise InputError(f"--scheduler must be 'local' or an address like tcp://HOST:8786, "
                         f"got {scheduler!r}")
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as e:
        raise InputError(f"--scheduler: cannot reach the Dask scheduler at {scheduler} "
                         f"({e})") from None
    with client:
        n = len(client.scheduler_info()["workers"])
        if n == 0:
            raise InputError(f"--scheduler: the Dask scheduler at {scheduler} has no workers")
        _announce(client, f"Dask scheduler {scheduler} with {n} workers")
        yield client


def _announce(client, what: str) -> None:
    from ..engine import dashboard

    link = dashboard(client)
    where = f"dashboard {link}" if link else "no dashboard (pip install bokeh for one)"
    print(f"ntkdsl kernel: {what}; {where}", file=sys.stderr)


def run_store(args: argparse.Namespace) -> int:
    """Compute the kernels into ``args.store``; InputError / SpecError become exit 2 upstream.

    Arguments:
        args: the parsed ``kernel`` arguments (``spec``, ``net``, ``set``, ``x1``,
            ``x2``, ``get``, ``dtype``, ``batch_size``, ``no_progress``, ``store``,
            ``workers``, ``scheduler``, ``overwrite``).

    Returns:
        0 once every tile is in the store.
    """
    from ..engine import compute_kernel_store
    from ..model import Model
    from .common import load_net

    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    if not get or any(g not in ("nngp", "ntk") for g in get):
        raise InputError(f"--get must be nngp, ntk or nngp,ntk, got {args.get!r}")
    if getattr(args, "output", None):
        raise InputError("give either -o OUT.npz or --store K.zarr, not both")
    net = load_net(args)
    try:
        spec_text = Path(args.spec).read_text()
    except (OSError, UnicodeDecodeError):
        spec_text = ""
    overrides = {}
    for item in args.set or ():
        name, _, text = item.partition("=")
        overrides[name.strip()] = text.strip()
    progress = False if args.no_progress else None

    def log(line: str) -> None:
        print(f"ntkdsl kernel: {line}", file=sys.stderr, flush=True)

    with _client(args) as client:
        ks = compute_kernel_store(
            Model(net), args.x1, args.x2, args.store, get=get, dtype=args.dtype,
            tile_size=args.batch_size, client=client, overwrite=args.overwrite,
            progress=progress, spec_text=spec_text, overrides=overrides, log=log)
    shapes = ", ".join(f"{g} {ks.shape}" for g in ks.keys())
    print(f"wrote {args.store}: {shapes} ({args.dtype}, net '{net.name}', "
          f"tile {ks.metadata['tile']})")
    return 0
