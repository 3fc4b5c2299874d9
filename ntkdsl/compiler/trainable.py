"""Trainable net parameters at compile time: values that remember how they were computed.

``ntkdsl.compile(text, trainable=("W", "b"))`` marks net parameters as
trainable. The expander then gives each of them as a :class:`Sym`: a
``float`` equal to the parameter's default (so every check, validation and
rendering of the expander and the layers works on it unchanged) that also
carries the expression it was computed by from the trainable parameters
(``W * 2``, ``sqrt(W)``). Arithmetic on a ``Sym`` (Python operators, the
spec's functions) gives a ``Sym`` again. A layer field that ends up holding a
``Sym`` is resolved again from the parameter values when the differentiable
kernel function is traced (``compiler/differentiable.py``).

Only some layer arguments may hold one: the stds of affine layers and the
real constants of nonlinearities with a closed form. Everywhere else (a
width, a kernel size, a repeat count, a padding, an ``Input`` shape, a
user-defined activation) a trainable value is a located error at its use,
raised by :func:`check_layer_args` and :func:`check_structural`.

This module imports neither jax nor sympy (the front end stays cheap).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..diagnostics import Span

#: an expression tree: ("param", name) | ("num", value) | (op, node, node) | ("neg", node)
#: | ("fn", name, node, ...)
Node = tuple


class Sym(float):
    """A real value that depends on trainable net parameters.

    It is the float of its value at the parameters' defaults; ``expr`` is the
    expression tree that computes it from the parameters (see :func:`evaluate`).
    """

    __slots__ = ("expr",)

    def __new__(cls, value: float, expr: Node) -> Sym:
        obj = super().__new__(cls, value)
        obj.expr = expr
        return obj

    def __reduce__(self):
        return (Sym, (float(self), self.expr))

    def __copy__(self) -> Sym:
        return self

    def __deepcopy__(self, memo) -> Sym:
        return self

    # arithmetic keeps the expression; the value is the float result
    def _bin(self, op: str, other: Any, reflected: bool) -> Any:
        if isinstance(other, bool) or not isinstance(other, int | float):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        value = _OPS[op](float(a), float(b))
        return Sym(value, (op, node(a), node(b)))

    def __add__(self, o):
        return self._bin("add", o, False)

    def __radd__(self, o):
        return self._bin("add", o, True)

    def __sub__(self, o):
        return self._bin("sub", o, False)

    def __rsub__(self, o):
        return self._bin("sub", o, True)

    def __mul__(self, o):
        return self._bin("mul", o, False)

    def __rmul__(self, o):
        return self._bin("mul", o, True)

    def __truediv__(self, o):
        return self._bin("div", o, False)

    def __rtruediv__(self, o):
        return self._bin("div", o, True)

    def __pow__(self, o, mod=None):
        if mod is not None:
            return NotImplemented
        return self._bin("pow", o, False)

    def __rpow__(self, o, mod=None):
        if mod is not None:
            return NotImplemented
        return self._bin("pow", o, True)

    def __neg__(self):
        return Sym(-float(self), ("neg", self.expr))

    def __pos__(self):
        return self

    def __abs__(self):
        return Sym(abs(float(self)), ("fn", "abs", self.expr))


_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
}


def node(v: Any) -> Node:
    """The expression node of a value: a Sym's tree, or a number."""
    return v.expr if isinstance(v, Sym) else ("num", float(v))


def param(name: str, value: float) -> Sym:
    """The trainable parameter ``name`` with its default ``value``."""
    return Sym(float(value), ("param", name))


def lift(function: str, args: list[Any], value: Any) -> Any:
    """The result of a spec function (``sqrt``, ``exp``, ``log``, ``min``, ``max``):
    a Sym when an argument is one."""
    if len(args) == 1 and isinstance(args[0], tuple):
        args = list(args[0])
    if not any(isinstance(a, Sym) for a in args):
        return value
    return Sym(float(value), ("fn", function, *(node(a) for a in args)))


def names_in(value: Any) -> list[str]:
    """The trainable parameters a value (a number, a tuple of them, ...) depends on."""
    out: list[str] = []

    def visit_node(n: Node) -> None:
        if n[0] == "param":
            if n[1] not in out:
                out.append(n[1])
        elif n[0] == "fn":
            for a in n[2:]:
                visit_node(a)
        elif n[0] != "num":
            for a in n[1:]:
                visit_node(a)

    def visit(v: Any) -> None:
        if isinstance(v, Sym):
            visit_node(v.expr)
        elif isinstance(v, tuple):
            for e in v:
                visit(e)
        elif hasattr(v, "args") and hasattr(v, "target"):  # a LayerRef with bound arguments
            for a in v.args:
                visit(a.value)

    visit(value)
    return out


