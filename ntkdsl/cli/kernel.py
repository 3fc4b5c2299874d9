"""``ntkdsl kernel SPEC --x1 A.npy [--x2 B.npy] ... -o OUT.npz``: analytic kernels to a file."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ..diagnostics import InputError
from .common import add_spec_arguments, load_net


def add_parser(subparsers) -> None:
    """Register the ``kernel`` subcommand."""
    p = subparsers.add_parser(
        "kernel",
        help="compute the NNGP kernel and/or NTK of a spec's net on .npy inputs",
        description="Compute the infinite-width NNGP kernel and/or NTK between the rows of "
                    "x1 and x2 (x1 with itself when --x2 is not given) and write them, "
                    "each of shape (n1, n2), to an .npz file (atomically).",
    )
    add_spec_arguments(p)
    p.add_argument("--x1", required=True, metavar="A.npy", help="inputs (n1, ...), channel last")
    p.add_argument("--x2", metavar="B.npy", help="inputs (n2, ...); default: x1 with itself")
    p.add_argument("--get", default="nngp,ntk", help="nngp, ntk or nngp,ntk (default)")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--batch-size", type=int, metavar="B",
                   help="tile size over rows (default: chosen from the available memory)")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.set_defaults(run=run)


def _load_array(path: str, what: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{what}: no such file: {path}") from None
    except (ValueError, OSError) as e:
        raise InputError(f"{what}: {path} is not a readable .npy array ({e})") from None


def _write_atomic(path: Path, arrays: dict) -> None:
    """Write an .npz next to its destination, then rename it into place."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Compute the kernels and write them; InputError / SpecError become exit 2 upstream."""
    import numpy as np

    from ..model import Model

    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    for g in get:
        if g not in ("nngp", "ntk"):
            raise InputError(f"--get must be nngp, ntk or nngp,ntk, got {args.get!r}")
    if args.batch_size is not None and args.batch_size <= 0:
        raise InputError(f"--batch-size must be a positive integer, got {args.batch_size}")
    x1 = _load_array(args.x1, "--x1")
    x2 = None if args.x2 is None else _load_array(args.x2, "--x2")
    model = Model(load_net(args))
    k = model.kernel_fn(x1, x2, get, dtype=args.dtype, batch_size=args.batch_size,
                        progress=False if args.no_progress else None)
    arrays = {g: np.asarray(getattr(k, g)) for g in get}
    _write_atomic(Path(args.output), arrays)
    return 0
