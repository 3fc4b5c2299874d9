"""The dense prediction handle: one factorisation per train set, both computation paths.

* concrete arrays are computed in numpy and traced ones (inside ``jax.jit``) in jax:
  both agree with each other and with ``expm``-based eq. 14-16 for both kinds,
  finite and infinite times, with and without the kept ``V^T K V``;
* a handle (``gradient_descent_mse_gp`` and ``Model.predict_fn``) factorises its
  train kernel once: further calls, test sets and times make no eigendecomposition
  (counted) and jax's eigh is never called on concrete kernels;
* ``V^T K V`` is formed only once the covariance rows asked for pass ``2 n``, and the
  results before and after are the same;
* the pseudo-inverse branch (a kernel that is not positive definite) agrees between
  the paths.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

import ntkdsl
from ntkdsl import predict as P
from tests.test_predict import _joint_kernel

jax.config.update("jax_enable_x64", True)

_joint = _joint_kernel


def _problem(seed=0, n=12, m=4, k=2):
    rng = np.random.default_rng(seed)
    kk, k_tx, k_tt = _joint(rng, n, m)
    th, th_tx, _ = _joint(rng, n, m)
    th, th_tx = th + 2 * kk, th_tx + 2 * k_tx
    return kk, k_tx, k_tt, th, th_tx, rng.normal(size=(n, k))


def _reference(kind, kk, k_tx, k_tt, th, th_tx, y, eta, t):
    """Eq. 14-16 (``kind="ntk"``) or the readout-only GP, by matrix exponentials."""
    n = kk.shape[0]
    if kind == "nngp":
        th, th_tx = kk, k_tx
    e = np.zeros((n, n)) if np.isinf(t) else sla.expm(-eta * th * t)
    a = th_tx @ np.linalg.solve(th, np.eye(n) - e)
    if kind == "nngp":
        e2 = np.zeros((n, n)) if np.isinf(t) else sla.expm(-2 * eta * th * t)
        return a @ y, k_tt - k_tx @ np.linalg.solve(kk, np.eye(n) - e2) @ k_tx.T
    return a @ y, k_tt + a @ kk @ a.T - a @ k_tx.T - k_tx @ a.T


TIMES = np.array([0.0, 0.7, 3.0, np.inf, 40.0])


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_numpy_and_jit_paths_agree_with_the_matrix_exponential(kind):
    kk, k_tx, k_tt, th, th_tx, y = _problem()
    eta = 0.2
    gp = P.gradient_descent_mse_gp(kk, y, ntk_train_train=th, kind=kind, learning_rate=eta)
    tx = th_tx if kind == "ntk" else None
    eager = gp(TIMES, k_tx, k_tt, tx)
    assert isinstance(eager.mean, np.ndarray) and isinstance(eager.cov, np.ndarray)
    jitted = jax.jit(lambda t, a, b, c: gp(t, a, b, c))(TIMES, k_tx, k_tt, tx)
    for i, t in enumerate(TIMES):
        mean, cov = _reference(kind, kk, k_tx, k_tt, th, th_tx, y, eta, t)
        for out in (eager, jitted):
            np.testing.assert_allclose(out.mean[i], mean, atol=1e-10)
            np.testing.assert_allclose(out.cov[i], cov, atol=1e-10)
    np.testing.assert_allclose(jitted.mean, eager.mean, atol=1e-13)
    np.testing.assert_allclose(jitted.cov, eager.cov, atol=1e-13)
    np.testing.assert_array_equal(eager.cov, np.swapaxes(eager.cov, 1, 2))
    # times of any shape, and a mean without covariance
    grid = gp(TIMES.reshape(5, 1), k_tx, None, tx)
    assert grid.cov is None and grid.mean.shape == (5, 1, 4, 2)
    np.testing.assert_allclose(grid.mean[:, 0], eager.mean, atol=1e-13)


def test_the_eigenbasis_product_is_formed_when_it_pays_and_changes_nothing():
    kk, k_tx, k_tt, th, th_tx, y = _problem(n=10, m=3)
    gp = P.gradient_descent_mse_gp(kk, y, ntk_train_train=th, kind="ntk", learning_rate=0.3)
    ts = np.array([0.5, 2.0, np.inf])  # 2 finite times x 3 points: 6 rows a call
    first = gp(ts, k_tx, k_tt, th_tx)
    calls = 1
    while gp.nngp_eigenbasis is None:  # formed once the rows pass 2 n = 20
        assert gp.covariance_rows <= 20
        again = gp(ts, k_tx, k_tt, th_tx)
        calls += 1
        np.testing.assert_allclose(again.cov, first.cov, rtol=1e-14, atol=1e-15)
    assert calls == 4 and gp.covariance_rows == 24
    v = np.asarray(gp.spec.evecs)
    np.testing.assert_allclose(gp.nngp_eigenbasis, v.T @ kk @ v, atol=1e-12)
    kept = gp.nngp_eigenbasis
    after = gp(ts, k_tx, k_tt, th_tx)
    assert gp.nngp_eigenbasis is kept
    np.testing.assert_allclose(after.cov, first.cov, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(after.mean, first.mean, rtol=1e-12, atol=1e-14)
    # the traced path uses the kept product too, with the same result
    jitted = jax.jit(lambda t: gp(t, k_tx, k_tt, th_tx))(ts)
    np.testing.assert_allclose(jitted.cov, first.cov, rtol=1e-12, atol=1e-14)
    # one call with many rows forms it at once
    big = P.gradient_descent_mse_gp(kk, y, ntk_train_train=th, kind="ntk", learning_rate=0.3)
    big(np.linspace(0.1, 5, 7), k_tx, k_tt, th_tx)
    assert big.nngp_eigenbasis is not None


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


def _no_jax_eigh(*a, **k):
    raise AssertionError("jax's eigh was called on a concrete kernel")


def test_a_handle_factorises_its_train_kernel_once(monkeypatch):
    eigh = _Counter(P._eigh)
    monkeypatch.setattr(P, "_eigh", eigh)
    monkeypatch.setattr(jnp.linalg, "eigh", _no_jax_eigh)
    kk, k_tx, k_tt, th, th_tx, y = _problem(n=10, m=4)
    gp = P.gradient_descent_mse_gp(kk, y, ntk_train_train=th, kind="ntk")
    assert eigh.calls == 1
    for ts, rows in ((TIMES, slice(None)), (np.array([1.0]), slice(1, 3)), (np.inf, slice(2))):
        gp(ts, k_tx[rows], k_tt[rows, rows], th_tx[rows])
    jax.jit(lambda t: gp(t, k_tx, k_tt, th_tx).cov)(TIMES)
    for _ in range(8):  # enough rows to form V^T K V: still no factorisation
        gp(TIMES, k_tx, k_tt, th_tx)
    assert gp.nngp_eigenbasis is not None
    assert eigh.calls == 1


def test_model_predict_fn_factorises_once_and_matches_the_handle(monkeypatch):
    model = ntkdsl.compile("net fc { Dense(16, W_std=1.5, b_std=0.1); Relu; Dense(1) }")
    rng = np.random.default_rng(1)
    x, xs = rng.normal(size=(8, 3)), rng.normal(size=(3, 3))
    y = rng.normal(size=(8, 1))
    eigh = _Counter(P._eigh)
    monkeypatch.setattr(P, "_eigh", eigh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.IllConditionedWarning)
        fn = model.predict_fn(x, y, diag_reg=1e-3)
    assert eigh.calls == 1
    first = fn(xs, TIMES)
    assert fn.dynamics.nngp_eigenbasis is None  # 4 finite times x 3 points; 2 n = 16
    second = fn(xs, TIMES)  # 24 rows: V^T K V formed and passed to the jitted function
    assert fn.dynamics.nngp_eigenbasis is not None
    assert eigh.calls == 1
    np.testing.assert_allclose(second.cov, first.cov, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(second.mean, first.mean, rtol=1e-10, atol=1e-13)
    # the same as a handle built from the model's kernels
    kern = model.kernel_fn(x, None, ("nngp", "ntk"))
    kx = model.kernel_fn(xs, x, ("nngp", "ntk"))
    ktt = model.kernel_fn(xs, None, "nngp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.IllConditionedWarning)
        gp = P.gradient_descent_mse_gp(kern.nngp, y, ntk_train_train=kern.ntk, diag_reg=1e-3)
    ref = gp(TIMES, kx.nngp, ktt, kx.ntk)
    np.testing.assert_allclose(first.mean, ref.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(first.cov, ref.cov, rtol=1e-9, atol=1e-12)


def test_pseudo_inverse_branch_agrees_between_paths():
    rng = np.random.default_rng(3)
    kk, k_tx, k_tt = _joint(rng, 8, 2, rank=3, jitter=0.0)  # rank 3: singular
    y = rng.normal(size=(8, 1))
    with pytest.warns(P.IllConditionedWarning):
        gp = P.gradient_descent_mse_gp(kk, y, kind="nngp")
    ts = np.array([1.0, np.inf])
    eager = gp(ts, k_tx, k_tt)
    jitted = jax.jit(lambda t: gp(t, k_tx, k_tt))(ts)
    assert np.all(np.isfinite(eager.cov)) and np.all(np.isfinite(eager.mean))
    np.testing.assert_allclose(jitted.mean, eager.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(jitted.cov, eager.cov, rtol=1e-9, atol=1e-9)
    spec = gp.spec
    assert spec.chol is None
    rhs = rng.normal(size=(8, 2))
    np.testing.assert_allclose(spec.solve(rhs), jax.jit(spec.solve)(rhs), atol=1e-9)
    np.testing.assert_allclose(spec.half_solve(rhs), jax.jit(spec.half_solve)(rhs), atol=1e-9)


def test_spectrum_of_a_traced_kernel_is_the_jax_factorisation():
    kk, *_ = _problem(n=6)
    eager = P.spectrum(kk, diag_reg=1e-2)
    evals, vecs = jax.jit(lambda k: (lambda s: (s.evals, s.evecs))(P.spectrum(k,
                                                                            diag_reg=1e-2)))(kk)
    np.testing.assert_allclose(evals, eager.evals, rtol=1e-12)
    # eigenvectors up to sign
    np.testing.assert_allclose(np.abs(np.sum(vecs * eager.evecs, axis=0)), 1.0, atol=1e-10)
    np.testing.assert_allclose(eager.kernel, (kk + kk.T) / 2
                               + 1e-2 * np.trace(kk) / 6 * np.eye(6), rtol=1e-14)


def test_gp_inference_uses_only_the_cholesky_factor_of_a_well_conditioned_kernel(monkeypatch):
    eigh = _Counter(P._eigh)
    monkeypatch.setattr(P, "_eigh", eigh)
    kk, k_tx, k_tt, *_, y = _problem(n=9, m=3)
    post = P.gp_inference(kk, y, k_tx, k_tt, diag_reg=1e-3)
    assert eigh.calls == 0
    reg = kk + 1e-3 * np.trace(kk) / 9 * np.eye(9)
    np.testing.assert_allclose(post.mean, k_tx @ np.linalg.solve(reg, y), atol=1e-12)
    np.testing.assert_allclose(post.cov, k_tt - k_tx @ np.linalg.solve(reg, k_tx.T),
                               atol=1e-12)
    jitted = jax.jit(lambda a: P.gp_inference(a, y, k_tx, k_tt, diag_reg=1e-3))(kk)
    np.testing.assert_allclose(jitted.cov, post.cov, atol=1e-12)
    # a nearly singular kernel still gets the eigenvalue diagnosis (and its warning)
    rng = np.random.default_rng(5)
    k, k_tx, k_tt = _joint(rng, 8, 2, rank=3, jitter=0.0)
    with pytest.warns(P.IllConditionedWarning, match="smallest eigenvalue"):
        P.gp_inference(k, y[:8], k_tx, k_tt)
    assert eigh.calls == 1


def test_a_handle_built_inside_jit_matches_the_eager_one():
    kk, k_tx, k_tt, th, th_tx, y = _problem(n=8, m=2)

    def moments(k, t_, kx, tx):
        gp = P.gradient_descent_mse_gp(k, y, ntk_train_train=t_, diag_reg=1e-3)
        return gp(np.array([1.0, np.inf]), kx, k_tt, tx)

    eager = moments(kk, th, k_tx, th_tx)
    traced = jax.jit(moments)(kk, th, k_tx, th_tx)
    np.testing.assert_allclose(traced.mean, eager.mean, atol=1e-13)
    np.testing.assert_allclose(traced.cov, eager.cov, atol=1e-13)


@pytest.mark.parametrize("n", [1, 5, 7, 16])
def test_tiled_symmetrisation_is_the_plain_one_and_refuses_the_same(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, n))
    a = a + a.T + 1e-12 * rng.normal(size=(n, n))  # rounding-sized asymmetry: accepted
    np.testing.assert_array_equal(P._symmetrised(a, "k", tile=3), (a + a.T) / 2)
    if n > 1:
        a[0, n - 1] += 1.0
        with pytest.raises(ntkdsl.InputError, match=rf"k\[{n - 1}, 0\]|k\[0, {n - 1}\]"):
            P._symmetrised(a, "k", tile=3)


@pytest.mark.slow  # two eigendecompositions of a 1200 x 1200 kernel
def test_gp_dynamics_warn_when_the_pseudo_inverse_drops_a_mode():
    # n = 1200: the pseudo-inverse's cut n eps lambda_max is a condition number of 3.75e12,
    # under the warning limit 4.5e12; a kernel at 4e12 drops its smallest mode at t = inf
    n = 1200
    q, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(n, n)))
    lam = np.geomspace(1.0, 1 / 4e12, n)
    k = (q * lam) @ q.T
    k = (k + k.T) / 2
    y = np.ones((n, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", P.IllConditionedWarning)
        P.gp_inference(k, y, k[:2])  # the Cholesky solve keeps every mode: no warning
    with pytest.warns(P.IllConditionedWarning, match="using a pseudo-inverse"):
        P.gradient_descent_mse_gp(k, y, kind="nngp")
