"""The front end's public API: spec text or file -> validated layer graph.

``parse`` / ``load`` give one net, ``parse_all`` / ``load_all`` every net of
a file; ``infer_shapes`` checks a concrete input shape. Everything a spec
can get wrong is raised as :class:`~.diagnostics.SpecError`, whatever the
input (the functions here convert even a stray RecursionError).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..diagnostics import SpecError, did_you_mean
from .checks import check_net, infer_shapes
from .expand import Expression, FileScope, Loader, decode_source, expand_net
from .graph import Net

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


def _scope_from_source(source: str | bytes, filename: str | None) -> FileScope:
    name = filename or "<spec>"
    if isinstance(source, bytes):
        source = decode_source(source, name)
    key = os.path.realpath(filename) if filename else None
    return Loader().load_source(source, name, key)


def _scope_from_path(path: str | os.PathLike) -> FileScope:
    return Loader().load_path(path, str(path))


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


def _build(scope: FileScope, defn, overrides: Mapping[str, Any]) -> Net:
    net = expand_net(scope, defn, overrides)
    check_net(net)
    return net


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
          **overrides: Any) -> Net:
    """The layer graph of one net of a spec given as text.

    Arguments:
        source: the spec text (``bytes`` are decoded as UTF-8).
        net: which net (needed when the text holds several).
        filename: shown in errors; imports are resolved relative to it (else
            relative to the current directory).
        **overrides: values for the net's parameters (numbers, strings,
            tuples; a string for a layer-valued parameter names the layer;
            an :class:`Expression` is evaluated as spec text).

    Returns:
        The expanded, statically checked :class:`~.graph.Net`.

    Raises:
        SpecError: for any error in the spec or the overrides.
    """
    scope = _scope_from_source(source, filename)
    return _build(scope, _select(scope, net)[0], overrides)


@_guarded
def load(path: str | os.PathLike, *, net: str | None = None, **overrides: Any) -> Net:
    """The layer graph of one net of a spec file (see :func:`parse`).

    Arguments:
        path: the spec file.
        net: which net (needed when the file holds several).
        **overrides: values for the net's parameters.

    Returns:
        The expanded, statically checked :class:`~.graph.Net`.
    """
    scope = _scope_from_path(path)
    return _build(scope, _select(scope, net)[0], overrides)


@_guarded
def parse_all(source: str | bytes, *, filename: str | None = None,
              **overrides: Any) -> list[Net]:
    """Every net of a spec given as text, in source order.

    Arguments:
        source: the spec text.
        filename: shown in errors; imports are resolved relative to it.
        **overrides: applied to each net that has the parameter; a name no net
            has is an error.

    Returns:
        The nets.
    """
    return _build_all(_scope_from_source(source, filename), overrides)


@_guarded
def load_all(path: str | os.PathLike, **overrides: Any) -> list[Net]:
    """Every net of a spec file, in source order (see :func:`parse_all`).

    Arguments:
        path: the spec file.
        **overrides: applied to each net that has the parameter.

    Returns:
        The nets.
    """
    return _build_all(_scope_from_path(path), overrides)


@_guarded
def net_names(path: str | os.PathLike) -> list[str]:
    """The names of the nets a spec file defines, in source order, without expanding them."""
    return list(_scope_from_path(Path(path)).nets)


@_guarded
def check_file(path: str | os.PathLike, *, net: str | None = None,
               **overrides: Any) -> tuple[list[Net], FileScope]:
    """What ``ntkdsl check`` needs: the nets (all, or the one named) and the file scope.

    A file without nets (a library of blocks and constants for imports) is
    not an error here: the list is then empty.

    Arguments:
        path: the spec file.
        net: one net to check, or None for all.
        **overrides: as for :func:`load_all` (or :func:`load` with ``net``).

    Returns:
        ``(nets, scope)``; ``scope.lets`` and ``scope.blocks`` describe the file.
    """
    scope = _scope_from_path(path)
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
