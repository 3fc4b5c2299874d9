"""Every built-in layer class declares every fact the passes read.

``Layer`` itself declares none of them (a silent default would be wrong for
some new layer), so a class that forgets one is caught here, by name.
"""

from __future__ import annotations

import pytest

from ntkdsl.compiler.layers import BUILTINS, DECLARATIONS, Layer

VALUES = {
    "input_entries": {"as_output", "full", "diagonal"},
    "gaussian": {"makes", "keeps", "breaks"},
    "spatial": {"any", "needs", "removes", "flattens"},
}


def _declared(cls: type, name: str) -> bool:
    return any(name in vars(k) for k in cls.__mro__ if k is not Layer and k is not object)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_fact_is_declared(name):
    cls = BUILTINS[name]
    if cls.combine is not None:  # combinators are folded by how they combine their children
        assert cls.combine in ("sequence", "sum", "concat", "product")
        return
    missing = [d for d in DECLARATIONS if not _declared(cls, d)]
    assert not missing, f"{name} does not declare {missing}"
    for d, allowed in VALUES.items():
        assert getattr(cls, d) in allowed, f"{name}.{d} = {getattr(cls, d)!r}"
    assert isinstance(cls.reads_variances, bool)
    assert isinstance(cls.needs_gaussian_input, bool)
    assert isinstance(cls.kernel_map, bool)
    assert isinstance(cls.vmap_is_slow, bool)
    assert all(isinstance(a, str) for a in cls.float_args)


def test_layer_base_declares_nothing():
    for d in DECLARATIONS:
        assert d not in vars(Layer), f"Layer must not give a default for {d}"


def test_a_new_leaf_without_declarations_fails_loudly():
    from dataclasses import dataclass

    from ntkdsl.compiler.analysis import needs_full_in

    @dataclass(frozen=True, kw_only=True)
    class Forgetful(Layer):  # no spec_name: not registered in the language
        def out_shape(self, shape):
            return shape

    with pytest.raises(AttributeError, match="input_entries"):
        needs_full_in(Forgetful(), False)
