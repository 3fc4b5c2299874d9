"""Located diagnostics: source spans, the spec error and its rendering.

Every error a spec can cause is a :class:`SpecError`; every error a runtime
input (an array) can cause is an :class:`InputError`. Both are ``ValueError``s
so that callers who do not care can catch one type.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


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
    #: where this span was reached from (e.g. "in block 'b' called at f.ntk:3:5"); shown as notes
    context: tuple[str, ...] = field(default=(), compare=False)

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
                 *, filename: str | None = None):
        self.message = message
        self.span = span
        self.notes = tuple(notes) + (span.context if span else ())
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
            text = self.span.source_line()
            if text:
                # one printable character per source character keeps the caret aligned
                text = "".join(c if c.isprintable() else " " for c in text.expandtabs(1))
                start = max(self.column - 1, 0)
                if self.span.end_line == self.span.line:
                    width = max(self.span.end_column - self.span.column, 1)
                else:
                    width = max(len(text) - start, 1)
                width = min(width, max(len(text) - start, 1))
                out.append("    " + text)
                out.append("    " + " " * start + "^" * width)
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)


class InputError(ValueError):
    """A runtime input (an array, a shape, an option) that does not fit the net.

    The message is one line naming what was expected and what came.
    """


def did_you_mean(name: str, candidates: Iterable[str]) -> list[str]:
    """Notes suggesting the closest candidate names, if any is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return [f"did you mean '{close[0]}'?"] if close else []
