"""Float64 inside ntkdsl's own calls, without touching the user's ``jax.config``.

:func:`float64` wraps a public function (or method) so that its body runs
under ``jax.enable_x64(True)``, a thread-local context that ends when the call
returns: whatever the user's ``jax_enable_x64`` setting is, ntkdsl computes
kernels, solves and predictions in float64 unless asked for float32, and the
setting is the same after the call as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from ._lazy import lazy

jax = lazy("jax")

F = TypeVar("F", bound=Callable)


def float64(fn: F) -> F:
    """``fn`` with its body run under a local ``jax.enable_x64(True)`` context."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
