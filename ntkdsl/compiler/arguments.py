"""Binding a call's arguments to a layer's, block's or activation's parameters.

Shared by the expander and the activation formulas, so neither imports the other.
"""

from __future__ import annotations

from typing import Any

from ..diagnostics import Span, did_you_mean


def bind_args(
    what: str, names: list[str], args: tuple[Any, ...], call_span: Span, env: Any
) -> dict[str, tuple[Any, Span | None]]:
    """Match arguments to parameter names: positional first, then keywords.

    ``args`` are the expander's evaluated arguments (``.key``, ``.value``, ``.span``);
    ``env`` raises located errors (``env.error(message, span, notes)``).

    Returns:
        name -> (value, span of the argument).
    """
    bound: dict[str, tuple[Any, Span | None]] = {}
    seen_keyword = False
    positional = [a for a in args if a.key is None]
    for i, a in enumerate(args):
        span = a.span or call_span
        if a.key is None:
            if seen_keyword:
                raise env.error("positional argument follows a keyword argument", span)
            if i >= len(names):
                raise env.error(
                    f"{what} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}"
                    f" ({', '.join(names) or 'none'}) but {len(positional)} were given", span)
            bound[names[i]] = (a.value, a.span)
        else:
            seen_keyword = True
            if a.key not in names:
                raise env.error(f"{what} has no argument '{a.key}'", span,
                                did_you_mean(a.key, names))
            if a.key in bound:
                raise env.error(f"argument '{a.key}' of {what} is given twice", span)
            bound[a.key] = (a.value, a.span)
    return bound
