"""AST -> layer graph: imports, lets, blocks, repeat, defaults, net parameters.

The expander walks a net's body statement by statement, keeping an
environment of names (innermost first: block parameters and local lets,
then the net's parameters, then the file's lets, own file before imports)
and of the ``defaults`` in force, and produces a :class:`~.graph.Net` whose
body holds only built-in layer objects. Every error is a located SpecError.

Budgets keep hostile specs cheap: at most :data:`MAX_LAYERS` layers per net
and :data:`MAX_STEPS` steps per load (statements expanded, repeat iterations,
expression nodes evaluated, tuple elements built), so a huge ``repeat``, a
tower of nested block calls or a huge tuple evaluated again and again fails
fast with an error at the offending statement. Notes naming the block calls
that led to a span are built only when an error is raised.

Files are read through :meth:`Loader.read`: at most the size limit plus one
byte whatever the file is, imports confined to the spec's directory tree
(widened with ``allow_import_from``), and error messages quote lines only of
files that are specs (``.ntk``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diagnostics import Span, SpecError, did_you_mean
from ..grammar import ast
from ..grammar.parser import MAX_SOURCE_CHARS, parse_expression, parse_module
from . import activations, trainable
from .arguments import bind_args
from .evaluate import PADDING_WORDS, ArgValue, Evaluator, LayerRef, format_value, type_name
from .graph import Net
from .layers import BUILTINS, Layer, LayerArgError, Residual, Serial
from .layers.combinators import Concat, Product, Sum
from .layers.repeat import Repeat

#: the most layers one net may expand to
MAX_LAYERS = 10_000
#: the most expansion steps of one load: statements, repeat iterations, expression nodes,
#: tuple elements (one step each), block calls and layers (weighted by what they cost);
#: about a second of work
MAX_STEPS = 200_000
#: steps a block call costs (binding its arguments, a new scope)
BLOCK_CALL_STEPS = 5
#: steps a layer costs (validating it, and the static checks that walk it later)
LAYER_STEPS = 10
#: the most bytes read from one file (a character is at most 4 bytes of UTF-8)
MAX_SOURCE_BYTES = 4 * MAX_SOURCE_CHARS
#: the most characters of all the files one load reads together (a spec and its imports)
MAX_TOTAL_CHARS = 2 * MAX_SOURCE_CHARS
#: the most axes an ``Input`` shape may have
MAX_INPUT_AXES = 8
#: names that are statements, not layers: no let, block, net or parameter may take them
RESERVED = ("Input",)
#: the deepest chain of block calls
MAX_CALL_DEPTH = 100

#: keys a ``defaults`` statement may set
DEFAULT_KEYS = ("W_std", "b_std", "parameterization")

_INT_ARGS = ("out",)
_WINDOW_ARGS = ("kernel", "strides", "window")
_FLOAT_ARGS = ("W_std", "b_std", "alpha", "a", "b", "c")


@dataclass(frozen=True)
class Expression:
    """A net-parameter override given as spec text (``--set NAME=TEXT``).

    It is parsed and evaluated in the net's file scope, so ``--set width=64``,
    ``--set act=Erf(1, 2)`` and ``--set w=sqrt(2)`` all work.
    """

    text: str
    origin: str = "<--set>"


# -- files ------------------------------------------------------------------------------
@dataclass(eq=False)
class Block:
    """A block definition and the file whose names its body sees."""

    defn: ast.BlockDef
    file: FileScope


@dataclass
class FileScope:
    """One parsed file: its lets, blocks, nets and imports (in import order)."""

    filename: str
    module: ast.Module
    lets: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    nets: dict[str, ast.NetDef] = field(default_factory=dict)
    #: ``activation`` definitions (:class:`.activations.Activation`) by name
    activations: dict[str, Any] = field(default_factory=dict)
    imports: list[FileScope] = field(default_factory=list)
    defined_at: dict[str, Span] = field(default_factory=dict)
    #: top-level ``defaults``: key -> (value, span); they apply to every net of this file
    defaults: dict[str, tuple[Any, Span]] = field(default_factory=dict)
    #: the step counter of the load this file belongs to (shared by all its files and nets)
    steps: StepCounter = field(default_factory=lambda: StepCounter())

    def lookup_let(self, name: str) -> Any:
        """A file-level constant, own file before imports; KeyError if none."""
        if name in self.lets:
            return self.lets[name]
        for imp in self.imports:
            if name in imp.lets:
                return imp.lets[name]
        raise KeyError(name)

    def lookup_block(self, name: str) -> Block | None:
        """A block visible in this file, own file before imports."""
        if name in self.blocks:
            return self.blocks[name]
        for imp in self.imports:
            if name in imp.blocks:
                return imp.blocks[name]
        return None

    def lookup_activation(self, name: str) -> Any:
        """An ``activation`` visible in this file, own file before imports (or None)."""
        for f in (self, *self.imports):
            if name in f.activations:
                return f.activations[name]
        return None

    def visible_names(self) -> list[str]:
        """Every let, block and activation name visible here (for "did you mean")."""
        names = [*self.lets, *self.blocks, *self.activations]
        for imp in self.imports:
            names += [*imp.lets, *imp.blocks, *imp.activations]
        return names


def decode_source(data: bytes, filename: str, quote: bool = True) -> str:
    """Decode spec bytes as UTF-8 (a leading BOM is dropped).

    Arguments:
        data: the bytes.
        filename: the name used in the error.
        quote: whether the error may show the offending line.

    Raises:
        SpecError: located at the first byte that is not valid UTF-8.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        col = len(data[line_start:e.start].decode("utf-8", errors="replace")) + 1
        shown = data.decode("utf-8", errors="replace") if quote else ""
        raise SpecError(
            f"the file is not valid UTF-8 (byte 0x{data[e.start]:02x})",
            Span(filename, line, col, line, col + 1, shown),
        ) from None


