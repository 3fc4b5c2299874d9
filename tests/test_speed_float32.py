"""float32 kernels: finite at correlation +-1 for every nonlinearity, close to float64."""

import numpy as np
import pytest

import ntkdsl

NONLINEARITIES = ["Relu", "LeakyRelu(0.1)", "ABRelu(-0.5, 1)", "Erf", "Gelu", "Sin", "Tanh",
                  "Softplus", "Abs", "Sign", "Cos", "Gaussian", "Sigmoid"]  # Exp(Exp) overflows


def inputs():
    x = np.random.default_rng(0).normal(size=(6, 5))
    x[1] = x[0]  # correlation 1
    x[3] = -2 * x[2]  # correlation -1
    return x


@pytest.mark.parametrize("act", NONLINEARITIES)
def test_float32_is_finite_at_unit_correlation_and_near_float64(act):
    m = ntkdsl.compile("net n { " + f"Dense(16, W_std=1.5, b_std=0.1); {act}; " * 2
                       + "Dense(1) }")
    x = inputs()
    k64 = m.kernel_fn(x)
    for x2 in (None, x.copy()):  # the symmetric pair list and the grid
        k32 = m.kernel_fn(x, x2, dtype="float32")
        for g in ("nngp", "ntk"):
            a, b = getattr(k64, g), getattr(k32, g)
            assert b.dtype == np.float32
            assert np.isfinite(b).all(), (act, g)
            assert b[0, 0] == b[0, 1] == b[1, 1]  # identical inputs, identical entries
            # float32 carries ~7 digits; a few rounding errors per layer stay far below 1e-4
            assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), (act, g)


def test_float32_conv_gap_finite_with_identical_images():
    m = ntkdsl.compile("net c { Conv(4, 3, W_std=1.4, b_std=0.1); Relu; Conv(4, 3); Erf; "
                       "GlobalAvgPool; Dense(1) }")
    x = np.random.default_rng(1).normal(size=(3, 5, 5, 2))
    x[1] = x[0]
    k32 = m.kernel_fn(x, dtype="float32")
    k64 = m.kernel_fn(x)
    for g in ("nngp", "ntk"):
        b = getattr(k32, g)
        assert np.isfinite(b).all() and b[0, 0] == b[0, 1]
        assert np.abs(getattr(k64, g) - b).max() <= 1e-4 * np.abs(getattr(k64, g)).max()
