"""Arbitrary text and bytes never raise anything but SpecError, and finish quickly."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntkdsl import SpecError
from ntkdsl.compiler.frontend import parse_all

# pieces of real specs, so that random sequences get past the lexer into the expander
TOKENS = [
    "net", "a", "b", "block", "let", "import", "repeat", "Residual", "shortcut", "defaults",
    "{", "}", "(", ")", ",", ";", "=", "+", "-", "*", "/", "**", "\n", "#c\n", " ",
    "Dense", "Conv", "Relu", "Erf", "AvgPool", "GlobalAvgPool", "Flatten", "LeakyRelu",
    "W_std", "b_std", "padding", "SAME", "VALID", "sqrt", "max", "0", "1", "3", "2.5", ".5",
    "1e9", "1e400", "99999999999999999999", "'x'", '"SAME"', "(3,)", "x", "\x00", "é",
]

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _only_spec_errors(source) -> None:
    start = time.perf_counter()
    try:
        parse_all(source, filename="fuzz.ntk")
    except SpecError as e:
        str(e)  # rendering must not fail either
        assert e.line >= 0 and e.column >= 0
    assert time.perf_counter() - start < 2.0


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text(source):
    _only_spec_errors(source)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    _only_spec_errors(data)


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup(tokens):
    _only_spec_errors(" ".join(tokens))


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_inside_a_net(tokens):
    _only_spec_errors("net a(w = 3) { Dense(w) " + " ".join(tokens) + " }")
