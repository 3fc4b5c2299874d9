"""Spec text -> AST, and the one place where lark's errors become SpecErrors.

The LALR parser is built once, lazily, on first use (importing this module
is cheap). Every lark exception is translated here, so no other module ever
sees one: expected tokens are shown as the characters a user types
(``'}'``, ``a name``), and the end of the text as ``end of input``.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator
from importlib import resources

import lark
from lark.visitors import Transformer_NonRecursive, v_args

from ..diagnostics import Span, SpecError
from . import ast

#: the deepest bracket nesting a spec may use; deeper text is rejected before parsing
MAX_NESTING = 100
#: the largest spec text accepted, in characters (parsing a spec this size takes about a
#: second; a real architecture is a few hundred characters)
MAX_SOURCE_CHARS = 100_000
#: integers beyond this magnitude are rejected (they would mean nothing as widths)
MAX_INT = 2**63 - 1

_REGEX_TERMINALS = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string"}
_EXPR_START = {"NAME", "NUMBER", "STRING", "LPAR", "MINUS", "PLUS"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "__ANON_0"}
_STATEMENT_START = {"NAME", "REPEAT", "RESIDUAL", "SUM", "CONCAT", "PRODUCT", "DEFAULTS",
                    "LET"}


@functools.cache
def _parser() -> lark.Lark:
    grammar = resources.files(__package__).joinpath("ntkdsl.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        start=["start", "expr"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse_module(source: str, filename: str = "<spec>", *, quote: bool = True) -> ast.Module:
    """Parse spec text into an AST :class:`~ntkdsl.grammar.ast.Module`.

    Arguments:
        source: the spec text (already decoded).
        filename: the name used in spans and error messages.
        quote: whether error messages may show lines of ``source``; False for a
            file that is not a spec (not ``.ntk``), whose content is nobody's
            business to print.

    Returns:
        The module's AST.

    Raises:
        SpecError: for any syntax error, located at the offending character.
    """
    return _parse(source, filename, "start", quote)


def parse_expression(source: str, filename: str = "<expression>") -> ast.Expr:
    """Parse one expression (e.g. the value of ``--set NAME=VALUE``).

    Arguments:
        source: the expression text.
        filename: the name used in spans and error messages.

    Returns:
        The expression's AST.

    Raises:
        SpecError: for any syntax error.
    """
    return _parse(source, filename, "expr")


def _parse(source: str, filename: str, start: str, quote: bool = True):
    shown = source if quote else ""
    if len(source) > MAX_SOURCE_CHARS:
        raise SpecError(
            f"spec is too large ({len(source)} characters; at most {MAX_SOURCE_CHARS})",
            Span(filename, 1, 1, 1, 2, shown),
        )
    _check_nesting(source, filename, shown)
    try:
        tree = _parser().parse(source, start=start)
    except lark.exceptions.UnexpectedInput as e:
        raise _translate(e, source, filename, shown) from None
    try:
        return _ToAst(shown, filename).transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        raise


# -- error translation -------------------------------------------------------------
def _brackets(source: str) -> Iterator[tuple[str, int, int]]:
    """Every bracket outside strings and comments, as ``(char, line, column)``."""
    line, col = 1, 0
    quote = None
    comment = False
    for ch in source:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            quote, comment = None, False
            continue
        if comment:
            continue
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch == "#":
            comment = True
        elif ch in "\"'":
            quote = ch
        elif ch in "(){}":
            yield ch, line, col


def _check_nesting(source: str, filename: str, shown: str) -> None:
    """Reject brackets nested deeper than MAX_NESTING, before lark sees them.

    Deep nesting would make every later recursive pass (evaluation, equality of
    AST nodes) fail with RecursionError; a located error is more useful.
    """
    depth = 0
    for ch, line, col in _brackets(source):
        if ch in "({":
            depth += 1
            if depth > MAX_NESTING:
                raise SpecError(
                    f"brackets are nested too deeply (more than {MAX_NESTING} levels)",
                    Span(filename, line, col, line, col + 1, shown),
                )
        else:
            depth = max(depth - 1, 0)


def _unclosed(source: str, filename: str, shown: str) -> list[tuple[str, Span]]:
    """Located notes for the brackets still open at the end of ``source``, innermost first."""
    stack: list[tuple[str, int, int]] = []
    for ch, line, col in _brackets(source):
        if ch in "({":
            stack.append((ch, line, col))
        elif stack:
            stack.pop()
    return [(f"this '{ch}' is never closed", Span(filename, line, col, line, col + 1, shown))
            for ch, line, col in reversed(stack[-3:])]


def _describe_terminal(name: str) -> str:
    if name == "$END":
        return "end of input"
    if name in _REGEX_TERMINALS:
        return _REGEX_TERMINALS[name]
    try:
        pattern = _parser().get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _describe_expected(expected: set[str]) -> str:
    names = set(expected)
    words: list[str] = []
    if _EXPR_START <= names:
        names -= _EXPR_START
        words.append("an expression")
    elif _STATEMENT_START <= names:
        names -= _STATEMENT_START
        words.append("a statement")
    if _OPERATORS <= names:
        names -= _OPERATORS
        words.append("an operator")
    words.extend(sorted(_describe_terminal(n) for n in names))
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe_token(token: lark.Token, quote: bool = True) -> str:
    if token.type == "$END":
        return "end of input"
    if not quote:  # a file that is not a spec: say what kind of token, never its text
        return {"NAME": "a name", "NUMBER": "a number", "STRING": "a string"}.get(
            token.type, "a symbol")
    if token.type == "NAME":
        return f"name '{token}'"
    if token.type == "NUMBER":
        return f"number {token}"
    if token.type == "STRING":
        return f"string {token}"
    return f"'{token}'"


def _end_span(shown: str, filename: str, source: str) -> Span:
    lines = source.split("\n")
    line = len(lines)
    col = len(lines[-1]) + 1
    return Span(filename, line, col, line, col + 1, shown)


def _printable(ch: str) -> str:
    if ch.isprintable():
        return f"'{ch}'"
    return f"{ch!r} (U+{ord(ch):04X})"


def _translate(e: lark.exceptions.UnexpectedInput, source: str, filename: str,
               shown: str) -> SpecError:
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else ""
        span = Span(filename, e.line, e.column, e.line, e.column + 1, shown)
        if ch in "\"'":
            return SpecError("unterminated string (strings end on the same line)", span)
        if not shown and source:  # not a spec: do not show its characters
            return SpecError("unexpected character (the file is not a spec: it is not shown)",
                             span)
        if ch and unicodedata.category(ch) == "Nd":
            return SpecError(f"{_printable(ch)} (U+{ord(ch):04X}) is not an ASCII digit; "
                             "numbers are written with the digits 0-9", span)
        return SpecError(f"unexpected character {_printable(ch)}", span)
    if isinstance(e, lark.exceptions.UnexpectedToken):
        token = e.token
        if token.type == "$END":
            span = _end_span(shown, filename, source)
        else:
            span = Span(filename, token.line, token.column, token.end_line, token.end_column,
                        shown)
        msg = f"unexpected {_describe_token(token, bool(shown) or not source)}"
        # ``accepts`` is what the parser really takes here; ``expected`` (LALR lookaheads
        # of a state with default reductions) can list tokens that would fail a step later
        want = _describe_expected(set(getattr(e, "accepts", None) or e.expected or ()))
        if want:
            msg += f"; expected {want}"
        related = _unclosed(source, filename, shown) if token.type == "$END" else []
        return SpecError(msg, span, related=related)
    if isinstance(e, lark.exceptions.UnexpectedEOF):
        want = _describe_expected(set(e.expected or ()))
        msg = "unexpected end of input" + (f"; expected {want}" if want else "")
        return SpecError(msg, _end_span(shown, filename, source),
                         related=_unclosed(source, filename, shown))
    return SpecError(f"syntax error: {e}", _end_span(shown, filename, source))  # pragma: no cover


# -- lark tree -> AST ----------------------------------------------------------------
@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Builds AST nodes bottom-up, without recursion (deep expressions are fine)."""

    def __init__(self, source: str, filename: str):
        super().__init__()
        self.source = source
        self.filename = filename

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", False):
            return Span(self.filename, 1, 1, 1, 1, self.source)
        return Span(self.filename, meta.line, meta.column, meta.end_line, meta.end_column,
                    self.source)

    def _tspan(self, token: lark.Token) -> Span:
        return Span(self.filename, token.line, token.column, token.end_line, token.end_column,
                    self.source)

    # expressions
    def number(self, meta, children):
        token = children[0]
        text = str(token)
        if text.isdigit():
            digits = text.lstrip("0") or "0"  # leading zeros are fine: 007 is 7
            if len(digits) > 19 or int(digits) > MAX_INT:
                raise SpecError(f"integer {text[:20]}{'...' if len(text) > 20 else ''} is "
                                "too large", self._tspan(token))
            value: int | float = int(text)
        else:
            value = float(text)
            if value == float("inf"):
                raise SpecError(f"number {text} is too large", self._tspan(token))
        return ast.Number(value, span=self._tspan(token))

    def string(self, meta, children):
        token = children[0]
        return ast.String(str(token)[1:-1], span=self._tspan(token))

    def name(self, meta, children):
        token = children[0]
        return ast.Name(str(token), span=self._tspan(token))

    def apply(self, meta, children):
        token, args = children
        return ast.Apply(str(token), self._tspan(token), args, span=self._span(meta))

    def empty_tuple(self, meta, children):
        return ast.TupleExpr((), span=self._span(meta))

    def tuple(self, meta, children):
        return ast.TupleExpr(tuple(c for c in children if c is not None), span=self._span(meta))

    def _binop(op):  # a method factory, used only in this class body
        def method(self, meta, children):
            left, right = children
            return ast.BinOp(op, left, right, span=self._span(meta))

        return method

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    div = _binop("/")
    pow = _binop("**")
    del _binop

    def neg(self, meta, children):
        return ast.UnaryOp("-", children[0], span=self._span(meta))

    def pos(self, meta, children):
        return ast.UnaryOp("+", children[0], span=self._span(meta))

    # arguments
    def arglist(self, meta, children):
        out = []
        for c in children:
            if c is None:
                continue
            if isinstance(c, ast.Arg):
                out.append(c)
            else:
                out.append(ast.Arg(None, c, span=c.span))
        return tuple(out)

    def kwarg(self, meta, children):
        token, value = children
        return ast.Arg(str(token), value, span=self._span(meta))

    # statements
    def call(self, meta, children):
        token, args = children
        return ast.Call(str(token), self._tspan(token), args or (), args is not None,
                        span=self._span(meta))

    def body(self, meta, children):
        return tuple(c for c in children if c is not None and not isinstance(c, lark.Token))

    def repeat_stmt(self, meta, children):
        count, body = children
        return ast.Repeat(count, body, span=self._head_span(meta, "repeat"))

    def residual_stmt(self, meta, children):
        body, shortcut = children
        return ast.ResidualStmt(body, shortcut, span=self._head_span(meta, "Residual"))

    def branch_kind(self, meta, children):
        return str(children[0])

    def branch_body(self, meta, children):
        stmts = tuple(c for c in children if c is not None and not isinstance(c, lark.Token))
        return stmts, self._span(meta)

    def branches_stmt(self, meta, children):
        kind, *bodies = children
        return ast.BranchesStmt(kind, tuple(b for b, _ in bodies), tuple(s for _, s in bodies),
                                span=self._head_span(meta, kind))

    def defaults_stmt(self, meta, children):
        return ast.Defaults(tuple(children), span=self._span(meta))

    def let_stmt(self, meta, children):
        token, value = children
        return ast.Let(str(token), self._tspan(token), value, span=self._span(meta))

    def _head_span(self, meta, keyword: str) -> Span:
        # a statement with a body is located at its keyword, not the whole body
        return Span(self.filename, meta.line, meta.column, meta.line,
                    meta.column + len(keyword), self.source)

    # top level
    def param(self, meta, children):
        token, default = children
        return ast.Param(str(token), default, span=self._span(meta))

    def params(self, meta, children):
        return tuple(c for c in children if c is not None)

    def import_stmt(self, meta, children):
        token = children[0]
        path = str(token)[1:-1]
        for i, ch in enumerate(path):
            if ord(ch) < 32 or ord(ch) == 127:
                col = token.column + 1 + i
                raise SpecError(
                    f"import path contains the control character {ch!r} (U+{ord(ch):04X})",
                    Span(self.filename, token.line, col, token.line, col + 1, self.source))
        return ast.Import(path, span=self._span(meta))

    def block_def(self, meta, children):
        token, params, body = children
        return ast.BlockDef(str(token), self._tspan(token), params or (), body,
                            span=self._span(meta))

    def net_def(self, meta, children):
        token, params, body = children
        return ast.NetDef(str(token), self._tspan(token), params or (), body,
                          span=self._span(meta))

    def activation_def(self, meta, children):
        token, params, formula = children
        return ast.ActivationDef(str(token), self._tspan(token), params, formula,
                                 span=self._span(meta))

    def start(self, meta, children):
        items = tuple(c for c in children if c is not None and not isinstance(c, lark.Token))
        return ast.Module(self.filename, items, span=self._span(meta))
