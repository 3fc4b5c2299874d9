"""The v2 constant ``pi``: a value in any expression, shadowed by a name of the user's."""

from __future__ import annotations

import math

from ntkdsl.compiler.frontend import parse


def _first_dense(src: str):
    return parse(src).body.children()[0]


def test_pi_is_the_constant():
    d = _first_dense("net n { Dense(4, W_std = sqrt(pi / 2)); Relu; Dense(1) }")
    assert d.W_std == math.sqrt(math.pi / 2)


def test_a_let_named_pi_shadows_it():
    d = _first_dense("let pi = 2\nnet n { Dense(4, W_std = pi); Relu; Dense(1) }")
    assert d.W_std == 2


def test_a_net_parameter_named_pi_shadows_it():
    d = _first_dense("net n(pi = 1.5) { Dense(4, W_std = pi); Relu; Dense(1) }")
    assert d.W_std == 1.5
