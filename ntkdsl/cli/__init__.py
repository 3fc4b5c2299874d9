"""The ``ntkdsl`` command line: check, explain, kernel, predict, demo.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. Errors a user can cause (a spec error, a bad array, a
bad option) print one readable message to stderr and exit 2, never a
traceback; set ``NTKDSL_DEBUG=1`` to see tracebacks of internal errors.
While a command runs, SIGTERM is turned into an exception (exit 143) so that
temporary files are removed; the previous handler is restored afterwards.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from ..diagnostics import InputError, SpecError

COMMANDS = ("check", "explain", "analyze", "kernel", "plan", "predict", "fit", "demo")


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


class Terminated(BaseException):
    """SIGTERM during a command: unwinds like Ctrl-C, so partial outputs are removed."""


def _raise_terminated(signum, frame):
    raise Terminated


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, so its usage is the one shown
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _error(message: str) -> None:
    from ..io import end_progress_line

    end_progress_line()  # a bar may be half drawn: the message starts on a fresh line
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ntkdsl`` console script.

    Arguments:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 internal error (or a failed ``explain --check``),
        2 a user error, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
    """
    parser = build_parser()
    args = _parse(parser, argv)
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.run(args) or 0)
    except (SpecError, InputError) as e:
        _error(str(e))
        return 2
    except KeyboardInterrupt:
        _error("ntkdsl: interrupted")
        return 130
    except Terminated:
        _error("ntkdsl: terminated")
        return 143
    except BrokenPipeError:
        return 0
    except Exception as e:  # an internal error: one line, no traceback
        if os.environ.get("NTKDSL_DEBUG"):
            raise
        _error(f"ntkdsl: internal error: {type(e).__name__}: {e} "
               "(set NTKDSL_DEBUG=1 for a traceback)")
        return 1
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
