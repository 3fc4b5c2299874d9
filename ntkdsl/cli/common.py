"""Options every spec-reading subcommand shares: SPEC, --net, --set NAME=VALUE."""

from __future__ import annotations

import argparse
import re

from ..compiler.frontend import Expression, load
from ..compiler.graph import Net
from ..diagnostics import InputError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def add_spec_arguments(parser: argparse.ArgumentParser, *, spec_help: str = "the spec file (.ntk)",
                       spec_required: bool = True) -> None:
    """Add ``SPEC``, ``--net NAME`` and ``--set NAME=VALUE`` (repeatable) to ``parser``.

    Arguments:
        parser: a subcommand's parser.
        spec_help: the help text of ``SPEC``.
        spec_required: ``False`` makes ``SPEC`` optional (``None`` when not given).
    """
    parser.add_argument("spec", metavar="SPEC", help=spec_help,
                        nargs=None if spec_required else "?", default=None)
    parser.add_argument("--net", metavar="NAME", default=None,
                        help="which net of the file (needed when it holds several)")
    parser.add_argument("--allow-import-from", metavar="DIR", action="append", default=[],
                        dest="allow_import_from",
                        help="let imports read from DIR too (by default they stay in the "
                             "spec's directory tree; repeatable)")
    parser.add_argument(
        "--set", metavar="NAME=VALUE", action="append", default=[], dest="set",
        help="override a net parameter; VALUE is a spec expression, e.g. width=64, "
             "W=sqrt(2), act=Erf(1, 2) (repeatable)",
    )


def parse_set_options(items: list[str]) -> dict[str, Expression]:
    """``["width=64", ...]`` -> ``{"width": Expression("64"), ...}``.

    Arguments:
        items: the ``--set`` values.

    Returns:
        Overrides for the front end; each value is evaluated as spec text.

    Raises:
        InputError: an item is not ``NAME=VALUE``, or a name is set twice.
    """
    out: dict[str, Expression] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name) or not text.strip():
            raise InputError(f"--set expects NAME=VALUE, got {item!r}")
        if name in out:
            raise InputError(f"--set {name} is given twice")
        out[name] = Expression(text, origin=f"<--set {name}>")
    return out


def load_net(args: argparse.Namespace) -> Net:
    """The net named by ``args`` (``spec``, ``net``, ``set``), expanded and checked.

    Arguments:
        args: parsed arguments of a parser given :func:`add_spec_arguments`.

    Returns:
        The layer graph.

    Raises:
        SpecError: for any error in the spec or the overrides.
        InputError: for a malformed ``--set``.
    """
    overrides = parse_set_options(getattr(args, "set", []))
    return load(args.spec, net=getattr(args, "net", None),
                allow_import_from=getattr(args, "allow_import_from", None), **overrides)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1 (the option is named by argparse)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def load_input(path: str, flag: str, net: Net, dtype, like=None, like_flag: str = "",
               rows: str = "n"):
    """Read an input array for ``net`` from ``path``, checked and cast to ``dtype``.

    Arguments:
        path: the ``.npy`` file.
        flag: the option that named it (messages name it so: ``--x-test``).
        net: the net the inputs are for (its input rules, see ``check_inputs``).
        dtype: the compute dtype (values that overflow or underflow in the cast are refused).
        like, like_flag: an array (and its option) whose per-input shape this one must share.
        rows: the name of the batch axis in that message (``"n2"``, ``"m"``).

    Returns:
        The array, of ``dtype``.

    Raises:
        InputError: naming ``flag``.
    """
    from ..compiler.inputs import check_inputs
    from ..io import check_cast, load_array

    a = check_cast(load_array(path, flag), dtype, flag)
    try:
        check_inputs(net, a, None)
    except InputError as e:
        msg = str(e)
        raise InputError(flag + msg[2:] if msg.startswith("x1") else f"{flag}: {msg}") from None
    if like is not None and a.shape[1:] != like.shape[1:]:
        raise InputError(f"{flag} has shape {a.shape}, but {like_flag} has shape {like.shape}: "
                         f"expected ({rows}, {', '.join(map(str, like.shape[1:]))})")
    return a
