"""The public API: every exported name resolves, and every public function has a docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import ntkdsl


@pytest.mark.parametrize("name", sorted(ntkdsl.__all__))
def test_exported_name_resolves_and_is_documented(name):
    value = getattr(ntkdsl, name)
    if callable(value) or inspect.ismodule(value):
        assert (value.__doc__ or "").strip(), f"ntkdsl.{name} has no docstring"


def _modules():
    for info in pkgutil.walk_packages(ntkdsl.__path__, "ntkdsl."):
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for module in _modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                if not (obj.__doc__ or "").strip():
                    missing.append(f"{module.__name__}.{name}")
    assert not missing, "public names without a docstring: " + ", ".join(missing)


def test_import_is_cheap():
    """``import ntkdsl`` and the front end must not pull in jax (fast ``ntkdsl check``)."""
    import subprocess
    import sys

    code = ("import sys, ntkdsl; ntkdsl.parse('net a { Dense(2) Relu Dense(1) }'); "
            "print('jax' in sys.modules, 'sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