class FileProblem(Exception):
    """A file cannot be used as a spec (unreadable, too large, not a file); the caller
    locates it: at the ``import`` for an import, at the file for the spec itself."""


def is_spec_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a spec (``.ntk``), both as written and once resolved.

    Only a spec's lines are quoted in error messages: the resolved check keeps
    a ``.ntk`` symlink to some other file from echoing it.
    """
    return str(path).endswith(".ntk") and os.path.realpath(path).endswith(".ntk")


def read_bounded(path: str | os.PathLike, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """At most ``limit`` bytes of the file at ``path``, whatever kind of file it is.

    Arguments:
        path: the file.
        limit: the most bytes accepted.

    Returns:
        The file's bytes.

    Raises:
        FileProblem: the file cannot be opened or read, is a directory, a pipe or
            a socket (reading those could block forever), or holds more than
            ``limit`` bytes (``/dev/zero`` is found too large, not read forever).
    """
    try:
        # non-blocking, so that opening a FIFO cannot hang; blocking again for the reads
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileProblem(str(e.strerror or e)) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise FileProblem("it is a directory")
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise FileProblem("it is not a regular file (a pipe or a socket)")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise FileProblem(str(e.strerror or e)) from None
    finally:
        os.close(fd)
    if total > limit:
        raise FileProblem(f"the file is too large (more than {limit} bytes)")
    return b"".join(chunks)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Loader:
    """Parses files once each, follows imports and reports cycles.

    Arguments:
        allow_import_from: directories outside the spec's own directory tree
            that imports may read from.

    Imports are confined to the directory tree of the first file loaded (the
    current directory for text without a file name) and to ``allow_import_from``;
    paths are compared once resolved, so a symlink cannot lead out.
    """

    def __init__(self, allow_import_from: Iterable[str | os.PathLike] = ()) -> None:
        self.cache: dict[str, FileScope] = {}
        self.stack: list[str] = []
        self.steps = StepCounter()
        self.chars = 0
        self.allowed = [os.path.realpath(d) for d in _as_dirs(allow_import_from)]
        self.root: str | None = None

    def read(self, path: str | os.PathLike, name: str) -> str:
        """The decoded text of a spec file, within the size limits.

        Raises:
            FileProblem: see :func:`read_bounded`, or the text is too long.
            SpecError: the bytes are not UTF-8 (located in the file).
        """
        source = decode_source(read_bounded(path), name, is_spec_file(path))
        if len(source) > MAX_SOURCE_CHARS:
            raise FileProblem(f"the file is too large ({len(source)} characters; at most "
                              f"{MAX_SOURCE_CHARS})")
        self.chars += len(source)
        if self.chars > MAX_TOTAL_CHARS:
            raise FileProblem(f"the spec and its imports are too large together (more than "
                              f"{MAX_TOTAL_CHARS} characters)")
        return source

    def load_path(self, path: str | os.PathLike, display: str | None = None) -> FileScope:
        """Read, decode and load the spec file at ``path``."""
        key = os.path.realpath(path)
        if key in self.cache:
            return self.cache[key]
        name = display if display is not None else str(path)
        if self.root is None:
            self.root = os.path.dirname(key)
        try:
            source = self.read(path, name)
        except FileProblem as e:
            raise SpecError(f"cannot read spec file: {e}", filename=name) from None
        return self.load_source(source, name, key, quote=is_spec_file(path))

    def load_source(self, source: str, filename: str, key: str | None = None, *,
                    quote: bool = True) -> FileScope:
        """Parse ``source`` and build its file scope (imports first, then lets in order).

        Arguments:
            source: the text.
            filename: the name shown in errors.
            key: the resolved path of the file (None for text not from a file).
            quote: whether error messages may show lines of ``source``.
        """
        if self.root is None:
            self.root = os.path.dirname(key) if key else os.path.realpath(os.getcwd())
        module = parse_module(source, filename, quote=quote)
        scope = FileScope(filename, module, steps=self.steps)
        if key is not None:
            self.stack.append(key)
        try:
            base = Path(os.path.dirname(key)) if key else Path.cwd()
            for item in module.items:
                if isinstance(item, ast.Import):
                    scope.imports.append(self.load_import(item, base, filename))
            for item in module.items:
                if isinstance(item, ast.Import):
                    continue
                if isinstance(item, ast.Defaults):
                    file_defaults(item, scope)
                    continue
                name_span = item.name_span
                self.define(scope, item.name, name_span, item)
                if isinstance(item, ast.Let):
                    ev = file_evaluator(scope)
                    scope.lets[item.name] = ev(item.value)
                elif isinstance(item, ast.BlockDef):
                    check_params(item.params, "block", item.name)
                    scope.blocks[item.name] = Block(item, scope)
                elif isinstance(item, ast.ActivationDef):
                    scope.activations[item.name] = activations.define(
                        item, scope.lookup_let, scope.visible_names,
                        lambda n, span: scope.steps.charge(n, span))
                else:
                    scope.nets[item.name] = item
        finally:
            if key is not None:
                self.stack.pop()
        if key is not None:
            self.cache[key] = scope
        return scope

    def define(self, scope: FileScope, name: str, span: Span, item: ast.Node) -> None:
        kind = {ast.Let: "constant", ast.BlockDef: "block", ast.NetDef: "net",
                ast.ActivationDef: "activation"}[type(item)]
        kind = ("an " if kind[0] in "aeiou" else "a ") + kind
        if name in BUILTINS:
            raise SpecError(f"'{name}' is a built-in layer; {kind} cannot use that name", span)
        if name in RESERVED:
            raise SpecError(f"'{name}' is a statement of the language; {kind} cannot use "
                            "that name", span)
        if name in scope.defined_at:
            prev = scope.defined_at[name]
            raise SpecError(f"'{name}' is already defined (line {prev.line})", span)
        scope.defined_at[name] = span

    def load_import(self, item: ast.Import, base: Path, filename: str) -> FileScope:
        target = base / item.path
        key = os.path.realpath(target)
        roots = [r for r in (self.root, *self.allowed) if r is not None]
        if not any(_within(key, r) for r in roots):
            how = "an absolute path" if os.path.isabs(item.path) else "a path"
            raise SpecError(
                f"cannot import '{item.path}': {how} outside the directory of the spec "
                f"({self.root})", item.span,
                ["imports are confined to the spec's directory and the folders below it; "
                 "--allow-import-from DIR (allow_import_from=[DIR] in Python) allows "
                 "another directory"])
        if key in self.stack:
            chain = [*self.stack[self.stack.index(key):], key]
            shown = " -> ".join(os.path.basename(k) for k in chain)
            raise SpecError(f"import cycle: {shown}", item.span)
        if key in self.cache:
            return self.cache[key]
        if not os.path.exists(target):
            raise SpecError(f"cannot import '{item.path}': no such file ({target})", item.span)
        # shown as the importer's name joined with the import path, as a user would write it
        display = os.path.normpath(os.path.join(os.path.dirname(filename), item.path))
        try:
            source = self.read(target, display)
        except FileProblem as e:
            raise SpecError(f"cannot import '{item.path}': {e}", item.span) from None
        return self.load_source(source, display, key, quote=is_spec_file(target))


def _as_dirs(dirs: Iterable[str | os.PathLike] | str | os.PathLike | None) -> list:
    if dirs is None:
        return []
    if isinstance(dirs, str | os.PathLike):
        return [dirs]
    return list(dirs)


def file_defaults(stmt: ast.Defaults, scope: FileScope) -> None:
    """A top-level ``defaults``: checked now, applied at the start of every net of the file."""
    ev = file_evaluator(scope)
    for item in stmt.items:
        key = check_default_key(item, ())
        if key in scope.defaults:
            prev = scope.defaults[key][1]
            raise SpecError(f"'{key}' is already set by a top-level defaults (line {prev.line})",
                            item.span)
        scope.defaults[key] = (check_default_value(item, ev(item.value), ()), item.span)


def check_params(params: tuple[ast.Param, ...], kind: str, owner: str) -> None:
    """Reject duplicate parameters and, for blocks, a required one after a default."""
    seen: set[str] = set()
    had_default = False
    for p in params:
        if p.name in seen:
            raise SpecError(f"parameter '{p.name}' appears twice in {kind} '{owner}'", p.span)
        if p.name in BUILTINS:
            raise SpecError(f"'{p.name}' is a built-in layer; a parameter cannot use that name",
                            p.span)
        if p.name in RESERVED:
            raise SpecError(f"'{p.name}' is a statement of the language; a parameter cannot "
                            "use that name", p.span)
        seen.add(p.name)
        if p.default is None:
            if kind == "net":
                raise SpecError(
                    f"net parameter '{p.name}' needs a default "
                    f"(write {p.name} = VALUE); every net parameter has one", p.span)
            if had_default:
                raise SpecError(f"parameter '{p.name}' without a default follows one with a "
                                "default", p.span)
        else:
            had_default = True


def file_evaluator(scope: FileScope) -> Evaluator:
    """An evaluator for file-level expressions (lets; --set values)."""
    env = Env(scope, {}, {}, (), Budget(scope.steps))
    return env.evaluator()


# -- expansion ------------------------------------------------------------------------
class StepCounter:
    """The steps one load has taken (statements, iterations, expression nodes).

    :meth:`charge` is called on every statement and expression node, so it is
    kept to an increment and a comparison; the error (with its notes) is built
    only when the limit is passed.
    """

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0

    def charge(self, n: int, span: Span, where: Iterable[str] = ()) -> None:
        """Count ``n`` steps; past :data:`MAX_STEPS`, a SpecError at ``span``."""
        self.steps += n
        if self.steps > MAX_STEPS:
            if where and not span.context:
                span = dataclasses.replace(span, context=where)
            raise SpecError(
                f"the spec takes too long to expand (more than {MAX_STEPS} steps); "
                "is a repeat count too large, or a block called too often?", span)


@dataclass
class Budget:
    """The load's step counter and one net's layer count (against MAX_LAYERS)."""

    steps: StepCounter = field(default_factory=StepCounter)
    layers: int = 0

    def layer(self, span: Span) -> None:
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise SpecError(f"the net expands to more than {MAX_LAYERS} layers", span)
        self.steps.charge(LAYER_STEPS, span)


@dataclass(frozen=True)
class CallChain:
    """The block calls that led to a span, innermost first; iterating it gives the notes.

    A linked list, so a call adds one node instead of copying the chain, and
    the note strings exist only when an error renders them.
    """

    name: str
    span: Span
    parent: CallChain | None = None

    def __iter__(self) -> Iterator[str]:
        node: CallChain | None = self
        while node is not None:
            yield f"in block '{node.name}' called at {node.span}"
            node = node.parent

    def __bool__(self) -> bool:
        return True


@dataclass
class Env:
    """What a body sees while it is expanded.

    ``locals`` are the dicts of block parameters and local lets, outermost
    first; ``defaults`` maps a key to ``(value, span)``; ``calls`` are the
    blocks being expanded (for recursion) and ``chain`` the calls themselves
    (for error notes).
    """

    file: FileScope
    net_params: dict[str, Any]
    defaults: dict[str, tuple[Any, Span]]
    calls: tuple[Block, ...]
    budget: Budget
    locals: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    chain: CallChain | None = None

    def nested(self) -> Env:
        """The environment of a nested body: a new local scope, a copy of the defaults."""
        return Env(self.file, self.net_params, dict(self.defaults), self.calls, self.budget,
                   [*self.locals, {}], self.chain)

    @property
    def where(self) -> CallChain | tuple[()]:
        """Notes naming the block calls that led here, innermost first (lazy)."""
        return self.chain if self.chain is not None else ()

    def at(self, span: Span) -> Span:
        """``span`` with this environment's call chain attached."""
        if self.chain is None or span.context:
            return span
        return dataclasses.replace(span, context=self.chain)

    def step(self, span: Span, n: int = 1) -> None:
        """Charge ``n`` steps to the load's budget."""
        self.budget.steps.charge(n, span, self.where)

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.locals):
            if name in scope:
                return scope[name]
        if name in self.net_params:
            return self.net_params[name]
        return self.file.lookup_let(name)

    def bound(self, name: str) -> bool:
        """Whether ``name`` has a value here (a local, a net parameter or a file let)."""
        if name in self.net_params or any(name in scope for scope in self.locals):
            return True
        f = self.file
        return name in f.lets or any(name in imp.lets for imp in f.imports)

    def layer_ref(self, name: str, args: tuple[ArgValue, ...], span: Span) -> LayerRef | None:
        if name in BUILTINS:
            return LayerRef(name, args, BUILTINS[name], span)
        block = self.file.lookup_block(name)
        if block is not None:
            return LayerRef(name, args, block, span)
        act = self.file.lookup_activation(name)
        if act is not None:
            return activations.ref(act, args, span)
        return None

    def candidates(self) -> list[str]:
        names = [n for scope in self.locals for n in scope]
        return [*names, *self.net_params, *self.file.visible_names(), *BUILTINS]

    def evaluator(self) -> Evaluator:
        return Evaluator(self.lookup, self.layer_ref, self.candidates, self.where,
                         self.budget.steps.charge)

    def error(self, message: str, span: Span, notes=()) -> SpecError:
        return SpecError(message, self.at(span), notes)


