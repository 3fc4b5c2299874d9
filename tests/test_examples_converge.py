"""Every example spec builds a finite network whose Monte Carlo kernels approach
the analytic ones as the width grows (issue 6, "done when").

For each example net: the relative Frobenius error of the Monte Carlo NNGP
(readout estimator) and NTK against ``kernel_fn`` at a narrow and a wide
width, with the same number of inits. The wide error must be small, and
smaller than the narrow one (the finite-width error is ~1/sqrt(width)).
Three fully connected nets run by default; the deeper ones and the CNNs
are heavier and marked slow.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl.empirical import monte_carlo_kernel

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"

# (file, net, input shape, narrow width, wide width, inits)
FC = [
    ("fc_relu.ntk", "fc1", (12,), 32, 512, 8),
    ("fc_tanh.ntk", "fc3_tanh", (12,), 32, 512, 8),
    ("fc_erf.ntk", "fc_erf", (12,), 32, 512, 8),
]
SLOW = [
    ("fc_relu.ntk", "fc3", (12,), 32, 512, 8),
    ("fc_deep.ntk", "fc5", (12,), 32, 512, 8),
    ("digits_cnn.ntk", "cnn_flatten", (6, 6, 1), 8, 128, 4),
    ("digits_cnn.ntk", "cnn_gap", (6, 6, 1), 8, 128, 4),
    ("conv1d.ntk", "conv1d", (12, 2), 8, 128, 4),
    ("myrtle.ntk", "myrtle5_pool2", (8, 8, 2), 8, 128, 4),
    ("wrn.ntk", "wrn", (8, 8, 2), 8, 128, 4),
]


def _errors(fname: str, net: str, shape, width: int, inits: int) -> dict[str, float]:
    model = ntkdsl.compile_file(SPECS / fname, net=net, width=width)
    x = np.random.default_rng(1).normal(size=(4, *shape))
    exact = model.kernel_fn(x)
    mc = monte_carlo_kernel(model, jax.random.PRNGKey(0), inits, x, nngp_from="readout")
    return {
        name: float(np.linalg.norm(np.asarray(getattr(mc, name)) - getattr(exact, name))
                    / np.linalg.norm(getattr(exact, name)))
        for name in ("nngp", "ntk")
    }


def _check(fname, net, shape, narrow, wide, inits, tol):
    e_narrow = _errors(fname, net, shape, narrow, inits)
    e_wide = _errors(fname, net, shape, wide, inits)
    for name in ("nngp", "ntk"):
        assert e_wide[name] < tol, (name, e_wide)
        assert e_wide[name] < e_narrow[name], (name, e_narrow, e_wide)


@pytest.mark.parametrize(("fname", "net", "shape", "narrow", "wide", "inits"), FC,
                         ids=[f"{f}:{n}" for f, n, *_ in FC])
def test_fc_examples_converge(fname, net, shape, narrow, wide, inits):
    _check(fname, net, shape, narrow, wide, inits, tol=0.08)


@pytest.mark.slow
@pytest.mark.parametrize(("fname", "net", "shape", "narrow", "wide", "inits"), SLOW,
                         ids=[f"{f}:{n}" for f, n, *_ in SLOW])
def test_other_examples_converge(fname, net, shape, narrow, wide, inits):
    _check(fname, net, shape, narrow, wide, inits, tol=0.08 if len(shape) == 1 else 0.15)
