"""``ntkdsl plan SPEC --n N [--n2 M] --input-shape H,W,C ...``: what a kernel job will cost."""

from __future__ import annotations

import argparse

from ..diagnostics import InputError
from .common import add_spec_arguments, load_net, positive_int


def add_parser(subparsers) -> None:
    """Register the ``plan`` subcommand."""
    p = subparsers.add_parser(
        "plan",
        help="before a kernel run: its size on disk, tiles, memory and estimated time",
        description="Plan a kernel job of N inputs (by M with --n2): the size of its store on "
                    "disk, the chosen tile size and the memory per tile (from the memory "
                    "model), the number of tiles, and the compute and wall time estimated "
                    "from a short calibration run of a few small tiles on this machine.",
    )
    add_spec_arguments(p)
    p.add_argument("--n", required=True, type=positive_int, metavar="N", help="rows of x1")
    p.add_argument("--n2", type=positive_int, metavar="M",
                   help="rows of x2 (default: x1 with itself, a symmetric kernel)")
    p.add_argument("--input-shape", required=True, metavar="H,W,C",
                   help="one input's shape, channel last, e.g. 32,32,3 or 784")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--get", default="nngp,ntk", help="nngp, ntk or nngp,ntk (default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                   help="where the job will run (time is calibrated only on that device)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="K",
                   help="workers (or devices) to estimate the wall time for (default 1)")
    p.add_argument("--batch-size", type=positive_int, metavar="B",
                   help="tile size over rows (default: chosen as 'kernel --store' does)")
    p.add_argument("--memory", type=float, metavar="GIB",
                   help="memory per worker in GiB (default: this machine's available memory "
                        "divided by --workers)")
    p.add_argument("--calibration-rows", type=positive_int, metavar="C",
                   help="time tiles of only C rows (default: grow from 8 rows until a tile "
                        "takes 0.5 s); for nets whose small tiles are already slow")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the timing run (sizes only)")
    p.set_defaults(run=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"32,32,3"`` -> ``(32, 32, 3)``; InputError when malformed."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise InputError(f"--input-shape: expected positive integers like 32,32,3, got {text!r}")
    return shape


def run(args: argparse.Namespace) -> int:
    """Print the plan; InputError / SpecError become exit 2 upstream."""
    from ..model import Model
    from ..plan import make_plan

    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    if not get or any(g not in ("nngp", "ntk") for g in get):
        raise InputError(f"--get must be nngp, ntk or nngp,ntk, got {args.get!r}")
    if args.memory is not None and not args.memory > 0:
        raise InputError(f"--memory: expected a positive number of GiB, got {args.memory}")
    shape = parse_shape(args.input_shape)
    model = Model(load_net(args))
    plan = make_plan(model, args.n, shape, n2=args.n2, dtype=args.dtype, gets=get,
                     device=args.device, workers=args.workers, tile=args.batch_size,
                     memory=None if args.memory is None else int(args.memory * 2**30),
                     calibrate_time=not args.no_calibrate,
                     calibration_rows=args.calibration_rows)
    print(plan.render(args.workers))
    return 0