def expand_body(stmts: tuple[ast.Stmt, ...], env: Env) -> list[Layer]:
    """Expand a body's statements in order into layers.

    Arguments:
        stmts: the body.
        env: the environment of the enclosing body (not modified).

    Returns:
        The layers, in order.
    """
    env = env.nested()
    out: list[Layer] = []
    for stmt in stmts:
        env.step(stmt.span)
        if isinstance(stmt, ast.Call):
            if stmt.name in RESERVED:
                raise env.error(
                    f"{stmt.name}(...) is allowed only as the first statement of a net body",
                    stmt.name_span)
            out.extend(expand_call(stmt, env))
        elif isinstance(stmt, ast.Let):
            if stmt.name in BUILTINS or stmt.name in RESERVED:
                raise env.error(f"'{stmt.name}' is a built-in layer; a constant cannot use "
                                "that name", stmt.name_span)
            if stmt.name in env.locals[-1]:
                raise env.error(f"'{stmt.name}' is already defined in this body",
                                stmt.name_span)
            env.locals[-1][stmt.name] = env.evaluator()(stmt.value)
        elif isinstance(stmt, ast.Defaults):
            apply_defaults(stmt, env)
        elif isinstance(stmt, ast.Repeat):
            out.extend(expand_repeat(stmt, env))
        elif isinstance(stmt, ast.ResidualStmt):
            out.append(expand_residual(stmt, env))
        elif isinstance(stmt, ast.BranchesStmt):
            out.append(expand_branches(stmt, env))
        else:  # pragma: no cover - the parser makes no other statements
            raise env.error(f"unknown statement {type(stmt).__name__}", stmt.span)
    return out


