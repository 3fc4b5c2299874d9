"""The ``ntkdsl`` command line: check, explain, kernel, predict, demo.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. Errors a user can cause (a spec error, a bad array, a
bad option) print one readable message to stderr and exit 2, never a
traceback; set ``NTKDSL_DEBUG=1`` to see tracebacks of internal errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..diagnostics import InputError, SpecError

COMMANDS = ("check", "explain", "kernel", "predict", "demo")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = _Parser(
        prog="ntkdsl",
        description="Infinite-width kernels, finite nets and training dynamics from spec files.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ntkdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ntkdsl.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"ntkdsl.cli.{name}":
                continue  # that subcommand is not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ntkdsl`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (SpecError, InputError) as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ntkdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # an internal error: one line, no traceback
        if os.environ.get("NTKDSL_DEBUG"):
            raise
        print(
            f"ntkdsl: internal error: {type(e).__name__}: {e} "
            "(set NTKDSL_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
