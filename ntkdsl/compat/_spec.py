"""Spec text of a stax net: ``ntkdsl.compat.to_spec``.

The stax front end builds the same layer graph the spec language produces, so
printing that graph as a spec gives a file whose compiled kernels are the stax
net's, bit for bit (the tests check this for every golden net).
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from ..compiler.layers import REGISTRY, Layer
from ..diagnostics import InputError
from ._triple import build_net, node_of


def _literal(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        inner = ", ".join(_literal(a) for a in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _call(layer: Layer) -> str:
    cls = type(layer)
    if cls.spec_name is None or REGISTRY.get(cls.spec_name) is not cls:
        raise InputError(
            f"{layer.describe()} cannot be written as a spec: it is a Python function, and a "
            "spec never runs Python; write the nonlinearity as an `activation NAME(x) = "
            "FORMULA` item (docs/language.md, User-defined activations) or use a built-in")
    args = []
    for f in fields(layer):
        if f.name == "span" or not f.init:
            continue
        v = getattr(layer, f.name)
        if f.default is not MISSING and v == f.default and type(v) is type(f.default):
            continue
        args.append(f"{f.name} = {_literal(v)}")
    return f"{cls.spec_name}({', '.join(args)})" if args else cls.spec_name


def _body(layers, indent: str) -> list[str]:
    out: list[str] = []
    for layer in layers:
        if layer.combine == "sequence":
            out += _body(layer.layers, indent)
        elif layer.combine is not None:
            head = layer.spec_name
            if head == "Residual":
                head, paths = "Sum", (layer.branch, layer.shortcut)
            else:
                paths = layer.children()
            lines = [f"{indent}{head}"]
            for p in paths:
                if p is None:
                    lines.append(f"{indent}{{ }}")
                else:
                    lines += [f"{indent}{{", *_body(p.layers, indent + "    "), f"{indent}}}"]
            out += lines
        else:
            out.append(indent + _call(layer))
    return out


def to_spec(layer, input_shape, *, name: str = "stax") -> str:
    """The spec-language text of a stax net of ``ntkdsl.compat.stax``.

    Arguments:
        layer: the ``(init_fn, apply_fn, kernel_fn)`` triple (or its ``kernel_fn``).
        input_shape: one input's shape, channel last, without the batch axis (the
            peer's ``(-1, ...)`` form is accepted too): written as the net's ``Input``.
        name: the net's name in the spec.

    Returns:
        The spec text; ``ntkdsl.compile(text)`` gives the same kernels as ``kernel_fn``.

    Raises:
        InputError: the net holds a Python nonlinearity (``Elementwise``,
            ``ElementwiseNumerical``), which a spec cannot express.
        NotImplementedError: the net cannot be built (see ``ntkdsl.compat.stax``).
    """
    shape = tuple(int(s) for s in input_shape)
    if shape and shape[0] == -1:
        shape = shape[1:]
    if not shape or any(s <= 0 for s in shape):
        raise InputError(f"input_shape: expected one input's shape (positive ints, no batch "
                         f"axis), got {tuple(input_shape)}")
    if not name.isidentifier():
        raise InputError(f"name: expected a spec name ([A-Za-z_][A-Za-z0-9_]*), got {name!r}")
    net = build_net(node_of(layer), shape).net
    dims = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    lines = [f"net {name} {{", f"    Input(({dims}))", *_body(net.body.layers, "    "), "}"]
    return "\n".join(lines) + "\n"
