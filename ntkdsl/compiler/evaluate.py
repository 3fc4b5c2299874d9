"""The expression evaluator: a small interpreter over the AST, never Python's eval.

Values are ``int``, ``float``, ``str``, ``tuple`` and :class:`LayerRef` (a
layer or block used as a value, e.g. ``act = Relu`` or ``Erf(1, 2)``).
Every operation is checked: overflow, division by zero, huge powers, the
log of a non-positive number and the like are located SpecErrors, never
``inf``, ``nan``, a complex number or a Python exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Span, SpecError, did_you_mean
from ..grammar import ast
from .trainable import lift

#: integers beyond this magnitude are rejected
MAX_INT = 2**63 - 1
#: the longest string or tuple an expression may build
MAX_LENGTH = 10_000
#: the deepest expression the evaluator walks (the parser limits brackets; this limits chains)
MAX_DEPTH = 200

PADDING_WORDS = ("SAME", "VALID", "CIRCULAR")
#: the boolean words (a name of the user's own of that spelling shadows them)
BOOLEAN_WORDS = {"true": True, "false": False}
FUNCTIONS = ("sqrt", "exp", "log", "min", "max")
#: words that layer arguments take as strings: written bare, they get a "did you mean" the
#: quoted string (the padding words need no quotes)
STRING_WORDS = ("ntk", "standard")
#: statements that look like layers but are not values
STATEMENT_NAMES = ("Input",)


@dataclass(frozen=True)
class ArgValue:
    """An evaluated call argument: ``key`` None when positional; ``span`` locates it."""

    key: str | None
    value: Any
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LayerRef:
    """A layer or block as a value, with any arguments already bound.

    Written ``Relu``, ``Erf(1, 2)`` or ``my_block(64)`` where an expression is
    expected; a statement that names a value holding a LayerRef expands it.
    ``target`` is the layer class or the block definition it refers to.
    """

    name: str
    args: tuple[ArgValue, ...] = ()
    target: Any = field(default=None, compare=False)
    span: Span | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        if not self.args:
            return self.name
        parts = [
            format_value(a.value) if a.key is None else f"{a.key}={format_value(a.value)}"
            for a in self.args
        ]
        return f"{self.name}({', '.join(parts)})"

    __str__ = __repr__


def format_value(value: Any) -> str:
    """A value as a spec would write it (strings quoted, tuples with a trailing comma)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def type_name(value: Any, article: bool = False) -> str:
    """The spec-level name of a value's type, for messages (``article``: "an integer")."""
    name = _type_name(value)
    if article:
        return ("an " if name[0] in "aeiou" else "a ") + name
    return name


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, tuple):
        return "tuple"
    if isinstance(value, LayerRef):
        return "layer"
    return type(value).__name__