def apply_defaults(stmt: ast.Defaults, env: Env) -> None:
    """Set the defaults that the following Dense and Conv layers use."""
    ev = env.evaluator()
    for item in stmt.items:
        key = check_default_key(item, env.where)
        env.defaults[key] = (check_default_value(item, ev(item.value), env.where), item.span)


def check_default_key(item: ast.Arg, where: Iterable[str]) -> str:
    """The key of one ``defaults`` item, if it is one that ``defaults`` sets."""
    key = item.key
    if key not in DEFAULT_KEYS:
        raise SpecError(
            f"'defaults' cannot set '{key}'; it sets W_std, b_std or parameterization",
            _with(item.span, where), did_you_mean(key or "", DEFAULT_KEYS))
    return key


def check_default_value(item: ast.Arg, value: Any, where: Iterable[str]) -> Any:
    """``value`` if a Dense layer accepts it for ``item.key``, else a located SpecError."""
    from .layers import Dense

    try:
        Dense(out=1, **{item.key: value})
    except LayerArgError as e:
        raise SpecError(e.message, _with(item.value.span, where),
                        arg_notes(item.key, value)) from None
    return value


def _with(span: Span, where: Iterable[str]) -> Span:
    return dataclasses.replace(span, context=where) if where and not span.context else span


