"""The front end of ``activation NAME(x, P = DEFAULT, ...) = FORMULA``.

At definition (:func:`define`) the formula's AST becomes the frozen tree of
:mod:`.layers.formula`: names are resolved (the variable, the activation's
parameters, ``pi``, file-level ``let`` constants, which must be numbers) and
every function and its arity checked, each error located at its token. A
formula that does not use the variable is a :class:`FormulaWarning`.

At each use (:func:`instantiate`) the arguments are bound and the layer built;
then the formula is evaluated with Python floats (never ``eval``) at the points
of :data:`CHECK_POINTS`, so that a formula that is not a real number for some
``x`` (``sqrt(x)``, ``log(x)``, ``1 / x``) is an error at the operation that
fails, and one that grows like ``exp(c x^2)`` or faster (``exp(x**2)``), whose
Gaussian expectations are infinite, is an error at the ``exp`` with a note.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Span, SpecError, did_you_mean
from ..grammar import ast
from .arguments import bind_args
from .evaluate import ArgValue, LayerRef, format_value, type_name
from .layers.formula import FUNCTIONS, FormulaActivation, Tree, has_x

#: the pre-activations at which a formula is evaluated to find where it is not real
CHECK_POINTS = tuple(i / 10 for i in range(-80, 81))
#: the points at which the growth of an ``exp`` argument is measured, and the growth
#: ``c x^2`` (``c = GROWTH_C``) that counts as too fast: E[exp(2 c u^2)] is infinite for
#: variances >= 1 / (4 c), so c = 1/20 fails from variance 5 on
GROWTH_POINTS = (60.0, 120.0)
GROWTH_C = 1 / 20
#: the deepest formula accepted (the parser bounds brackets; this bounds operator chains)
MAX_DEPTH = 200


class FormulaWarning(UserWarning):
    """A formula that is legal but probably not what was meant (e.g. it ignores ``x``).

    The message starts with the location (``FILE:LINE:COL: warning:``); ``span``
    holds it too.
    """

    def __init__(self, message: str, span: Span | None = None):
        super().__init__(message)
        self.span = span


@dataclass(eq=False)
class Activation:
    """An ``activation`` definition, resolved: what a use instantiates.

    ``params`` are the parameter names in order, ``defaults`` their evaluated
    defaults (absent: none), ``spans`` the source span of each tree node in
    preorder (the walk of :func:`_preorder`).
    """

    defn: ast.ActivationDef
    var: str
    params: tuple[str, ...]
    defaults: dict[str, float]
    tree: Tree
    spans: list[Span] = field(repr=False)

    @property
    def name(self) -> str:
        """The activation's name."""
        return self.defn.name

    def signature(self) -> str:
        """``NAME(x, P=DEFAULT, ...)`` as ``check`` lists it."""
        parts = [self.var] + [f"{p}={self.defaults[p]!r}" if p in self.defaults else p
                              for p in self.params]
        return f"{self.name}({', '.join(parts)})"


def define(item: ast.ActivationDef, lookup_let: Callable[[str], Any],
           candidates: Callable[[], list[str]], charge=None) -> Activation:
    """Resolve an ``activation`` definition.

    Arguments:
        item: its AST.
        lookup_let: ``name -> value`` of the file's constants (KeyError when unbound).
        candidates: the names visible in the file, for "did you mean".
        charge: ``(n, span) -> None``, the load's step budget (one step a node).

    Returns:
        The resolved activation.

    Raises:
        SpecError: located at the offending parameter, name or function.
    """
    if not item.params:
        raise SpecError(f"activation '{item.name}' needs its variable as first parameter, "
                        f"e.g. activation {item.name}(x) = ...", item.name_span)
    first, *rest = item.params
    if first.default is not None:
        raise SpecError(f"the first parameter of activation '{item.name}' is its variable "
                        f"and takes no default (write {item.name}({first.name}, ...))",
                        first.default.span)
    seen = {first.name}
    defaults: dict[str, float] = {}
    _check_param_name(first, item.name)
    for p in rest:
        if p.name in seen:
            raise SpecError(f"parameter '{p.name}' appears twice in activation '{item.name}'",
                            p.span)
        _check_param_name(p, item.name)
        seen.add(p.name)
        if p.default is not None:
            defaults[p.name] = _default_value(p, item, lookup_let, candidates)
    params = tuple(p.name for p in rest)
    spans: list[Span] = []
    builder = _Builder(first.name, set(params), lookup_let, candidates, spans, charge)
    tree = builder.build(item.formula, 0)
    act = Activation(item, first.name, params, defaults, tree, spans)
    if not has_x(tree):
        span = item.formula.span
        warnings.warn(FormulaWarning(
            f"{span}: warning: the formula of activation '{item.name}' does not use its "
            f"variable '{first.name}': the layer is a constant", span), stacklevel=2)
    if all(p in defaults for p in params):
        check_values(act, defaults, item.name_span)
    return act


