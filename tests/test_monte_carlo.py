"""Monte Carlo kernels of finite networks against the analytic kernels of the same spec.

The analytic NNGP / NTK are the infinite-width limits of the finite nets, so
the Monte Carlo averages must approach them. Sources of error: the
finite-width bias, O(1/width), and the spread over inits, O(1/sqrt(width *
n_samples)) for the NTK and the readout NNGP (the readout weights integrated
out exactly) and O(1/sqrt(n_samples * outputs)) for the outputs NNGP. The
sample counts below keep the expected errors at about half the 0.05 bound;
the seeds are fixed. The default run is small; ``-m slow`` runs the sweep.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl import InputError
from ntkdsl.empirical import monte_carlo_kernel

jax.config.update("jax_enable_x64", True)

FC_A = """
net fc(width = 512) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu
    Dense(width, W_std = 1.4, b_std = 0.2)
    Erf(a = 1.2, b = 0.8, c = 0.1)
    Dense(width, W_std = 1.3)
    LeakyRelu(0.2)
    Dense(width, W_std = 1.2, b_std = 0.3)
    Sin(a = 1.1, b = 0.9, c = 0.4)
    Dense(1, W_std = 1.2, b_std = 0.2)
}
"""
FC_B = """
net fc(width = 512) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Gelu
    Dense(width, W_std = 1.4, b_std = 0.2)
    Tanh
    Dense(width, W_std = 1.3)
    ABRelu(-0.5, 1.5)
    Dense(width, W_std = 1.2, b_std = 0.3)
    Identity
    Dense(1, W_std = 1.2, b_std = 0.2)
}
"""
CNN_GAP = """
net cnn(width = 512) {
    Conv(width, 2, W_std = 1.4, b_std = 0.1)
    Relu
    AvgPool(2, strides = 1, padding = SAME)
    Conv(width, (2, 1), padding = CIRCULAR, W_std = 1.4)
    Relu
    GlobalAvgPool
    Dense(1, b_std = 0.1)
}
"""
CNN_FLAT = """
net cnn(width = 512) {
    Conv(width, 2, strides = (2, 1), W_std = 1.4, b_std = 0.1)
    Erf
    Conv(width, 2, padding = VALID, W_std = 1.4)
    Relu
    Flatten
    Dense(1, b_std = 0.1)
}
"""
RES = """
net res(width = 512) {
    Conv(width, 2, W_std = 1.4)
    Residual {
        Relu
        Conv(width, 2, W_std = 1.4, b_std = 0.1)
    }
    Relu
    GlobalAvgPool
    Dense(1)
}
"""
RES_SHORTCUT = """
net res(width = 512) {
    Conv(width, 2, W_std = 1.4)
    Relu
    Residual {
        Conv(width, 2, W_std = 1.4, b_std = 0.1)
        Relu
        Conv(width, 1)
    } shortcut {
        Conv(width, 1, W_std = 0.8)
    }
    Relu
    Flatten
    Dense(1)
}
"""
STANDARD = """
net std(width = 512) {
    defaults parameterization = "standard"
    Conv(width, 2, W_std = 1.4, b_std = 0.3)
    Relu
    Flatten
    Dense(width, W_std = 1.3, b_std = 0.2)
    Erf
    Dense(1, W_std = 1.1, b_std = 0.1)
}
"""
OUTPUTS = """
net fc(width = 512) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu
    Dense(64, W_std = 1.2, b_std = 0.2)
}
"""

FC_SHAPE, IMG_SHAPE = (5,), (3, 3, 2)


def inputs(shape, n=3, seed=0):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, *shape)))


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def errors(spec, shape, n_samples, width=512, seed=1, **kw):
    """Relative Frobenius errors (nngp, ntk) of the Monte Carlo kernels."""
    model = ntkdsl.compile(spec, width=width)
    x = inputs(shape)
    exact = model.kernel_fn(x, None, ("nngp", "ntk"))
    mc = monte_carlo_kernel(model, jax.random.key(seed), n_samples, x, **kw)
    return rel(mc.nngp, exact.nngp), rel(mc.ntk, exact.ntk)


CASES = {
    "fc_relu_erf_leaky_sin": (FC_A, FC_SHAPE, 24),
    "fc_gelu_tanh_abrelu_identity": (FC_B, FC_SHAPE, 32),
    "cnn_gap": (CNN_GAP, IMG_SHAPE, 24),
    "cnn_flatten": (CNN_FLAT, IMG_SHAPE, 16),
    "residual": (RES, IMG_SHAPE, 12),
    "residual_shortcut": (RES_SHORTCUT, IMG_SHAPE, 16),
    "standard": (STANDARD, IMG_SHAPE, 16),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_monte_carlo_matches_analytic_at_width_512(case):
    spec, shape, n_samples = CASES[case]
    e_nngp, e_ntk = errors(spec, shape, n_samples, nngp_from="readout")
    assert e_nngp < 0.05 and e_ntk < 0.05, (e_nngp, e_ntk)


def test_outputs_nngp_matches_analytic():
    # f(x1) f(x2)^T averaged over 64 outputs and 64 inits: expected error ~ sqrt(2 / 4096)
    model = ntkdsl.compile(OUTPUTS)
    x = inputs(FC_SHAPE)
    exact = model.kernel_fn(x, None, "nngp")
    mc = monte_carlo_kernel(model, jax.random.key(2), 64, x, get="nngp", batch_size=16)
    assert rel(mc, exact) < 0.05


def test_error_shrinks_with_width():
    # at fixed n_samples the spread dominates: ~ 1/sqrt(width), so 16x width -> ~4x smaller
    small = errors(FC_A, FC_SHAPE, 8, width=64, nngp_from="readout")
    large = errors(FC_A, FC_SHAPE, 8, width=1024, nngp_from="readout")
    for s, big in zip(small, large):
        assert big < s / 2, (small, large)


def test_batching_over_inits_does_not_change_the_average():
    model = ntkdsl.compile(FC_A, width=16)
    x = inputs(FC_SHAPE)
    a = monte_carlo_kernel(model, jax.random.key(3), 5, x, batch_size=2)
    b = monte_carlo_kernel(model, jax.random.key(3), 5, x, batch_size=5, implementation="ntvp")
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-10)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-10)
    # the mean of the per-init empirical kernels, computed one init at a time
    keys = jax.random.split(jax.random.key(3), 5)
    ntk = np.mean([model.empirical_ntk(model.init(k, x.shape[1:]), x) for k in keys], axis=0)
    np.testing.assert_allclose(a.ntk, ntk, rtol=1e-10)
    x2 = inputs(FC_SHAPE, n=2, seed=4)
    c = monte_carlo_kernel(model, jax.random.key(3), 5, x, x2, get="nngp")
    assert c.shape == (3, 2)
    with pytest.raises(InputError, match="get"):
        monte_carlo_kernel(model, jax.random.key(3), 5, x, get="cov")
    with pytest.raises(InputError, match="n_samples"):
        monte_carlo_kernel(model, jax.random.key(3), 0, x)
    with pytest.raises(InputError, match="ending in Dense"):
        monte_carlo_kernel(ntkdsl.compile("net n { Dense(3)\n Relu }"), jax.random.key(3), 2, x,
                           nngp_from="readout")


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_monte_carlo_error_falls_like_one_over_sqrt_width(case):
    spec, shape, n_samples = CASES[case]
    # one seed's error is noisy (about +-50%); the mean over seeds is not
    widths = (64, 256, 1024)
    errs = np.array([np.mean([errors(spec, shape, n_samples, width=w, seed=s,
                                     nngp_from="readout") for s in range(3)], axis=0)
                     for w in widths])
    assert np.all(errs[-1] < 0.05), errs
    for j in range(2):
        slope = np.polyfit(np.log(widths), np.log(errs[:, j]), 1)[0]
        # -0.5 expected; three seeds leave about +-0.2 of noise on the fitted slope
        assert -0.9 < slope < -0.15, (case, j, slope, errs)
    assert math.isfinite(float(errs.sum()))
