"""Monte Carlo kernels of finite nets with SelfAttention against their analytic kernels.

The harness of ``tests/test_monte_carlo.py``: the readout NNGP and the empirical NTK of
the finite net averaged over inits (seeds fixed) against ``kernel_fn``, in relative
Frobenius error. The inputs are three sequences of four positions, each position scaled
to unit mean square, so that no input's cubic (identity attention) or exponential
(softmax) dependence on its scale dominates the error.

The finite-width errors shrink as the widths grow: identity attention with linear
scaling is 0.20 (NNGP) / 0.25 (NTK) off at width 256 and 0.034 / 0.033 at width 512
(16 inits); the sqrt-scaled identity needs several heads (its output is Gaussian only as
the heads grow: 0.14 with 2 heads at width 256).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl.empirical import monte_carlo_kernel

jax.config.update("jax_enable_x64", True)


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _spec(attention: str, width: int) -> str:
    # sqrt scaling: no nonlinearity after the attention, whose output is Gaussian only as
    # the heads grow (with Relu after it: 0.095 / 0.080 at 4 heads and width 256, 0.066 /
    # 0.036 at 8 heads and width 512); its second moments converge at any head count
    after = "" if "linear_scaling = false" in attention else "Relu; "
    return (f"net t(width = {width}) {{ Dense(width, W_std = 1.2); {attention}; {after}"
            "GlobalAvgPool; Dense(1) }")


#: attention call, width, inits, seed, tolerance; measured errors (NNGP / NTK) in comments
CASES = {
    # seeds 1, 2: 0.023 / 0.012, 0.038 / 0.040 (at width 256 the draws spread from
    # 0.034 to 0.067 in the NNGP)
    "softmax_sum": ('SelfAttention(width, heads = 4, key_size = width / 4, value_size = '
                    'width / 4, W_std = 1.2, b_std = 0.1, positional = "sum")', 512, 16, 1,
                    0.06),
    # 0.034 / 0.033
    "identity": ('SelfAttention(width, heads = 4, key_size = width / 4, value_size = '
                 'width / 4, mechanism = "identity", W_std = 0.9)', 512, 16, 1, 0.05),
    "sqrt_identity_concat": ('SelfAttention(width, heads = 16, key_size = width / 16, '
                             'value_size = width / 16, mechanism = "identity", '
                             'linear_scaling = false, positional = "concat")', 256, 32, 1,
                             0.06),
    "relu_concat": ('SelfAttention(width, heads = 4, key_size = width / 4, value_size = '
                    'width / 4, mechanism = "relu", W_out_std = 1.3, positional = "concat")',
                    512, 16, 1, 0.06),
}
#: each takes 20 s to a minute of CPU (compiling and running the vmapped finite net), so
#: all run under ``-m slow``; by default the finite layer is checked against the peer's
#: (tests/test_attention_golden.py), whose kernels the analytic ones match
SLOW = set(CASES)


def _inputs(shape=(4, 3)) -> np.ndarray:
    x = np.asarray(jax.random.normal(jax.random.key(0), (3, *shape)))
    return x / np.linalg.norm(x, axis=-1, keepdims=True) * np.sqrt(shape[-1])


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in sorted(CASES)])
def test_finite_net_converges_to_analytic_kernels(case):
    attention, width, n, seed, tol = CASES[case]
    model = ntkdsl.compile(_spec(attention, width))
    x = _inputs()
    exact = model.kernel_fn(x, None, ("nngp", "ntk"))
    mc = monte_carlo_kernel(model, jax.random.key(seed), n, x, nngp_from="readout",
                            batch_size=8)
    e_nngp, e_ntk = rel(mc.nngp, exact.nngp), rel(mc.ntk, exact.ntk)
    assert e_nngp < tol and e_ntk < tol, (e_nngp, e_ntk)


def test_finite_layer_shapes_and_parameters():
    """init/apply: one parameter set per weight matrix, sizes as the arguments say."""
    model = ntkdsl.compile(
        'net t { SelfAttention(6, heads = 2, key_size = 5, value_size = 4, b_std = 0.5, '
        'positional = "concat", linear_scaling = true) }')
    params = model.init(jax.random.key(0), (3, 2, 7))
    p = params[0]
    assert p["wk"].shape == (2, 14, 5) and "wq" not in p  # tied queries, concat: 2 C
    assert p["wv"].shape == (2, 7, 4) and p["wo"].shape == (8, 6)
    assert p["b"].shape == (6,) and p["pos"].shape == (3, 2, 7)
    y = model.apply(params, np.ones((5, 3, 2, 7)))
    assert y.shape == (5, 3, 2, 6) and np.all(np.isfinite(y))
    sqrt = ntkdsl.compile('net t { SelfAttention(4, mechanism = "identity", '
                          'linear_scaling = false) }')
    q = sqrt.init(jax.random.key(0), (5, 3))[0]
    assert q["wq"].shape == q["wk"].shape == (1, 3, 4) and "b" not in q and "pos" not in q


def test_attention_mixes_positions_and_a_permutation_commutes():
    """Self-attention without positional embeddings is permutation-equivariant: the
    finite net and the kernels both commute with permuting the positions."""
    model = ntkdsl.compile('net t { Dense(8); SelfAttention(8, heads = 2) }')
    x = _inputs((5, 3))
    perm = np.array([3, 0, 4, 1, 2])
    params = model.init(jax.random.key(1), x.shape[1:])
    y = np.asarray(model.apply(params, x))
    y_perm = np.asarray(model.apply(params, x[:, perm]))
    np.testing.assert_allclose(y_perm, y[:, perm], rtol=1e-10, atol=1e-12)
    # a position's output depends on the other positions (attention mixes them)
    x2 = x.copy()
    x2[:, 4] += 1.0
    assert not np.allclose(np.asarray(model.apply(params, x2))[:, 0], y[:, 0])
    k = model.kernel_fn(x, None, "nngp")
    k_perm = model.kernel_fn(x[:, perm], None, "nngp")
    np.testing.assert_allclose(k_perm, k, rtol=1e-12)