def _check_param_name(p: ast.Param, owner: str) -> None:
    from .layers import BUILTINS

    if p.name in FUNCTIONS or p.name == "pi":
        what = "the constant pi" if p.name == "pi" else "a function of formulas"
        raise SpecError(f"'{p.name}' is {what}; a parameter of activation '{owner}' cannot "
                        "use that name", p.span)
    if p.name in BUILTINS:
        raise SpecError(f"'{p.name}' is a built-in layer; a parameter cannot use that name",
                        p.span)


def _default_value(p: ast.Param, item: ast.ActivationDef, lookup_let, candidates) -> float:
    from .evaluate import Evaluator

    ev = Evaluator(lookup_let, lambda name, args, span: None, candidates)
    value = ev(p.default)
    if not _is_number(value):
        raise SpecError(f"the default of '{p.name}' in activation '{item.name}' must be a "
                        f"number, got {type_name(value, True)} ({format_value(value)})",
                        p.default.span)
    return float(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class _Builder:
    """AST -> tree, resolving names; records each node's span in preorder."""

    var: str
    params: set[str]
    lookup_let: Callable[[str], Any]
    candidates: Callable[[], list[str]]
    spans: list[Span]
    charge: Callable | None

    def build(self, e: ast.Expr, depth: int) -> Tree:
        if depth > MAX_DEPTH:
            raise SpecError(f"formula is nested too deeply (more than {MAX_DEPTH} levels)",
                            e.span)
        if self.charge is not None:
            self.charge(1, e.span)
        if isinstance(e, ast.UnaryOp) and e.op == "+":
            return self.build(e.operand, depth + 1)
        self.spans.append(e.span)
        d = depth + 1
        if isinstance(e, ast.Number):
            return ("num", e.value)
        if isinstance(e, ast.String):
            raise SpecError(f"a formula is a number, not a string: \"{e.value}\"", e.span)
        if isinstance(e, ast.TupleExpr):
            raise SpecError("a formula is a number, not a tuple", e.span)
        if isinstance(e, ast.Name):
            return self.name(e)
        if isinstance(e, ast.UnaryOp):
            return ("neg", self.build(e.operand, d))
        if isinstance(e, ast.BinOp):
            return (e.op, self.build(e.left, d), self.build(e.right, d))
        if isinstance(e, ast.Apply):
            return self.apply(e, d)
        raise SpecError(f"cannot use {type(e).__name__} in a formula", e.span)  # pragma: no cover

    def name(self, e: ast.Name) -> Tree:
        n = e.name
        if n == self.var:
            return ("x",)
        if n in self.params:
            return ("param", n)
        try:
            value = self.lookup_let(n)
        except KeyError:
            value = None
        else:
            if not _is_number(value):
                raise SpecError(f"'{n}' is {type_name(value, True)} ({format_value(value)}); "
                                "a formula needs a number", e.span)
            return ("num", value)
        if n == "pi":
            return ("pi",)
        if n in FUNCTIONS:
            raise SpecError(f"'{n}' is a function; call it as {n}(...)", e.span)
        names = [self.var, *sorted(self.params), "pi", *self.candidates()]
        raise SpecError(f"unknown name '{n}' in a formula (it may use '{self.var}', the "
                        "activation's parameters, pi and constants)", e.span,
                        did_you_mean(n, names))

    def apply(self, e: ast.Apply, depth: int) -> Tree:
        arity = FUNCTIONS.get(e.name)
        if e.name not in FUNCTIONS:
            from .layers import BUILTINS

            if e.name in BUILTINS:
                msg = (f"'{e.name}' is a layer, not a function of formulas (they are: "
                       f"{', '.join(FUNCTIONS)})")
            else:
                msg = f"unknown function '{e.name}' in a formula"
            raise SpecError(msg, e.name_span, did_you_mean(e.name, list(FUNCTIONS)))
        for a in e.args:
            if a.key is not None:
                raise SpecError(f"{e.name}() takes no keyword arguments", a.span)
        n = len(e.args)
        if arity is None and n < 2:
            raise SpecError(f"{e.name}() in a formula takes two or more arguments, got {n}",
                            e.span)
        if arity is not None and n != arity:
            raise SpecError(f"{e.name}() takes exactly {arity} argument, got {n}", e.span)
        return ("fn", e.name, *(self.build(a.value, depth) for a in e.args))


def instantiate(act: Activation, args: tuple[ArgValue, ...], call_span: Span,
                name_span: Span, env) -> FormulaActivation:
    """The layer for one use of an activation.

    Arguments:
        act: the definition.
        args: the evaluated arguments of the use.
        call_span: the whole use (for errors about the argument list).
        name_span: the name at the use (for a missing argument).
        env: the expander's environment (``bind_args``, located errors, ``at``).

    Returns:
        The layer.

    Raises:
        SpecError: an unknown or repeated argument, one that is not a number, a
            parameter without a default that is not given, or values for which the
            formula is not real or grows too fast.
    """
    bound = bind_args(f"activation '{act.name}'", list(act.params), args, call_span, env)
    values: dict[str, float] = {}
    for p in act.params:
        if p in bound:
            v, span = bound[p]
            if not _is_number(v):
                raise env.error(f"'{p}' of activation '{act.name}' must be a number, got "
                                f"{type_name(v, True)} ({format_value(v)})", span or call_span)
            values[p] = float(v)
        elif p in act.defaults:
            values[p] = act.defaults[p]
        else:
            raise env.error(f"activation '{act.name}' is missing its argument '{p}' (it has "
                            "no default)", name_span)
    if values != act.defaults:  # the defaults were checked at the definition
        check_values(act, values, call_span, env.at)
    return FormulaActivation(name=act.name, formula=act.tree,
                             params=tuple((p, values[p]) for p in act.params), var=act.var,
                             span=env.at(call_span))


def ref(act: Activation, args: tuple[ArgValue, ...], span: Span) -> LayerRef:
    """The activation as a layer value (``act = swish(beta = 2)``)."""
    return LayerRef(act.name, args, act, span)


# ---- numeric checks with Python floats ---------------------------------------------------
class _Bad(Exception):
    def __init__(self, index: int, message: str):
        self.index = index
        self.message = message


def check_values(act: Activation, values: dict[str, float], use: Span,
                 at: Callable[[Span], Span] = lambda s: s) -> None:
    """Reject values for which the formula is not real at some x, or grows too fast.

    Arguments:
        act: the definition.
        values: the parameter values.
        use: where the values come from (the definition or a use), noted in the error.
        at: attaches the expander's call chain to a span.

    Raises:
        SpecError: at the node that fails, noting the values.
    """
    where = [f"with {', '.join(f'{k} = {v!r}' for k, v in values.items())} "
             f"(at {use})"] if values else []
    for x in CHECK_POINTS:
        try:
            _eval(act.tree, x, values, [0])
        except _Bad as e:
            raise SpecError(f"the formula is not a real number at {act.var} = {x:g}: "
                            f"{e.message}", at(act.spans[e.index]),
                            [*where, "a formula must be real and finite for every input"]
                            ) from None
    for index, arg in _exp_arguments(act.tree):
        grows = []
        for x in (-GROWTH_POINTS[1], GROWTH_POINTS[1]):
            hi, lo = _grow(arg, x, values), _grow(arg, x / 2, values)
            grows.append(hi >= GROWTH_C * x * x and hi >= 3 * lo)
        if any(grows):
            raise SpecError(
                f"activation '{act.name}' grows too fast for a Gaussian expectation: this "
                "exponential grows like exp(c x^2) or faster", at(act.spans[index]),
                [*where, "the kernel E[phi(u) phi(v)] over Gaussian (u, v) is then infinite "
                 "(or finite only for small variances), so it cannot be computed; a formula "
                 "that grows at most like exp(c |x|) works (e.g. exp(x), exp(-x**2))"])


def _grow(arg: Tree, x: float, values) -> float:
    try:
        return float(_eval(arg, x, values, [0]))
    except _Bad:
        return math.inf


def _exp_arguments(t: Tree, counter: list[int] | None = None):
    """``(preorder index of the node, its exponent as a tree)`` for each exponential."""
    counter = [0] if counter is None else counter
    index = counter[0]
    counter[0] += 1
    kind = t[0]
    if kind in ("x", "num", "pi", "param"):
        return
    if kind == "fn" and t[1] == "exp":
        yield index, t[2]
    if kind == "**" and not has_x(t[1]) and has_x(t[2]):
        yield index, ("*", t[2], ("fn", "log", ("fn", "abs", t[1])))
    for child in t[(2 if kind == "fn" else 1):]:
        yield from _exp_arguments(child, counter)


def _eval(t: Tree, x: float, values: dict[str, float], counter: list[int]) -> float:
    index = counter[0]
    counter[0] += 1
    kind = t[0]
    if kind == "x":
        return x
    if kind == "num":
        return float(t[1])
    if kind == "pi":
        return math.pi
    if kind == "param":
        return values[t[1]]
    try:
        if kind == "neg":
            return -_eval(t[1], x, values, counter)
        if kind == "fn":
            args = [_eval(a, x, values, counter) for a in t[2:]]
            return _fn(t[1], args, index)
        a = _eval(t[1], x, values, counter)
        b = _eval(t[2], x, values, counter)
        if kind == "+":
            r = a + b
        elif kind == "-":
            r = a - b
        elif kind == "*":
            r = a * b
        elif kind == "/":
            if b == 0:
                raise _Bad(index, "division by zero")
            r = a / b
        else:
            if a == 0 and b < 0:
                raise _Bad(index, "0 to a negative power")
            if a < 0 and not float(b).is_integer():
                raise _Bad(index, f"a negative number ({a:g}) to a fractional power")
            r = a**b
    except OverflowError:
        raise _Bad(index, "overflow") from None
    if isinstance(r, complex) or not math.isfinite(r):
        raise _Bad(index, "overflow" if not isinstance(r, complex) else "not real")
    return r


def _fn(name: str, args: list[float], index: int) -> float:
    u = args[0]
    if name == "sqrt":
        if u < 0:
            raise _Bad(index, f"sqrt of a negative number ({u:g})")
        return math.sqrt(u)
    if name == "log":
        if u <= 0:
            raise _Bad(index, f"log of a non-positive number ({u:g})")
        return math.log(u)
    if name == "exp":
        if u > 709:
            raise _Bad(index, "overflow")
        return math.exp(u)
    if name == "softplus":
        return u + math.log1p(math.exp(-u)) if u > 0 else math.log1p(math.exp(u))
    if name == "sigmoid":
        return 0.5 * (1 + math.tanh(u / 2))
    if name == "min":
        return min(args)
    if name == "max":
        return max(args)
    if name == "abs":
        return abs(u)
    if name == "sign":
        return float((u > 0) - (u < 0))
    return {"sin": math.sin, "cos": math.cos, "tanh": math.tanh, "erf": math.erf}[name](u)
