"""One lazy-module mechanism, so the front end (``ntkdsl check``) never imports jax or sympy.

Modules that need jax or sympy write ``jnp = lazy("jax.numpy")`` at the top
instead of a function-local import: the real module is imported on first
attribute access, and until then nothing is imported (``sys.modules`` stays
free of it, which ``tests/test_api.py`` checks).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """A stand-in for a module, imported on first attribute access."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded"
        return f"<lazy module {self._name!r} ({state})>"


def lazy(name: str) -> Any:
    """A lazily imported module ``name`` (typed ``Any``: use it like the module)."""
    return LazyModule(name)