def arg_notes(key: str | None, value: Any) -> list[str]:
    """"did you mean" notes for a string argument that is a known word but for its case."""
    if not isinstance(value, str):
        return []
    if key == "padding" and value.upper() in PADDING_WORDS and value != value.upper():
        return [f"did you mean {value.upper()}? (the padding words are upper case)"]
    if key == "parameterization" and value.lower() in ("ntk", "standard") \
            and value != value.lower():
        return [f'did you mean "{value.lower()}"?']
    return []


def expand_repeat(stmt: ast.Repeat, env: Env) -> list[Layer]:
    """``repeat N { BODY }``: the body N times, as one :class:`Repeat` node (N >= 2).

    The node holds every iteration as expanded (each layer with its span), so
    the passes that read a sequence see the unrolled form; the kernel function
    and the finite net run its iterations as a loop where the shapes allow
    (``layers/repeat.py``).
    """
    value = env.evaluator()(stmt.count)
    trainable.check_structural(value, "a repeat count", env.error, stmt.count.span)
    count = as_int(value)
    if count is None or count < 0:
        raise env.error(
            f"repeat count must be a non-negative integer, got {format_value(value)}",
            stmt.count.span)
    if count > MAX_LAYERS:
        raise env.error(f"repeat count {count} is too large (a net has at most {MAX_LAYERS} "
                        "layers)", stmt.count.span)
    iterations: list[tuple[Layer, ...]] = []
    for _ in range(count):
        env.step(stmt.span)
        iterations.append(tuple(expand_body(stmt.body, env)))
    out = [layer for it in iterations for layer in it]
    if count >= 2 and out and all(it == iterations[0] for it in iterations[1:]):
        return [Repeat(layers=tuple(out), count=count, span=env.at(stmt.span))]
    return out


