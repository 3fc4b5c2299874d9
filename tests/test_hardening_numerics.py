"""Wrong or silent results, and runaway memory, that users met: each is now right or loud.

* inputs of large magnitude: homogeneous nonlinearities are evaluated on variances
  scaled by a power of two (exact), others refuse with the entries named;
* hyperparameters whose squares overflow are located errors;
* identical inputs give identical entries and PSD matrices in float32 and float64;
* the kernel's own size is checked before any work; tiles can go into out= arrays;
* automatic tiles stay small enough that Ctrl-C (between tiles) is prompt;
* explain's whole-net closed form is attempted within a budget;
* a Model pickles at any time; init takes the peer's (-1, ...) input shape.
"""

from __future__ import annotations

import pickle

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler import kernels
from ntkdsl.compiler.explain import explain

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 5))
RELU = "net n { Dense(32, W_std = 1.4); Relu; Dense(32, W_std = 1.4); Relu; Dense(1) }"


@pytest.mark.parametrize("dtype, scale", [("float64", 1e77), ("float32", 1e10)])
def test_large_inputs_through_relu_are_exact(dtype, scale):
    m = ntkdsl.compile(RELU)
    ref = m.kernel_fn(X)
    big = m.kernel_fn(X * scale, dtype=dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for name in ("nngp", "ntk"):
        got = getattr(big, name).astype(np.float64) / scale**2
        np.testing.assert_allclose(got, getattr(ref, name), rtol=tol)


def test_overflowing_kernel_is_an_error_naming_entries():
    m = ntkdsl.compile("net n { Dense(8); Erf; Dense(1) }")
    with pytest.raises(ntkdsl.InputError, match=r"non-finite entries \(the first at \[0, 0\]\)"):
        m.kernel_fn(X * 1e160)


@pytest.mark.parametrize("arg", ["W_std = 1e150", "b_std = 1e200"])
def test_hyperparameters_whose_squares_overflow_are_located(arg):
    with pytest.raises(ntkdsl.SpecError) as e:
        ntkdsl.compile(f"net n {{ Dense(4, {arg}); Relu; Dense(1) }}")
    assert e.value.column == 18 and "too large" in str(e.value)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["Erf", "Relu", "Tanh"])
def test_identical_inputs_give_identical_entries(dtype, act):
    body = f"Dense(32, W_std = 1.6, b_std = 0.1); {act}; " * 8
    m = ntkdsl.compile(f"net n {{ {body} Dense(1) }}")
    x = np.concatenate([X[:1], X[:1], X[1:3]])
    k = m.kernel_fn(x, dtype=dtype)
    grid = m.kernel_fn(x, x.copy(), dtype=dtype)
    for name in ("nngp", "ntk"):
        a = getattr(k, name)
        assert a[0, 0] == a[0, 1] == a[1, 1], (name, a[:2, :2])
        np.testing.assert_array_equal(np.diag(getattr(grid, name)), np.diag(a))
        assert np.linalg.eigvalsh(a.astype(np.float64)).min() > -1e-6 * np.abs(a).max()


def test_result_that_cannot_fit_is_refused_up_front(monkeypatch):
    m = ntkdsl.compile(RELU)
    monkeypatch.setattr(kernels, "available_memory", lambda: 1000)
    with pytest.raises(ntkdsl.InputError, match=r"the kernel itself needs .* GiB"):
        m.kernel_fn(RNG.normal(size=(20, 5)))


def test_tiles_go_into_out_arrays(tmp_path):
    m = ntkdsl.compile(RELU)
    x = RNG.normal(size=(11, 5))
    out = {g: np.lib.format.open_memmap(tmp_path / f"{g}.npy", "w+", np.float64, (11, 11))
           for g in ("nngp", "ntk")}
    k = m.kernel_fn(x, batch_size=4, out=out)
    ref = m.kernel_fn(x)
    for g in ("nngp", "ntk"):
        assert getattr(k, g) is out[g]
        np.testing.assert_allclose(np.asarray(out[g]), getattr(ref, g), rtol=1e-14)


def test_automatic_tiles_are_small_enough_to_interrupt():
    m = ntkdsl.compile("net c { Conv(4, 3); Relu; GlobalAvgPool; Dense(1) }")
    p = kernels.get_plan(m, (8, 8, 1))
    # 500 images: one tile would hold 125k pairs x 4096 position pairs
    b = kernels.responsive_batch_size(p, 500, 500, True)
    assert b is not None and b * b * kernels.positions_factor(p) <= kernels.TILE_ENTRIES
    assert kernels.responsive_batch_size(p, 5, 5, True) is None


def test_explain_of_a_deep_smooth_net_stays_bounded():
    net = ntkdsl.parse("net n { Dense(8); Gelu; Dense(8); Sin; Dense(1) }")
    text = explain(net)
    assert "Tdot_[Sin(a=1" in text  # the per-layer recursion is always there
    assert ("closed form (fully connected" in text) or ("no closed form printed" in text)


def test_model_pickles_after_use_and_recompiles():
    m = ntkdsl.compile(RELU)
    k = m.kernel_fn(X)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2 == m
    np.testing.assert_array_equal(m2.kernel_fn(X).ntk, k.ntk)


def test_init_accepts_the_peers_batch_axis():
    m = ntkdsl.compile(RELU)
    a = m.init(jax.random.PRNGKey(0), (5,))
    b = m.init(jax.random.PRNGKey(0), (-1, 5))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda u, v: bool((u == v).all()), a, b))
