"""Malformed uses of SelfAttention: located SpecErrors with exact messages, and InputErrors
for arrays that do not fit."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl import InputError, SpecError
from ntkdsl.compiler.frontend import parse

# (source, line, column, message)
CASES = [
    ('net a { Conv(4, 2); SelfAttention(4, mechanism = "tanh") }', 1, 38,
     "'mechanism' must be \"softmax\", \"identity\", \"abs\" or \"relu\", got 'tanh'"),
    ("net a { Conv(4, 2); SelfAttention(4, heads = 0) }", 1, 38,
     "'heads' must be a positive integer, got 0"),
    ("net a { Conv(4, 2); SelfAttention(0) }", 1, 35, "'out' must be a positive integer, got 0"),
    ("net a { Conv(4, 2); SelfAttention(4, key_size = 2.5) }", 1, 38,
     "'key_size' must be a positive integer, got 2.5"),
    ("net a { Conv(4, 2); SelfAttention(4, value_size = -1) }", 1, 38,
     "'value_size' must be a positive integer, got -1"),
    ('net a { Conv(4, 2); SelfAttention(4, positional = "rope") }', 1, 38,
     "'positional' must be \"none\", \"sum\" or \"concat\", got 'rope'"),
    ("net a { Conv(4, 2); SelfAttention(4, W_out_std = -1) }", 1, 38,
     "'W_out_std' must be a number >= 0, got -1"),
    ("net a { Conv(4, 2); SelfAttention(4, linear_scaling = 1) }", 1, 38,
     "'linear_scaling' must be true or false, got 1"),
    ('net a {\n  Conv(4, 2)\n  SelfAttention(4, mechanism = "relu", linear_scaling = false)\n}',
     3, 40,
     'linear_scaling=false has no closed-form kernel for mechanism "relu": with '
     "1/sqrt(key_size) scaling the logits stay Gaussian and the kernel is an integral of "
     'relu over them; use linear_scaling=true, or mechanism="identity"'),
    ("net a { Conv(4, 2); Flatten; SelfAttention(4) }", 1, 30,
     "SelfAttention needs spatial axes, but the Flatten at line 1 removed them"),
    ("net a { Conv(4, 2); GlobalAvgPool; SelfAttention(4) }", 1, 36,
     "SelfAttention needs spatial axes, but the GlobalAvgPool at line 1 removed them"),
    ("net a { Conv(4, 2); SelfAttention(4, heads = 2, heads = 3) }", 1, 49,
     "argument 'heads' of SelfAttention is given twice"),
    ("net a { Conv(4, 2); SelfAttention(4, head = 2) }", 1, 38,
     "SelfAttention has no argument 'head'"),
]


@pytest.mark.parametrize(("src", "line", "col", "message"), CASES)
def test_located_error(src, line, col, message):
    with pytest.raises(SpecError) as info:
        parse(src, filename="t.ntk")
    err = info.value
    assert (err.line, err.column, err.message) == (line, col, message), str(err)


def test_sqrt_scaling_rejection_says_why_and_points_at_the_option():
    with pytest.raises(SpecError) as info:
        parse("net a { Conv(4, 2); SelfAttention(4, linear_scaling = false) }",
              filename="t.ntk")
    text = str(info.value)
    assert "no closed-form kernel" in text and "linear_scaling = false" in text
    assert text.splitlines()[-1].strip().startswith("^")


def test_unknown_mechanism_lists_the_choices():
    with pytest.raises(SpecError) as info:
        parse('net a { Conv(4, 2); SelfAttention(4, mechanism = "softmx") }', filename="t.ntk")
    assert "softmax" in str(info.value)


def test_no_spatial_axes_is_an_input_error_naming_the_shapes():
    model = ntkdsl.compile("net a { Dense(4); SelfAttention(4) }")
    with pytest.raises(InputError, match=r"\(2, 5\).*spatial"):
        model.kernel_fn(np.ones((2, 5)))
    with pytest.raises(SpecError, match="gives no spatial axis"):
        ntkdsl.compile("net a { Input((5,)); Dense(4); SelfAttention(4) }")


def test_finite_apply_checks_channels():
    model = ntkdsl.compile("net a { SelfAttention(4) }")
    params = model.init(jax.random.key(0), (3, 2))
    with pytest.raises(InputError, match="expects input of shape"):
        model.net.body.layers[0].apply(params[0], np.ones((1, 3, 5)))


def test_booleans_are_spelled_as_in_the_language():
    """``true`` / ``false`` are the spec's booleans; ``True`` is an unknown name."""
    m = ntkdsl.compile('net a { Conv(4, 2); SelfAttention(4, mechanism = "identity", '
                       "linear_scaling = false) }")
    assert m.net.body.layers[1].linear_scaling is False
    with pytest.raises(SpecError, match="unknown name 'True'"):
        parse("net a { Conv(4, 2); SelfAttention(4, linear_scaling = True) }", filename="t.ntk")


def test_analyze_does_not_take_attention_for_an_affine_layer(tmp_path, capsys):
    """The mean-field maps follow Dense/Conv blocks; attention is outside them (exit 2)."""
    from ntkdsl.cli import main

    path = tmp_path / "a.ntk"
    path.write_text("net a { Dense(8); Relu; SelfAttention(8); Relu; Dense(1) }\n")
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert "SelfAttention is not covered" in err and "Traceback" not in err