def evaluate(n: Node, values: Mapping[str, Any], math_module: Any = math) -> Any:
    """The value of an expression tree at the parameter ``values``.

    Arguments:
        n: the tree (``Sym.expr``).
        values: parameter name -> value (floats, or jax arrays/tracers).
        math_module: where ``sqrt``, ``exp``, ``log``, ``minimum``, ``maximum`` come
            from (``jax.numpy`` when tracing).
    """
    tag = n[0]
    if tag == "param":
        return values[n[1]]
    if tag == "num":
        return n[1]
    if tag == "neg":
        return -evaluate(n[1], values, math_module)
    if tag == "fn":
        args = [evaluate(a, values, math_module) for a in n[2:]]
        name = n[1]
        if name in ("min", "max"):
            out = args[0]
            pick = getattr(math_module, "minimum" if name == "min" else "maximum", None)
            for a in args[1:]:
                out = pick(out, a) if pick is not None else (min if name == "min" else max)(
                    out, a)
            return out
        if name == "abs":
            return abs(args[0])
        return getattr(math_module, name)(args[0])
    a, b = (evaluate(x, values, math_module) for x in n[1:])
    return _OPS[tag](a, b)


def differentiable_fields(cls: type) -> tuple[str, ...]:
    """The arguments of a layer class that a trainable value may set.

    The stds of the affine layers and the scalar real constants of the
    nonlinearities with a closed form (their kernel maps are printed again with
    the constants as arguments). Everything else is structural or not supported.
    """
    from .layers.affine import Affine
    from .layers.formula import FormulaActivation
    from .layers.pointwise import Pointwise

    if issubclass(cls, Affine):
        return ("W_std", "b_std")
    if issubclass(cls, Pointwise) and cls.closed_form and not issubclass(
            cls, FormulaActivation):
        return tuple(cls.float_args)
    return ()


_STRUCTURAL = ("it fixes the net's structure (a width, a size, a count, a padding, a "
               "string or a switch), which must be known when the net is compiled")


def check_layer_args(cls: type, bound: Mapping[str, tuple[Any, Span | None]], error,
                     where: Span) -> None:
    """Refuse a trainable value in an argument that cannot be differentiated.

    Arguments:
        cls: the layer class.
        bound: argument name -> (value, span of the argument).
        error: ``(message, span) -> SpecError`` (the expander's, with its call chain).
        where: the layer's span (when an argument has none).

    Raises:
        SpecError: at the argument.
    """
    allowed = differentiable_fields(cls)
    floats = getattr(cls, "float_args", ())
    name = getattr(cls, "spec_name", None) or cls.__name__
    for key, (value, span) in bound.items():
        deps = names_in(value)
        if not deps:
            continue
        what = f"'{deps[0]}' is a trainable parameter"
        if key not in allowed or not isinstance(value, Sym):
            if key in floats and not isinstance(value, tuple):
                why = ("ntkdsl cannot differentiate the kernels with respect to it (trainable "
                       "values may set the W_std and b_std of affine layers and the real "
                       "constants of nonlinearities with a closed form)")
            else:
                why = _STRUCTURAL
            raise error(f"{what}, so it cannot set {name}'s '{key}': {why}", span or where)
        if key == "b_std" and float(value) == 0:
            raise error(
                f"{what} but sets {name}'s 'b_std' to 0 at its default: a layer with "
                "b_std = 0 has no bias at all (no bias parameter in the finite net), so the "
                "default of a trainable b_std must be > 0", span or where)


def check_structural(value: Any, what: str, error, span: Span) -> None:
    """Refuse a trainable value where a structural value is needed (``what`` names it).

    Raises:
        SpecError: at ``span``.
    """
    deps = names_in(value)
    if deps:
        raise error(f"'{deps[0]}' is a trainable parameter, so it cannot set {what}: "
                    f"{_STRUCTURAL}", span)


def check_activation_args(args: Iterable[Any], name: str, error, where: Span) -> None:
    """A user-defined activation's parameters cannot be trainable (its formula is
    compiled with numbers)."""
    for a in args:
        deps = names_in(a.value)
        if deps:
            raise error(
                f"'{deps[0]}' is a trainable parameter, so it cannot set a parameter of the "
                f"user-defined activation '{name}': its formula is compiled with fixed "
                "numbers (use a built-in nonlinearity, or fix the value)", a.span or where)