def expand_residual(stmt: ast.ResidualStmt, env: Env) -> Layer:
    """``Residual { BODY } [shortcut { BODY2 }]``; an empty body is the identity."""
    branch = expand_body(stmt.body, env)
    shortcut = expand_body(stmt.shortcut, env) if stmt.shortcut is not None else []
    span = env.at(stmt.span)
    if not branch and not shortcut:
        raise SpecError(
            "Residual with two identity paths (y = x + x) is not allowed: the paths are "
            "not independent, so their kernels do not add", span)
    if not branch:
        # y = x + S(x): keep the identity as the shortcut (sums commute)
        branch, shortcut = shortcut, []
    env.budget.layer(span)
    return Residual(
        branch=Serial(layers=tuple(branch), span=span),
        shortcut=Serial(layers=tuple(shortcut), span=span) if shortcut else None,
        span=span,
    )


_BRANCHES = {"Sum": Sum, "Concat": Concat, "Product": Product}


def expand_branches(stmt: ast.BranchesStmt, env: Env) -> Layer:
    """``Sum|Concat|Product { B1 } { B2 } ...``; an empty body is the identity.

    The independence conditions that need no layer facts are checked here (the
    number of branches, identity branches); that each branch ends in an affine
    layer is a static check (``checks.py``).
    """
    span = env.at(stmt.span)
    if len(stmt.branches) < 2:
        raise SpecError(f"{stmt.kind} needs at least two branches {{ ... }} {{ ... }}, got "
                        f"{len(stmt.branches)} (an empty body {{ }} is the identity)", span)
    paths: list[Serial | None] = []
    for body, bspan in zip(stmt.branches, stmt.branch_spans):
        layers = expand_body(body, env)
        paths.append(Serial(layers=tuple(layers), span=env.at(bspan)) if layers else None)
    identities = [i for i, p in enumerate(paths) if p is None]
    if stmt.kind == "Sum" and len(identities) > 1:
        raise SpecError(
            f"a Sum may have at most one identity branch {{ }}, but branches "
            f"{identities[0] + 1} and {identities[1] + 1} are both empty: y = x + x is not a "
            "sum of independent paths, so the kernels do not add",
            env.at(stmt.branch_spans[identities[1]]))
    if stmt.kind == "Product" and identities:
        raise SpecError(
            f"a Product branch cannot be the identity (branch {identities[0] + 1} is empty): "
            "each branch must end in an affine layer (Dense, Conv, ...) so that the branches "
            "are independent zero-mean Gaussians and their kernels multiply",
            env.at(stmt.branch_spans[identities[0]]))
    env.budget.layer(span)
    return _BRANCHES[stmt.kind](paths=tuple(paths), span=span)


def expand_call(stmt: ast.Call, env: Env) -> list[Layer]:
    """A statement naming a built-in layer, a block or a layer-valued name."""
    name = stmt.name
    if not env.bound(name):
        value = None
    else:
        value = env.lookup(name)
        if not isinstance(value, LayerRef) and name not in BUILTINS:
            raise env.error(
                f"'{name}' is {type_name(value, True)} ({format_value(value)}), not a layer",
                stmt.name_span)
        if not isinstance(value, LayerRef):
            value = None
    args = env.evaluator().args(stmt.args) if stmt.args else ()
    if value is not None:
        return expand_ref(value, value.args + args, stmt, env)
    ref = env.layer_ref(name, (), stmt.name_span)
    if ref is None:
        layer_names = [*BUILTINS, *env.file.blocks]
        for imp in env.file.imports:
            layer_names += list(imp.blocks)
        layer_names += [n for s in env.locals for n, v in s.items() if isinstance(v, LayerRef)]
        layer_names += [n for n, v in env.net_params.items() if isinstance(v, LayerRef)]
        raise env.error(f"unknown layer or block '{name}'", stmt.name_span,
                        did_you_mean(name, layer_names))
    return expand_ref(ref, args, stmt, env)


def expand_ref(ref: LayerRef, args: tuple[ArgValue, ...], stmt: ast.Call, env: Env) -> list[Layer]:
    """Expand a built-in layer or a block with the given (evaluated) arguments."""
    if isinstance(ref.target, Block):
        return expand_block(ref.target, args, stmt, env)
    if isinstance(ref.target, activations.Activation):
        trainable.check_activation_args(args, ref.name, env.error, stmt.span)
        layer = activations.instantiate(ref.target, args, stmt.span, stmt.name_span, env)
        env.budget.layer(env.at(stmt.span))
        return [layer]
    return [make_layer(ref.target, args, stmt, env)]