class Evaluator:
    """Evaluates expressions against a name lookup.

    Arguments:
        lookup: ``name -> value``, raising ``KeyError`` when the name is unbound.
        layer_ref: ``(name, args, span) -> LayerRef | None``: makes a layer value
            when ``name`` is a built-in layer or a visible block, else None.
        candidates: ``() -> iterable of names`` visible here, for "did you mean".
        where: the span context added to every error (the block call chain): any
            iterable of note strings, rendered only when an error is raised.
        charge: ``(n, span, where) -> None``, called with each expression node and
            each tuple element built (it raises when the load's budget is spent).
    """

    def __init__(
        self,
        lookup: Callable[[str], Any],
        layer_ref: Callable[[str, tuple[ArgValue, ...], Span], LayerRef | None],
        candidates: Callable[[], list[str]],
        where: Iterable[str] = (),
        charge: Callable[[int, Span, Iterable[str]], None] | None = None,
    ):
        self.lookup = lookup
        self.layer_ref = layer_ref
        self.candidates = candidates
        self.where = where
        self.charge = charge

    def error(self, message: str, span: Span, notes: tuple[str, ...] = ()) -> SpecError:
        """A SpecError at ``span`` with the evaluator's context notes."""
        if self.where and not span.context:
            from dataclasses import replace

            span = replace(span, context=self.where)
        return SpecError(message, span, notes)

    def __call__(self, expr: ast.Expr) -> Any:
        return self.eval(expr, 0)

    def args(self, args: tuple[ast.Arg, ...]) -> tuple[ArgValue, ...]:
        """Evaluate call arguments, keeping each one's key and span."""
        return tuple(ArgValue(a.key, self.eval(a.value, 0), a.span) for a in args)

    def eval(self, expr: ast.Expr, depth: int) -> Any:
        """The value of ``expr``; ``depth`` bounds the recursion."""
        if depth > MAX_DEPTH:
            raise self.error(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", expr.span
            )
        if self.charge is not None:
            self.charge(1, expr.span, self.where)
        d = depth + 1
        if isinstance(expr, ast.Number | ast.String):
            return expr.value
        if isinstance(expr, ast.Name):
            return self.name(expr)
        if isinstance(expr, ast.TupleExpr):
            return tuple(self.eval(e, d) for e in expr.items)
        if isinstance(expr, ast.UnaryOp):
            v = self.eval(expr.operand, d)
            if not _is_number(v):
                raise self.error(f"unary '{expr.op}' needs a number, got {type_name(v)} "
                                 f"{format_value(v)}", expr.span)
            return -v if expr.op == "-" else v
        if isinstance(expr, ast.BinOp):
            return self.binop(expr, self.eval(expr.left, d), self.eval(expr.right, d))
        if isinstance(expr, ast.Apply):
            return self.apply(expr, d)
        raise self.error(f"cannot evaluate {type(expr).__name__}", expr.span)  # pragma: no cover

    def name(self, expr: ast.Name) -> Any:
        try:
            return self.lookup(expr.name)
        except KeyError:
            pass
        ref = self.layer_ref(expr.name, (), expr.span)
        if ref is not None:
            return ref
        if expr.name in PADDING_WORDS:
            return expr.name
        if expr.name in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[expr.name]
        if expr.name == "pi":
            # after the lookup, so a parameter or let of that name shadows it
            return math.pi
        if expr.name in FUNCTIONS:
            raise self.error(f"'{expr.name}' is a function; call it as {expr.name}(...)",
                             expr.span)
        if expr.name in STATEMENT_NAMES:
            raise self.error(f"'{expr.name}' is a statement (the first of a net body), not "
                             "a value", expr.span)
        if expr.name.upper() in PADDING_WORDS:
            notes: tuple[str, ...] = (f"did you mean '{expr.name.upper()}'?",)
        elif expr.name.lower() in STRING_WORDS:
            notes = (f"did you mean the string \"{expr.name.lower()}\"? (write it in quotes)",)
        else:
            notes = tuple(did_you_mean(expr.name, self.candidates()))
        raise self.error(f"unknown name '{expr.name}'", expr.span, notes)

    def apply(self, expr: ast.Apply, depth: int) -> Any:
        if expr.name in FUNCTIONS:
            for a in expr.args:
                if a.key is not None:
                    raise self.error(f"{expr.name}() takes no keyword arguments", a.span)
            vals = [self.eval(a.value, depth) for a in expr.args]
            # a trainable parameter's value keeps the expression it is computed by
            return lift(expr.name, vals, self.function(expr, vals))
        args = tuple(ArgValue(a.key, self.eval(a.value, depth), a.span) for a in expr.args)
        ref = self.layer_ref(expr.name, args, expr.span)
        if ref is not None:
            return ref
        raise self.error(f"unknown function or layer '{expr.name}'", expr.name_span,
                         tuple(did_you_mean(expr.name, [*FUNCTIONS, *self.candidates()])))

    def function(self, expr: ast.Apply, vals: list[Any]) -> Any:
        name, span = expr.name, expr.span
        if name in ("min", "max"):
            if len(vals) == 1 and isinstance(vals[0], tuple):
                vals = list(vals[0])
                if self.charge is not None:
                    self.charge(len(vals), span, self.where)
            if not vals:
                raise self.error(f"{name}() needs at least one number", span)
            for v in vals:
                if not _is_number(v):
                    raise self.error(f"{name}() needs numbers, got {type_name(v)} "
                                     f"{format_value(v)}", span)
            return min(vals) if name == "min" else max(vals)
        if len(vals) != 1:
            raise self.error(f"{name}() takes exactly one argument, got {len(vals)}", span)
        x = vals[0]
        if not _is_number(x):
            raise self.error(f"{name}() needs a number, got {type_name(x)} {format_value(x)}",
                             span)
        if name == "sqrt":
            if x < 0:
                raise self.error(f"sqrt of a negative number ({x!r})", span)
            return math.sqrt(x)
        if name == "log":
            if x <= 0:
                raise self.error(f"log of a non-positive number ({x!r})", span)
            return math.log(x)
        # exp
        if x > 709:
            raise self.error(f"exp({x!r}) is too large", span)
        return math.exp(x)

    def binop(self, expr: ast.BinOp, a: Any, b: Any) -> Any:
        op = expr.op
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return self.check_length(a + b, expr)
        if op == "+" and isinstance(a, tuple) and isinstance(b, tuple):
            return self.check_length(a + b, expr)
        if not (_is_number(a) and _is_number(b)):
            raise self.error(
                f"cannot apply '{op}' to {type_name(a)} {format_value(a)} and "
                f"{type_name(b)} {format_value(b)}", expr.span)
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                if b == 0:
                    raise self.error("division by zero", expr.span)
                r = a / b
            else:
                r = self.power(expr, a, b)
        except OverflowError:
            raise self.error("number too large (overflow)", expr.span) from None
        return self.check_number(r, expr)

    def power(self, expr: ast.BinOp, a: Any, b: Any) -> Any:
        if a == 0 and b < 0:
            raise self.error("division by zero (0 to a negative power)", expr.span)
        if a < 0 and not float(b).is_integer():
            raise self.error(f"negative number {a!r} to a fractional power {b!r}", expr.span)
        if abs(a) > 1 and b > 0 and b * math.log2(abs(a)) > 1100:
            raise self.error(f"{a!r} ** {b!r} is too large", expr.span)
        if isinstance(a, int) and isinstance(b, int) and b < 0:
            return float(a) ** b
        return a**b

    def check_number(self, r: Any, expr: ast.Node) -> Any:
        if isinstance(r, int) and abs(r) > MAX_INT:
            raise self.error("integer too large (beyond 2**63)", expr.span)
        if isinstance(r, float) and not math.isfinite(r):
            raise self.error("number too large (overflow)", expr.span)
        return r

    def check_length(self, r: Any, expr: ast.Node) -> Any:
        if len(r) > MAX_LENGTH:
            raise self.error(f"{type_name(r)} too long (more than {MAX_LENGTH})", expr.span)
        if self.charge is not None:
            self.charge(len(r), expr.span, self.where)
        return r


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
