"""Printable terms: the values ``explain`` feeds to the family rules of ``rules.py``.

A term is a small expression tree that renders as text or LaTeX in the
style of ``ntkdsl explain``. Arithmetic on terms simplifies only what the
printed recursion should not show (``1 * K``, ``0 * K``, ``K + 0``), so the
printed line is the rule as the compiler evaluates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def num(v: float) -> str:
    """A number as ``explain`` prints it: 6 significant digits."""
    return f"{float(v):.6g}"


class Term:
    """Base of the printable terms; ``render(latex)`` gives the text."""

    def render(self, latex: bool) -> str:
        raise NotImplementedError

    def __add__(self, other: object) -> Term:
        o = as_term(other)
        if isinstance(o, Num) and o.value == 0:
            return self
        if isinstance(self, Num) and self.value == 0:
            return o
        return Add(self, o)

    __radd__ = __add__

    def __mul__(self, other: object) -> Term:
        o = as_term(other)
        for a, b in ((self, o), (o, self)):
            if isinstance(a, Num) and a.value == 1:
                return b
            if isinstance(a, Num) and a.value == 0:
                return Num(0.0)
        return Mul(self, o)

    def __rmul__(self, other: object) -> Term:
        return as_term(other) * self

    def __bool__(self) -> bool:
        return True


def as_term(v: object) -> Term:
    """A term for a term or a Python number."""
    if isinstance(v, Term):
        return v
    if isinstance(v, int | float):
        return Num(float(v))
    raise TypeError(f"cannot make a term of {v!r}")


@dataclass(frozen=True, eq=False)
class Num(Term):
    """A number."""

    value: float

    def render(self, latex: bool) -> str:
        return num(self.value)

    def __bool__(self) -> bool:
        return self.value != 0


@dataclass(frozen=True, eq=False)
class Sym(Term):
    """A named value (``K3``, ``fan_in``), with its text and LaTeX spellings."""

    text: str
    tex: str

    def render(self, latex: bool) -> str:
        return self.tex if latex else self.text


@dataclass(frozen=True, eq=False)
class Add(Term):
    """``a + b``."""

    a: Term
    b: Term

    def render(self, latex: bool) -> str:
        return f"{self.a.render(latex)} + {self.b.render(latex)}"


@dataclass(frozen=True, eq=False)
class Mul(Term):
    """``a * b`` (``a \\, b`` in LaTeX); a sum as a factor is parenthesised."""

    a: Term
    b: Term

    def render(self, latex: bool) -> str:
        def f(t: Term) -> str:
            s = t.render(latex)
            return f"({s})" if isinstance(t, Add) else s

        return f"{f(self.a)} \\, {f(self.b)}" if latex else f"{f(self.a)} * {f(self.b)}"


@dataclass(frozen=True, eq=False)
class Call(Term):
    """A named map applied to terms: ``A(K0)``, ``T_Relu(K1_11, K1, K1_22)``.

    ``text`` / ``tex`` are format strings with ``{args}`` (the rendered
    arguments, comma-separated) or ``{0}``, ``{1}``, ... for each argument, or
    functions of the list of rendered arguments.
    """

    text: str | Callable[[list[str]], str]
    tex: str | Callable[[list[str]], str]
    args: tuple[Term, ...]

    def render(self, latex: bool) -> str:
        parts = [a.render(latex) for a in self.args]
        form = self.tex if latex else self.text
        if callable(form):
            return form(parts)
        return form.format(*parts, args=", ".join(parts))


def call(text: str | Callable[[list[str]], str], tex: str | Callable[[list[str]], str]):
    """A map of terms that renders as the format strings ``text`` / ``tex`` (see :class:`Call`)."""

    def apply(*args: Term) -> Term:
        return Call(text, tex, tuple(as_term(a) for a in args))

    return apply
