"""``ntkdsl check SPEC [--net NAME] [--set NAME=VALUE ...] [--input-shape 8,8,1]``.

Parses and expands the spec, runs the static checks, and prints a summary of
each net: its parameters, its layers after expansion and, with
``--input-shape`` or the net's own ``Input(shape)``, the shape after each
layer. Exit 0 when all is well; a spec error goes to stderr with exit status
2 (see ``ntkdsl.cli``).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import sys
import warnings

from ..compiler.activations import FormulaWarning
from ..compiler.evaluate import format_value
from ..compiler.expand import is_required
from ..compiler.frontend import check_file, infer_shapes
from ..compiler.graph import Net
from ..compiler.layers import Layer
from ..compiler.layers.formula import tree_text
from ..diagnostics import InputError
from .common import add_spec_arguments, parse_set_options


def add_parser(subparsers) -> None:
    """Register the ``check`` subcommand."""
    p = subparsers.add_parser(
        "check", help="check a spec and show its nets after expansion",
        description="Parse, expand and check a spec; print each net's parameters and layers.",
    )
    add_spec_arguments(p, spec_help="a spec file (.ntk), or a folder: every *.ntk in it")
    p.add_argument("--input-shape", metavar="SHAPE", default=None,
                   help="an input shape without the batch axis, e.g. 8,8,1 or 64; "
                        "prints the shape after each layer (default: the net's "
                        "Input(shape) when it declares one without -1)")
    p.set_defaults(run=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8,8,1"`` (or ``"(8, 8, 1)"``) -> ``(8, 8, 1)``.

    Raises:
        InputError: not a list of positive integers.
    """
    cleaned = text.strip().strip("()[]").strip().rstrip(",")
    parts = [p.strip() for p in cleaned.split(",")]
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


def _num(v) -> str:
    if isinstance(v, float):
        return format(v, ".6g")
    if isinstance(v, tuple):
        inner = ", ".join(_num(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, str) and v in ("SAME", "VALID", "CIRCULAR"):
        return v
    return format_value(v)


def layer_text(layer: Layer) -> str:
    """A layer in spec syntax: required arguments positionally, others only when not default.

    Arguments:
        layer: a leaf layer (Residual shows as ``Residual``).

    Returns:
        e.g. ``Conv(64, 3, strides=2, W_std=1.41421)``.
    """
    if layer.combine is not None:
        return layer.spec_name or type(layer).__name__
    spec_text = getattr(layer, "spec_text", None)  # a user-defined activation: NAME(P=v)
    if spec_text is not None:
        return spec_text()
    parts = []
    for f in dataclasses.fields(layer):
        if not f.init or f.name == "span":
            continue
        v = getattr(layer, f.name)
        if is_required(f):
            parts.append(_num(v))
        elif v != f.default:
            parts.append(f"{f.name}={_num(v)}")
    name = layer.spec_name or type(layer).__name__
    return f"{name}({', '.join(parts)})" if parts else name


def _count(node: Layer) -> int:
    n = 0 if node.combine == "sequence" else 1
    return n + sum(_count(c) for c in node.children() if c is not None)


def resolve_shape(net: Net, given: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The input shape ``check`` shows shapes for: ``--input-shape``, else the net's ``Input``.

    Arguments:
        net: the layer graph.
        given: the ``--input-shape`` value, or None.

    Returns:
        A concrete shape, or None (no option, and no Input or one with ``-1``).

    Raises:
        InputError: ``given`` does not fit the net's ``Input(shape)``.
    """
    declared = net.input_shape
    if declared is None:
        return given
    if given is None:
        return None if -1 in declared else declared
    if len(given) != len(declared) or any(d not in (-1, g) for d, g in zip(declared, given)):
        shown = ", ".join(map(str, declared)) + ("," if len(declared) == 1 else "")
        raise InputError(f"--input-shape {','.join(map(str, given))} does not fit net "
                         f"'{net.name}', which declares Input(({shown}))")
    return given


def summarize(net: Net, input_shape: tuple[int, ...] | None = None) -> str:
    """A readable summary of one net (what ``ntkdsl check`` prints).

    Arguments:
        net: the layer graph.
        input_shape: if given, each layer is followed by its output shape.

    Returns:
        The text, several lines, no trailing newline.
    """
    shapes: dict[int, tuple[int, ...]] = {}
    rows = None
    if input_shape is not None:
        rows = infer_shapes(net, input_shape)
        shapes = {id(layer): shape for layer, shape in rows}
    where = f"{net.span}" if net.span is not None else net.filename
    lines = [
        f"net {net.name}  ({where})",
        f"  parameters: {_params(net)}",
    ]
    if net.input_shape is not None:
        lines.append(f"  input: Input({_num(net.input_shape)})")
    lines += [
        f"  layers: {_count(net.body)} after expansion"
        + (f"; input shape {input_shape}" if input_shape is not None else ""),
    ]

    def show(serial: Layer, indent: str) -> None:
        for layer in serial.children():
            if layer.combine == "sequence":  # a repeat: its layers, listed in place
                show(layer, indent)
                continue
            text = f"{indent}{layer_text(layer)}"
            if id(layer) in shapes:
                text = f"{text:<44} -> {shapes[id(layer)]}"
            lines.append(text)
            if layer.combine not in (None, "sequence"):
                for i, path in enumerate(layer.children()):
                    lines.append(f"{indent}  {layer.short_label(i)}:"
                                 + ("" if path is not None else " identity"))
                    if path is not None:
                        show(path, indent + "    ")

    show(net.body, "    ")
    if input_shape is not None and rows is not None:
        out_shape = rows[-1][1] if rows else input_shape
        lines.append(f"  output shape: {out_shape}")
    return "\n".join(lines)


def _spec_files(spec: str) -> list[str]:
    if os.path.isdir(spec):
        files = sorted(glob.glob(os.path.join(spec, "*.ntk")))
        if not files:
            raise InputError(f"no .ntk files in directory {spec}")
        return files
    return [spec]


def check_one(path: str, args: argparse.Namespace, shape) -> str:
    """The summary ``ntkdsl check`` prints for one file."""
    overrides = parse_set_options(args.set)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FormulaWarning)
        nets, scope = check_file(path, net=args.net,
                                 allow_import_from=getattr(args, "allow_import_from", None),
                                 **overrides)
    for w in caught:
        if issubclass(w.category, FormulaWarning):
            sys.stderr.write(f"{w.message}\n")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    acts = "".join(f"\n  activation {a.signature()} = {tree_text(a.tree, a.var)}"
                   for a in scope.activations.values())
    if not nets:
        blocks = ", ".join(scope.blocks) or "none"
        lets = ", ".join(f"{k}={_num(v)}" for k, v in scope.lets.items()) or "none"
        return (f"{path}: no nets (a library for imports)\n  constants: {lets}\n"
                f"  blocks: {blocks}{acts}\nok: {path}")
    texts = [summarize(net, resolve_shape(net, shape)) for net in nets]
    if acts:
        texts.insert(0, f"activations defined in {path}:{acts}")
    texts.append(f"ok: {len(nets)} net{'s' if len(nets) != 1 else ''} checked in {path}")
    return "\n\n".join(texts[:-1]) + "\n" + texts[-1]


def run(args: argparse.Namespace) -> int:
    """Run ``ntkdsl check``; returns the exit status.

    SPEC may be a directory: every ``*.ntk`` file in it is checked.
    """
    shape = parse_shape(args.input_shape) if args.input_shape else None
    outputs = [check_one(path, args, shape) for path in _spec_files(args.spec)]
    sys.stdout.write("\n\n".join(outputs) + "\n")
    return 0
