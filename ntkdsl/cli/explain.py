"""``ntkdsl explain SPEC [--net NAME] [--set ...] [--latex] [--check]``.

Prints the paired NNGP/NTK recursion of a net layer by layer, in the form the
kernel compiler evaluates it, its closed form for a fully connected net,
and (``--check``) the symbolic checks of the nonlinearities it uses; the work
is done by ``ntkdsl/compiler/explain.py``, this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import sys

from .._lazy import lazy
from .common import add_spec_arguments, load_net, positive_int

explaining = lazy("ntkdsl.compiler.explain")


def add_parser(subparsers) -> None:
    """Register the ``explain`` subcommand."""
    p = subparsers.add_parser(
        "explain", help="print the NNGP/NTK recursion of a net",
        description="Print the paired NNGP/NTK kernel recursion of a net, layer by layer.",
    )
    add_spec_arguments(p)
    p.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    p.add_argument("--check", action="store_true",
                   help="also run the symbolic checks of the net's nonlinearities; "
                        "exit 1 if any fails")
    p.add_argument("--points", type=positive_int, default=1, metavar="N",
                   help="random covariances for the numerical-integration checks (default 1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the explanation of the net ``args`` names; 1 if a check failed, else 0."""
    net = load_net(args)
    print(explaining.explain(net, latex=args.latex), end="")
    if args.check:
        report = explaining.check_net(net, n_integration=args.points)
        print()
        print(explaining.format_report(report, latex=args.latex), end="")
        return 0 if report.ok else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["explain", *sys.argv[1:]]))
