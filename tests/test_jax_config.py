"""ntkdsl is a guest in the user's process: it never changes ``jax.config``.

Each case runs in a fresh interpreter (the test suite itself turns x64 on),
once with x64 off and once on, importing and using kernels, init/apply,
empirical kernels and predictions, and checks the setting afterwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = r"""
import jax
jax.config.update("jax_enable_x64", {state})
import numpy as np
import ntkdsl

model = ntkdsl.compile("net n {{ Dense(16, W_std=1.5, b_std=0.1); Relu; Dense(1) }}")
x = np.random.default_rng(0).normal(size=(6, 3))
k = model.kernel_fn(x)
assert k.nngp.dtype == np.float64 and isinstance(k.nngp, np.ndarray), k.nngp.dtype
params = model.init(jax.random.PRNGKey(0), (3,))
out = model.apply(params, x)
theta = ntkdsl.empirical_ntk(model.apply, params, x)
y = np.random.default_rng(1).normal(size=(6, 1))
pred = model.predict_fn(x, y)(x[:2], 1.0)
assert np.all(np.isfinite(np.asarray(pred.mean)))
assert jax.config.jax_enable_x64 is {state}, jax.config.jax_enable_x64
# the user's own code keeps its precision
expected = "float64" if {state} else "float32"
assert jax.numpy.ones(2).dtype == expected
print("ok", out.dtype)
"""


@pytest.mark.parametrize("state", [False, True])
def test_config_is_left_alone(state):
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(state=state)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")
