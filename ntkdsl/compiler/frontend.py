"""The front end's public API: spec text or file -> validated layer graph.

``parse`` / ``load`` give one net, ``parse_all`` / ``load_all`` every net of
a file; ``infer_shapes`` checks a concrete input shape. Everything a spec
can get wrong is raised as :class:`~.diagnostics.SpecError`, whatever the
input (the functions here convert even a stray RecursionError).

Every function that reads files takes ``allow_import_from``: directories
outside the spec's own directory tree that its imports may read (by default
imports stay inside that tree).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..diagnostics import SpecError, did_you_mean
from .checks import check_net, infer_shapes
from .expand import Expression, FileScope, Loader, decode_source, expand_net
from .graph import Net

#: directories imports may read besides the spec's own tree (a path or several)
Dirs = Iterable[str | os.PathLike] | str | os.PathLike | None

__all__ = [
    "Expression", "check_file", "infer_shapes", "load", "load_all", "net_names", "parse",
    "parse_all",
]

T = TypeVar("T")


def _guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn resource failures on hostile input into SpecErrors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RecursionError:
            raise SpecError("spec is nested too deeply") from None
        except MemoryError:
            raise SpecError("spec is too large to process") from None

    return wrapper


def _scope_from_source(source: str | bytes, filename: str | None,
                       allow_import_from: Dirs = None) -> FileScope:
    name = filename or "<spec>"
    if isinstance(source, bytes):
        source = decode_source(source, name)
    key = os.path.realpath(filename) if filename else None
    loader = Loader(_dirs(allow_import_from))
    loader.chars = len(source)  # the text counts towards the size of the whole load
    return loader.load_source(source, name, key)


def _scope_from_path(path: str | os.PathLike, allow_import_from: Dirs = None) -> FileScope:
    return Loader(_dirs(allow_import_from)).load_path(path, str(path))


def _dirs(dirs: Dirs) -> list:
    if dirs is None:
        return []
    if isinstance(dirs, str | os.PathLike):
        return [dirs]
    return list(dirs)


def _select(scope: FileScope, net: str | None) -> list:
    nets = scope.nets
    if net is not None:
        if net not in nets:
            notes = did_you_mean(net, nets)
            notes.append(f"nets in this file: {', '.join(nets) or 'none'}")
            raise SpecError(f"no net named '{net}' in {scope.filename}", None, notes,
                            filename=scope.filename)
        return [nets[net]]
    if not nets:
        raise SpecError(f"{scope.filename} defines no net", filename=scope.filename)
    if len(nets) > 1:
        raise SpecError(
            f"{scope.filename} defines several nets; name one with net=... (--net)",
            None, [f"nets in this file: {', '.join(nets)}"], filename=scope.filename)
    return list(nets.values())


def _build(scope: FileScope, defn, overrides: Mapping[str, Any],
           trainable: Iterable[str] = ()) -> Net:
    net = expand_net(scope, defn, overrides, tuple(trainable))
    check_net(net)
    if net.input_shape is not None:
        check_input_statement(net, defn.body[0].span)
    return net


def check_input_statement(net: Net, where=None) -> None:
    """Check a net's ``Input(shape)`` against its layers.

    A fully connected net takes ``(features,)``, a convolutional one
    ``(*spatial, channels)``; a shape with no ``-1`` is run through every
    layer, so a layer that does not fit is an error at that layer now rather
    than when data arrives.

    Arguments:
        net: the layer graph.
        where: the span of the Input statement.

    Raises:
        SpecError: located at the Input statement or at the layer.
    """
    shape = net.input_shape
    if shape is None:
        return
    from .inputs import is_spatial

    text = _shape_text(shape)
    if is_spatial(net) and len(shape) < 2:
        raise SpecError(f"Input({text}) gives no spatial axis, but net '{net.name}' is "
                        "convolutional: its inputs are (*spatial, channels), e.g. (8, 8, 1)",
                        where)
    if not is_spatial(net) and len(shape) != 1:
        raise SpecError(f"Input({text}) has {len(shape)} axes, but net '{net.name}' is fully "
                        "connected: its inputs are (features,), e.g. (64,) or (-1,)", where)
    if -1 not in shape:
        infer_shapes(net, shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"


def _build_all(scope: FileScope, overrides: Mapping[str, Any]) -> list[Net]:
    if not scope.nets:
        raise SpecError(f"{scope.filename} defines no net", filename=scope.filename)
    names = {p.name for d in scope.nets.values() for p in d.params}
    for key in overrides:
        if key not in names:
            raise SpecError(f"no net in {scope.filename} has a parameter '{key}'", None,
                            did_you_mean(key, names), filename=scope.filename)
    out = []
    for defn in scope.nets.values():
        mine = {p.name for p in defn.params}
        out.append(_build(scope, defn, {k: v for k, v in overrides.items() if k in mine}))
    return out


@_guarded
def parse(source: str | bytes, *, net: str | None = None, filename: str | None = None,
          allow_import_from: Dirs = None, trainable: Iterable[str] = (),
          **overrides: Any) -> Net:
    """The layer graph of one net of a spec given as text.

    Arguments:
        source: the spec text (``bytes`` are decoded as UTF-8).
        net: which net (needed when the text holds several).
        filename: shown in errors; imports are resolved relative to it (else
            relative to the current directory), and confined to its directory
            tree (else the current directory's).
        allow_import_from: further directories imports may read from.
        trainable: net parameters (real numbers) the differentiable kernels take
            as arguments (see ``docs/fitting.md``).
        **overrides: values for the net's parameters (numbers, strings,
            tuples; a string for a layer-valued parameter names the layer;
            an :class:`Expression` is evaluated as spec text).

    Returns:
        The expanded, statically checked :class:`~.graph.Net`.

    Raises:
        SpecError: for any error in the spec or the overrides.
    """
    scope = _scope_from_source(source, filename, allow_import_from)
    return _build(scope, _select(scope, net)[0], overrides, trainable)


@_guarded
def load(path: str | os.PathLike, *, net: str | None = None, allow_import_from: Dirs = None,
         trainable: Iterable[str] = (), **overrides: Any) -> Net:
    """The layer graph of one net of a spec file (see :func:`parse`).

    Arguments:
        path: the spec file.
        net: which net (needed when the file holds several).
        allow_import_from: directories outside the spec's directory tree that
            its imports may read from (a path or several).
        trainable: net parameters the differentiable kernels take as arguments.
        **overrides: values for the net's parameters.

    Returns:
        The expanded, statically checked :class:`~.graph.Net`.
    """
    scope = _scope_from_path(path, allow_import_from)
    return _build(scope, _select(scope, net)[0], overrides, trainable)


@_guarded
def parse_all(source: str | bytes, *, filename: str | None = None,
              allow_import_from: Dirs = None, **overrides: Any) -> list[Net]:
    """Every net of a spec given as text, in source order.

    Arguments:
        source: the spec text.
        filename: shown in errors; imports are resolved relative to it.
        allow_import_from: further directories imports may read from.
        **overrides: applied to each net that has the parameter; a name no net
            has is an error.

    Returns:
        The nets.
    """
    return _build_all(_scope_from_source(source, filename, allow_import_from), overrides)


@_guarded
def load_all(path: str | os.PathLike, *, allow_import_from: Dirs = None,
             **overrides: Any) -> list[Net]:
    """Every net of a spec file, in source order (see :func:`parse_all`).

    Arguments:
        path: the spec file.
        allow_import_from: further directories imports may read from.
        **overrides: applied to each net that has the parameter.

    Returns:
        The nets.
    """
    return _build_all(_scope_from_path(path, allow_import_from), overrides)


@_guarded
def net_names(path: str | os.PathLike, *, allow_import_from: Dirs = None) -> list[str]:
    """The names of the nets a spec file defines, in source order, without expanding them.

    Arguments:
        path: the spec file.
        allow_import_from: further directories imports may read from.

    Returns:
        The names.
    """
    return list(_scope_from_path(Path(path), allow_import_from).nets)


@_guarded
def check_file(path: str | os.PathLike, *, net: str | None = None,
               allow_import_from: Dirs = None,
               **overrides: Any) -> tuple[list[Net], FileScope]:
    """What ``ntkdsl check`` needs: the nets (all, or the one named) and the file scope.

    A file without nets (a library of blocks and constants for imports) is
    not an error here: the list is then empty.

    Arguments:
        path: the spec file.
        net: one net to check, or None for all.
        allow_import_from: further directories imports may read from.
        **overrides: as for :func:`load_all` (or :func:`load` with ``net``).

    Returns:
        ``(nets, scope)``; ``scope.lets`` and ``scope.blocks`` describe the file.
    """
    scope = _scope_from_path(path, allow_import_from)
    if net is not None:
        return [_build(scope, _select(scope, net)[0], overrides)], scope
    if not scope.nets:
        if overrides:
            raise SpecError(f"{scope.filename} defines no net to set parameters of",
                            filename=scope.filename)
        return [], scope
    return _build_all(scope, overrides), scope


# keep infer_shapes importable from here (it lives with the other graph checks)
infer_shapes = _guarded(infer_shapes)
