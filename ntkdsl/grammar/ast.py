"""The spec AST: frozen dataclasses, each node keeping its source span.

The parser (``grammar/parser.py``) builds these from lark's tree; the
expander (``compiler/expand.py``) turns them into the layer graph. Nothing
here evaluates anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..diagnostics import Span


@dataclass(frozen=True)
class Node:
    """Base of every AST node: ``span`` locates it (excluded from equality)."""

    span: Span = field(compare=False, repr=False, kw_only=True)


# -- expressions ---------------------------------------------------------------
@dataclass(frozen=True)
class Number(Node):
    """A numeric literal: ``3`` (int), ``1.5``, ``.5``, ``1e-3`` (float)."""

    value: int | float


@dataclass(frozen=True)
class String(Node):
    """A string literal, quotes removed."""

    value: str


@dataclass(frozen=True)
class Name(Node):
    """A name used as a value (a constant, a parameter, a layer, a padding word)."""

    name: str


@dataclass(frozen=True)
class TupleExpr(Node):
    """``(a, b)``, ``(a,)`` or ``()``."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class BinOp(Node):
    """``left OP right`` with OP one of ``+ - * / **``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Node):
    """``-x`` or ``+x``."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Apply(Node):
    """``NAME(args)`` inside an expression: a function (sqrt, ...) or a layer value."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    args: tuple[Arg, ...]


Expr = Number | String | Name | TupleExpr | BinOp | UnaryOp | Apply


@dataclass(frozen=True)
class Arg(Node):
    """One argument of a call: positional (``key is None``) or ``key = value``."""

    key: str | None
    value: Expr


# -- statements ------------------------------------------------------------------
@dataclass(frozen=True)
class Call(Node):
    """``NAME`` or ``NAME(args)`` as a statement: a layer, a block or a layer value."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    args: tuple[Arg, ...]
    has_parens: bool = False


@dataclass(frozen=True)
class Repeat(Node):
    """``repeat COUNT { BODY }``."""

    count: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class ResidualStmt(Node):
    """``Residual { BODY } [shortcut { SHORTCUT }]``; ``shortcut`` None when absent."""

    body: tuple[Stmt, ...]
    shortcut: tuple[Stmt, ...] | None


@dataclass(frozen=True)
class Defaults(Node):
    """``defaults KEY = EXPR, ...`` (in a body, or at the top level of a file)."""

    items: tuple[Arg, ...]


@dataclass(frozen=True)
class Let(Node):
    """``let NAME = EXPR`` (at file level or in a body)."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    value: Expr


@dataclass(frozen=True)
class BranchesStmt(Node):
    """``Sum|Concat|Product { B1 } { B2 } ...``; ``branch_spans`` locate each body's braces."""

    kind: str
    branches: tuple[tuple[Stmt, ...], ...]
    branch_spans: tuple[Span, ...] = field(compare=False, repr=False)


Stmt = Call | Repeat | ResidualStmt | BranchesStmt | Defaults | Let


# -- top level -------------------------------------------------------------------
@dataclass(frozen=True)
class Param(Node):
    """A block or net parameter, with its default expression (or None)."""

    name: str
    default: Expr | None


@dataclass(frozen=True)
class Import(Node):
    """``import "path"``."""

    path: str


@dataclass(frozen=True)
class BlockDef(Node):
    """``block NAME(PARAMS) { BODY }`` (``block NAME { BODY }`` without parameters)."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class NetDef(Node):
    """``net NAME[(PARAMS)] { BODY }``."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class ActivationDef(Node):
    """``activation NAME(x, P = DEFAULT, ...) = FORMULA``: the first parameter is the
    pre-activation variable, the others the activation's parameters."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    params: tuple[Param, ...]
    formula: Expr


Item = Import | Let | BlockDef | NetDef | Defaults | ActivationDef


@dataclass(frozen=True)
class Module(Node):
    """A whole spec file: its items in source order."""

    filename: str
    items: tuple[Item, ...]