def make_layer(cls: type[Layer], args: tuple[ArgValue, ...], stmt: ast.Call, env: Env) -> Layer:
    """Construct a built-in layer, validating its arguments."""
    span = env.at(stmt.span)
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name != "span"]
    names = [f.name for f in fields]
    bound = bind_args(cls.spec_name or cls.__name__, names, args, stmt.span, env)
    for key in DEFAULT_KEYS:
        if key in names and key not in bound and key in env.defaults:
            value, dspan = env.defaults[key]
            bound[key] = (value, dspan)
    for f in fields:
        if f.name not in bound and is_required(f):
            raise env.error(f"{cls.spec_name} is missing its argument '{f.name}'",
                            stmt.name_span)
    trainable.check_layer_args(cls, bound, env.error, stmt.span)
    # a layer's validation walks its tuple arguments: charge them like expression nodes
    size = sum(len(v) for v, _ in bound.values() if isinstance(v, tuple))
    if size:
        env.step(stmt.span, size)
    # integers where integers are needed first; reals after validation, so that
    # messages show the value as written (-1, not -1.0)
    kwargs = {k: v if k in _FLOAT_ARGS else coerce(k, v) for k, (v, _) in bound.items()}
    try:
        layer = cls(span=span, **kwargs)
        reals = {k: coerce(k, v) for k, v in kwargs.items() if k in _FLOAT_ARGS}
        if any(type(v) is not type(kwargs[k]) for k, v in reals.items()):
            layer = dataclasses.replace(layer, **reals)
    except LayerArgError as e:
        arg_span = bound.get(e.arg, (None, None))[1] if e.arg else None
        value = bound.get(e.arg, (None, None))[0] if e.arg else None
        raise env.error(e.message, arg_span or stmt.span, arg_notes(e.arg, value)) from None
    except (TypeError, ValueError) as e:
        raise env.error(f"invalid arguments for {cls.spec_name}: {e}", stmt.span) from None
    env.budget.layer(span)
    return layer


def expand_block(block: Block, args: tuple[ArgValue, ...], stmt: ast.Call, env: Env) -> list[Layer]:
    """Expand a block call in place, with a fresh scope of its parameters."""
    defn = block.defn
    if any(b is block for b in env.calls):  # identity: Block equality would compare files
        chain = " -> ".join([*(c.defn.name for c in env.calls), defn.name])
        raise env.error(f"block '{defn.name}' calls itself (recursion: {chain})",
                        stmt.name_span)
    if len(env.calls) >= MAX_CALL_DEPTH:
        raise env.error(f"block calls are nested too deeply (more than {MAX_CALL_DEPTH})",
                        stmt.name_span)
    env.step(stmt.name_span, BLOCK_CALL_STEPS)
    names = [p.name for p in defn.params]
    bound = bind_args(f"block '{defn.name}'", names, args, stmt.span, env)
    inner = Env(
        file=block.file,
        net_params=env.net_params,
        defaults=dict(env.defaults),
        calls=(*env.calls, block),
        budget=env.budget,
        locals=[{}],
        chain=CallChain(defn.name, stmt.name_span, env.chain),
    )
    scope = inner.locals[0]
    for p in defn.params:
        if p.name in bound:
            scope[p.name] = bound[p.name][0]
        elif p.default is not None:
            # defaults are evaluated at the call, in the block's file, seeing earlier parameters
            scope[p.name] = inner.evaluator()(p.default)
        else:
            raise env.error(f"block '{defn.name}' is missing its argument '{p.name}'",
                            stmt.name_span)
    return expand_body(defn.body, inner)


def is_required(f: dataclasses.Field) -> bool:
    """Whether a layer field has no default (a method of the same name is no default)."""
    default = f.default
    if default is dataclasses.MISSING:
        return f.default_factory is dataclasses.MISSING
    return callable(default)


