"""``ntkdsl check SPEC [--net NAME] [--set NAME=VALUE ...] [--input-shape 8,8,1]``.

Parses and expands the spec, runs the static checks, and prints a summary of
each net: its parameters, its layers after expansion and, with
``--input-shape``, the shape after each layer. Exit 0 when all is well; a
spec error goes to stderr with exit status 2 (see ``ntkdsl.cli``).
"""

from __future__ import annotations

import argparse
import sys

from ..compiler.diagnostics import InputError
from ..compiler.evaluate import format_value
from ..compiler.frontend import infer_shapes, load, load_all
from ..compiler.graph import Net
from ..compiler.layers import Layer, Residual, Serial
from .common import add_spec_arguments, parse_set_options


def add_parser(subparsers) -> None:
    """Register the ``check`` subcommand."""
    p = subparsers.add_parser(
        "check", help="check a spec and show its nets after expansion",
        description="Parse, expand and check a spec; print each net's parameters and layers.",
    )
    add_spec_arguments(p)
    p.add_argument("--input-shape", metavar="SHAPE", default=None,
                   help="an input shape without the batch axis, e.g. 8,8,1 or 64; "
                        "prints the shape after each layer")
    p.set_defaults(run=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8,8,1"`` (or ``"(8, 8, 1)"``, ``"8x8x1"``) -> ``(8, 8, 1)``.

    Raises:
        InputError: not a list of positive integers.
    """
    cleaned = text.strip().strip("()[]").replace("x", ",")
    parts = [p.strip() for p in cleaned.split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape) or len(shape) > 8:
        raise InputError(
            f"--input-shape expects positive integers separated by commas (e.g. 8,8,1), "
            f"got {text!r}")
    return shape


def _params(net: Net) -> str:
    if not net.params:
        return "(none)"
    return ", ".join(f"{k}={format_value(v)}" for k, v in net.params)


def _count(node: Layer) -> int:
    n = 0 if isinstance(node, Serial) else 1
    return n + sum(_count(c) for c in node.children())


def summarize(net: Net, input_shape: tuple[int, ...] | None = None) -> str:
    """A readable summary of one net (what ``ntkdsl check`` prints).

    Arguments:
        net: the layer graph.
        input_shape: if given, each layer is followed by its output shape.

    Returns:
        The text, several lines, no trailing newline.
    """
    shapes = dict.fromkeys(())
    rows = None
    if input_shape is not None:
        rows = infer_shapes(net, input_shape)
        shapes = {id(layer): shape for layer, shape in rows}
    where = f"{net.span}" if net.span is not None else net.filename
    lines = [
        f"net {net.name}  ({where})",
        f"  parameters: {_params(net)}",
        f"  layers: {_count(net.body)} after expansion"
        + (f"; input shape {input_shape}" if input_shape is not None else ""),
    ]

    def show(serial: Serial, indent: str) -> None:
        for layer in serial.layers:
            text = f"{indent}{layer.describe()}"
            if id(layer) in shapes:
                text = f"{text:<60} -> {shapes[id(layer)]}"
            lines.append(text)
            if isinstance(layer, Residual):
                lines.append(f"{indent}  branch:")
                show(layer.branch, indent + "    ")
                lines.append(f"{indent}  shortcut:" + ("" if layer.shortcut else " identity"))
                if layer.shortcut is not None:
                    show(layer.shortcut, indent + "    ")

    show(net.body, "    ")
    if input_shape is not None and rows is not None:
        out_shape = rows[-1][1] if rows else input_shape
        lines.append(f"  output shape: {out_shape}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``ntkdsl check``; returns the exit status."""
    overrides = parse_set_options(args.set)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if args.net is not None:
        nets = [load(args.spec, net=args.net, **overrides)]
    else:
        nets = load_all(args.spec, **overrides)
    texts = [summarize(net, shape) for net in nets]
    sys.stdout.write("\n\n".join(texts) + "\n")
    sys.stdout.write(f"ok: {len(nets)} net{'s' if len(nets) != 1 else ''} checked in "
                     f"{args.spec}\n")
    return 0
