"""Located diagnostics: source spans, the spec error and its rendering.

Every error a spec can cause is a :class:`SpecError`; every error a runtime
input (an array) can cause is an :class:`InputError`. Both are ``ValueError``s
so that callers who do not care can catch one type.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line and column, end exclusive.

    ``source`` is the full text of the file, kept so that an error can show
    the offending line without re-reading the file.
    """

    filename: str
    line: int
    column: int
    end_line: int
    end_column: int
    source: str = field(default="", compare=False)
    #: where this span was reached from, as an iterable of notes (e.g. "in block 'b' called
    #: at f.ntk:3:5"); any iterable of strings, so a caller can build the notes lazily
    context: Any = field(default=(), compare=False)

    def __repr__(self) -> str:  # the source text would drown every repr
        return f"Span({self.filename}:{self.line}:{self.column})"

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.column}"

    def source_line(self) -> str:
        """The text of the span's first line (empty if unknown)."""
        # only "\n" ends a line, as in the lexer (splitlines would also split at \f, \x1c, ...)
        lines = self.source.split("\n")
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1].rstrip("\r")
        return ""


class SpecError(ValueError):
    """An error in a spec, located at ``filename:line:column``.

    ``str(err)`` is the full rendering: the ``FILE:LINE:COL: error: MESSAGE``
    header, the offending source line, a caret line, then any notes.
    """

    def __init__(self, message: str, span: Span | None = None, notes: Iterable[str] = (),
                 *, filename: str | None = None,
                 related: Iterable[tuple[str, Span]] = ()):
        self.message = message
        self.span = span
        self.notes = tuple(notes) + (tuple(str(n) for n in span.context) if span else ())
        #: further located remarks, each ``(message, span)``, rendered as located notes
        self.related = tuple(related)
        self.filename = span.filename if span else (filename or "<spec>")
        self.line = span.line if span else 0
        self.column = span.column if span else 0
        super().__init__(self.render())

    def render(self) -> str:
        """The error as the command line prints it."""
        if self.span is None:
            out = [f"{self.filename}: error: {self.message}"]
        else:
            out = [f"{self.filename}:{self.line}:{self.column}: error: {self.message}"]
            out.extend(_quote(self.span))
        for message, span in self.related:
            out.append(f"{span}: note: {message}")
            out.extend(_quote(span))
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)


def _quote(span: Span) -> list[str]:
    """The span's source line and a caret line under it (nothing if the line is unknown)."""
    text = span.source_line()
    if not text:
        return []
    # one printable character per source character keeps the caret aligned
    text = "".join(c if c.isprintable() else " " for c in text.expandtabs(1))
    start = max(span.column - 1, 0)
    if span.end_line == span.line:
        width = max(span.end_column - span.column, 1)
    else:
        width = max(len(text) - start, 1)
    width = min(width, max(len(text) - start, 1))
    return ["    " + text, "    " + " " * start + "^" * width]


class InputError(ValueError):
    """A runtime input (an array, a shape, an option) that does not fit the net.

    The message is one line naming what was expected and what came.
    """


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, or None if none is close.

    A candidate equal to ``name`` but for letter case wins (``w_std`` ->
    ``W_std``, ``ReLU`` -> ``Relu``); otherwise names are compared without
    regard to case, so a wrongly cased name is not pushed aside by one that
    shares its case but not its letters.
    """
    names = list(dict.fromkeys(c for c in candidates if c != name))
    folded = name.casefold()
    for c in names:
        if c.casefold() == folded:
            return c
    by_fold: dict[str, str] = {}
    for c in names:
        by_fold.setdefault(c.casefold(), c)
    close = difflib.get_close_matches(folded, list(by_fold), n=1, cutoff=0.6)
    return by_fold[close[0]] if close else None


def did_you_mean(name: str, candidates: Iterable[str]) -> list[str]:
    """Notes suggesting the closest candidate name, if any is close (see :func:`closest`).

    Arguments:
        name: what the user wrote.
        candidates: the names that would have been valid there.

    Returns:
        ``["did you mean 'X'?"]`` or ``[]``.
    """
    close = closest(name, candidates)
    return [f"did you mean '{close}'?"] if close is not None else []
