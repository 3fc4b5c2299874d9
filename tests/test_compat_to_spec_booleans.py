"""to_spec writes the v2 booleans (true/false) of SelfAttention and Aggregate."""

from __future__ import annotations

import numpy as np

import ntkdsl
from ntkdsl.compat import stax, to_spec


def test_attention_with_a_boolean_argument_round_trips():
    net = stax.serial(stax.GlobalSelfAttention(4, 2, 2, 2, linear_scaling=False,
                                               attention_mechanism="IDENTITY"),
                      stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))
    text = to_spec(net, (3, 2))
    assert "linear_scaling = false" in text
    x = np.random.default_rng(0).normal(size=(3, 3, 2))
    ours = ntkdsl.compile(text).kernel_fn(x, None, "ntk")
    theirs = net[2](x, None, "ntk")
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
