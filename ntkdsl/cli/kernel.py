"""``ntkdsl kernel SPEC --x1 A.npy [--x2 B.npy] ... -o OUT.npz``: analytic kernels to a file."""

from __future__ import annotations

import argparse

from ..diagnostics import InputError
from .common import add_spec_arguments, load_input, load_net, positive_int
from .store_cmd import add_store_arguments, run_store, wants_store


def add_parser(subparsers) -> None:
    """Register the ``kernel`` subcommand."""
    p = subparsers.add_parser(
        "kernel",
        help="compute the NNGP kernel and/or NTK of a spec's net on .npy inputs",
        description="Compute the infinite-width NNGP kernel and/or NTK between the rows of "
                    "x1 and x2 (x1 with itself when --x2 is not given) and write them, "
                    "each of shape (n1, n2), to an .npz file (atomically); prints one line "
                    "saying what was written.",
    )
    add_spec_arguments(p)
    p.add_argument("--x1", required=True, metavar="A.npy", help="inputs (n1, ...), channel last")
    p.add_argument("--x2", metavar="B.npy", help="inputs (n2, ...); default: x1 with itself")
    p.add_argument("--adjacency1", metavar="A.npy",
                   help="nets with Aggregate: the adjacency of each graph of --x1, a dense "
                        ".npy (n1, nodes, nodes) or an edge-list .npz (docs/cli.md)")
    p.add_argument("--adjacency2", metavar="B.npy", help="the same for --x2")
    p.add_argument("--get", default="nngp,ntk", help="nngp, ntk or nngp,ntk (default)")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--batch-size", type=positive_int, metavar="B",
                   help="tile size over rows (default: chosen from the available memory)")
    p.add_argument("--no-progress", action="store_true",
                   help="never show a progress bar (none is shown unless stderr is a terminal)")
    p.add_argument("-o", "--output", metavar="OUT.npz",
                   help="the output .npz (arrays nngp/ntk); see docs/cli.md for the rules")
    add_store_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Compute the kernels and write them; InputError / SpecError become exit 2 upstream."""
    import numpy as np

    from ..io import output_path, progress_enabled, save_npz
    from ..model import Model

    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    if not get or any(g not in ("nngp", "ntk") for g in get):
        raise InputError(f"--get must be nngp, ntk or nngp,ntk, got {args.get!r}")
    if wants_store(args):
        if args.adjacency1 or args.adjacency2:
            raise InputError("the kernel store does not support graph inputs (--adjacency1, "
                             "--adjacency2) yet: use -o OUT.npz")
        return run_store(args)
    if not args.output:
        raise InputError("give -o OUT.npz (or --store K.zarr)")
    output_path(args.output)  # a bad -o fails now, not after the computation
    net = load_net(args)
    x1 = load_input(args.x1, "--x1", net, args.dtype)
    x2 = None if args.x2 is None else load_input(args.x2, "--x2", net, args.dtype, x1, "--x1",
                                                 rows="n2")
    from ..graphs import load_adjacency_for

    adjacency1 = load_adjacency_for(args.adjacency1, "--adjacency1", net, x1, "--x1")
    adjacency2 = load_adjacency_for(args.adjacency2, "--adjacency2", net, x2, "--x2")
    model = Model(net)
    from ..signal import warn_if_deep
    warn_if_deep(model)  # one line on stderr when the depth makes the kernels degenerate
    # None lets the kernel code decide by the number of tiles; never a bar off a terminal
    progress = None if not args.no_progress and progress_enabled(None) else False
    k = model.kernel_fn(x1, x2, get, dtype=args.dtype, batch_size=args.batch_size,
                        progress=progress, adjacency1=adjacency1, adjacency2=adjacency2)
    arrays = {g: np.asarray(getattr(k, g)) for g in get}
    for g, a in arrays.items():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise InputError(f"the {g} kernel has {bad} non-finite entries (first at {first}); "
                             f"nothing was written")
    save_npz(args.output, arrays)
    shapes = ", ".join(f"{g} {a.shape}" for g, a in arrays.items())
    print(f"wrote {args.output}: {shapes} ({args.dtype}, net '{net.name}')")
    return 0