# -- values ----------------------------------------------------------------------------
def as_int(value: Any) -> int | None:
    """``value`` as an int if it is an integer or an integer-valued float, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def coerce(key: str, value: Any) -> Any:
    """Normalise a layer argument: integer-valued floats become ints where an
    integer is needed (``out``, kernels, strides, windows), ints become floats
    where a real number is needed. Anything else is left for the layer to reject."""
    if key in _INT_ARGS:
        i = as_int(value)
        return value if i is None else i
    if key in _WINDOW_ARGS:
        if isinstance(value, tuple):
            items = tuple(as_int(v) for v in value)
            return value if any(i is None for i in items) else items
        i = as_int(value)
        return value if i is None else i
    if key in _FLOAT_ARGS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# -- nets ---------------------------------------------------------------------------------
def expand_net(scope: FileScope, defn: ast.NetDef, overrides: Mapping[str, Any],
               trainable_names: Iterable[str] = ()) -> Net:
    """Expand one net with parameter overrides.

    Arguments:
        scope: the file the net is defined in.
        defn: the net's AST.
        overrides: parameter name -> Python value or :class:`Expression`.
        trainable_names: parameters given as :class:`.trainable.Sym` values (real
            numbers the differentiable kernels take as arguments).

    Returns:
        The layer graph.
    """
    check_params(defn.params, "net", defn.name)
    names = [p.name for p in defn.params]
    for key in overrides:
        if key not in names:
            notes = did_you_mean(key, names)
            notes.append(
                f"the parameters of net '{defn.name}' are: {', '.join(names)}"
                if names else f"net '{defn.name}' has no parameters")
            raise SpecError(f"net '{defn.name}' has no parameter '{key}'", defn.name_span, notes)
    budget = Budget(scope.steps)
    params: dict[str, Any] = {}
    env = Env(scope, params, dict(scope.defaults), (), budget, [{}])
    for p in defn.params:
        if p.name in overrides:
            params[p.name] = override_value(p, overrides[p.name], env)
        else:
            params[p.name] = env.evaluator()(p.default)
        if p.name in trainable_names:
            params[p.name] = trainable_param(p, params[p.name])
    for key in trainable_names:
        if key not in names:
            raise SpecError(f"net '{defn.name}' has no parameter '{key}' to make trainable",
                            defn.name_span, did_you_mean(key, names))
    stmts = defn.body
    input_shape = None
    if stmts and isinstance(stmts[0], ast.Call) and stmts[0].name == "Input":
        env.step(stmts[0].span)
        input_shape = input_statement(stmts[0], env)
        stmts = stmts[1:]
    layers = expand_body(stmts, env)
    body = Serial(layers=tuple(layers), span=defn.name_span)
    return Net(
        name=defn.name,
        params=tuple(params.items()),
        body=body,
        filename=scope.filename,
        span=defn.name_span,
        input_shape=input_shape,
    )


def input_statement(stmt: ast.Call, env: Env) -> tuple[int, ...]:
    """The shape an ``Input(shape)`` statement declares: positive sizes, -1 for any size."""
    args = env.evaluator().args(stmt.args)
    bound = bind_args("Input", ["shape"], args, stmt.span, env)
    if "shape" not in bound:
        raise env.error("Input is missing its argument 'shape' (e.g. Input((8, 8, 1)))",
                        stmt.name_span)
    value, span = bound["shape"]
    trainable.check_structural(value, "an Input shape", env.error, span or stmt.span)
    shape = value if isinstance(value, tuple) else (value,)
    sizes = tuple(as_int(v) for v in shape)
    if (not shape or len(shape) > MAX_INPUT_AXES
            or any(n is None or (n <= 0 and n != -1) for n in sizes)):
        raise env.error(
            "'shape' must be a tuple of 1 to "
            f"{MAX_INPUT_AXES} sizes, each a positive integer or -1 (any size), got "
            f"{format_value(value)}", span or stmt.span)
    return sizes


def trainable_param(param: ast.Param, value: Any) -> Any:
    """A trainable net parameter's value: its default (or override) as a Sym."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"net parameter '{param.name}' cannot be trainable: its value is "
                        f"{type_name(value, True)} ({format_value(value)}), not a real number",
                        param.span)
    return trainable.param(param.name, float(value))


def override_value(param: ast.Param, value: Any, env: Env) -> Any:
    """Turn a caller's override of ``param`` into a spec value."""
    if isinstance(value, Expression):
        return env.evaluator()(parse_expression(value.text, value.origin))
    if isinstance(value, str) and isinstance(env.evaluator()(param.default), LayerRef):
        # a layer-valued parameter: a string names the layer ("Relu", "Erf(1, 2)")
        return env.evaluator()(parse_expression(value, f"<override {param.name}>"))
    return python_value(param.name, value)


def python_value(name: str, value: Any) -> Any:
    """A Python override as a spec value (numbers, strings, tuples, lists, layers)."""
    import numbers

    if isinstance(value, bool):
        raise SpecError(f"override '{name}' must be a number, string or tuple, got a boolean")
    if isinstance(value, int | float | str | LayerRef):
        v = value
    elif isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Real):
        v = float(value)
    elif isinstance(value, tuple | list):
        return tuple(python_value(name, x) for x in value)
    else:
        raise SpecError(
            f"override '{name}' must be a number, string or tuple, got {type(value).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(f"override '{name}' must be finite, got {v!r}")
    if isinstance(v, int) and abs(v) > 2**63 - 1:
        raise SpecError(f"override '{name}' is too large")
    return v
