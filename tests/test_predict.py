"""Closed-form dynamics and GP predictions (ntkdsl.predict) against independent computations."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

from ntkdsl import InputError
from ntkdsl import predict as P

jax.config.update("jax_enable_x64", True)


def _joint_kernel(rng, n, m, rank=None, jitter=0.05):
    """A random PSD joint kernel over n train + m test points, split into blocks."""
    rank = rank or n + m
    a = rng.normal(size=(n + m, rank))
    k = a @ a.T / rank + jitter * np.eye(n + m)
    return k[:n, :n], k[n:, :n], k[n:, n:]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_flow_matches_matrix_exponential(rng):
    k, k_tx, _ = _joint_kernel(rng, 7, 3)
    y = rng.normal(size=(7, 2))
    f0 = rng.normal(size=(7, 2))
    g0 = rng.normal(size=(3, 2))
    eta, ts = 0.7, np.array([0.0, 0.3, 2.0, 11.0])
    dyn = P.gradient_descent_mse(k, y, learning_rate=eta)
    ftr, fte = dyn(ts, f0, g0, k_tx)
    for i, t in enumerate(ts):
        e = sla.expm(-eta * k * t)
        np.testing.assert_allclose(ftr[i], (np.eye(7) - e) @ y + e @ f0, atol=1e-12)
        # eq. 11: f_test = g0 + k_tx K^-1 (I - e)(Y - f0)
        want = g0 + k_tx @ np.linalg.solve(k, (np.eye(7) - e) @ (y - f0))
        np.testing.assert_allclose(fte[i], want, atol=1e-10)


def test_flow_matches_ode_integration(rng):
    k, k_tx, _ = _joint_kernel(rng, 6, 4)
    y = rng.normal(size=(6, 3))
    ts = np.array([0.5, 3.0, 1.0])
    dyn = P.gradient_descent_mse(k, y, learning_rate=0.4)
    ftr, fte = dyn(ts, 0.0, 0.0, k_tx)
    rtr, rte = P.gradient_flow(k, y, ts, objective="mse", k_test_train=k_tx, learning_rate=0.4)
    np.testing.assert_allclose(rtr, ftr, atol=1e-9)
    np.testing.assert_allclose(rte, fte, atol=1e-9)


def test_cross_entropy_flow_matches_odeint(rng):
    from jax.experimental.ode import odeint

    k, k_tx, _ = _joint_kernel(rng, 5, 2)
    y = np.eye(3)[rng.integers(0, 3, 5)]
    ts = np.array([0.0, 0.7, 2.5])
    kj, kt, yj = jnp.asarray(k), jnp.asarray(k_tx), jnp.asarray(y)

    def rhs(state, t):
        f, _ = state
        d = jax.nn.softmax(f, axis=-1) - yj
        return -0.5 * kj @ d, -0.5 * kt @ d

    want = odeint(rhs, (jnp.zeros((5, 3)), jnp.zeros((2, 3))), jnp.asarray(ts),
                  rtol=1e-12, atol=1e-12)
    ftr, fte = P.gradient_flow(k, y, ts, k_test_train=k_tx, learning_rate=0.5)
    np.testing.assert_allclose(ftr, want[0], atol=1e-8)
    np.testing.assert_allclose(fte, want[1], atol=1e-8)
    # the loss decreases along the flow
    losses = [-np.sum(y * jax.nn.log_softmax(f)) for f in ftr]
    assert losses[0] > losses[1] > losses[2]


def test_discrete_gd_matches_iteration_exactly(rng):
    k, k_tx, _ = _joint_kernel(rng, 6, 3)
    y = rng.normal(size=(6, 2))
    f0, g0 = rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    eta = 0.9 * P.eta_critical(k)
    dyn = P.gradient_descent_mse(k, y, learning_rate=eta, optimizer="gd")
    steps = np.arange(0, 40, 7)
    ftr, fte = dyn(steps, f0, g0, k_tx)
    f, g = f0.copy(), g0.copy()
    for i in range(steps[-1] + 1):
        if i in steps:
            j = list(steps).index(i)
            np.testing.assert_allclose(ftr[j], f, atol=1e-12)
            np.testing.assert_allclose(fte[j], g, atol=1e-11)
        r = f - y
        f, g = f - eta * k @ r, g - eta * k_tx @ r


def test_mean_loss_is_total_loss_with_scaled_rate(rng):
    k, k_tx, _k_tt = _joint_kernel(rng, 5, 2)
    y = rng.normal(size=(5, 3))
    ts = np.array([1.0, 10.0, np.inf])
    mean = P.gradient_descent_mse(k, y, learning_rate=6.0, loss="mean")
    total = P.gradient_descent_mse(k, y, learning_rate=6.0 / y.size)
    for a, b in zip(mean(ts, 0.2, 0.0, k_tx), total(ts, 0.2, 0.0, k_tx)):
        np.testing.assert_allclose(a, b, atol=1e-13)
    # and the mean loss's flow really is the gradient flow of L = 1/(2nk) sum (f-y)^2
    grad = jax.grad(lambda f: jnp.sum((f - y) ** 2) / (2 * y.size))
    f = jnp.zeros_like(y)
    ftr, _ = mean(np.array([1.0]), 0.0)
    rtr, _ = P.gradient_flow(k, y, np.array([1.0]), objective=lambda f, y: 0.5 * jnp.sum(
        (f - y) ** 2), learning_rate=6.0, loss="mean")
    np.testing.assert_allclose(ftr, rtr, atol=1e-9)
    assert np.allclose(grad(f) * y.size, f - y)
    assert P.eta_critical(k, loss="mean", n_outputs=3) == pytest.approx(
        15 * P.eta_critical(k))


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_momentum_matches_simulated_momentum(rng, beta):
    k, k_tx, _ = _joint_kernel(rng, 6, 3)
    y = rng.normal(size=(6, 1))
    f0 = rng.normal(size=(6, 1))
    eta = 0.8 * P.eta_critical(k, momentum=beta)
    dyn = P.gradient_descent_mse(k, y, learning_rate=eta, optimizer="momentum", momentum=beta)
    steps = np.array([0, 1, 2, 5, 17, 60])
    ftr, fte = dyn(steps, f0, 0.0, k_tx)
    f, g, v, vt = f0.copy(), np.zeros((3, 1)), np.zeros((6, 1)), np.zeros((3, 1))
    for i in range(61):
        if i in steps:
            j = list(steps).index(i)
            np.testing.assert_allclose(ftr[j], f, atol=1e-11)
            np.testing.assert_allclose(fte[j], g, atol=1e-10)
        r = f - y
        v, vt = beta * v - eta * k @ r, beta * vt - eta * k_tx @ r
        f, g = f + v, g + vt
    if beta == 0:
        gd = P.gradient_descent_mse(k, y, learning_rate=eta, optimizer="gd")
        np.testing.assert_allclose(gd(steps, f0)[0], ftr, atol=1e-12)


def test_infinite_time_is_the_cholesky_solve(rng):
    k, k_tx, _ = _joint_kernel(rng, 8, 3)
    y, f0, g0 = rng.normal(size=(8, 2)), rng.normal(size=(8, 2)), rng.normal(size=(3, 2))
    dyn = P.gradient_descent_mse(k, y, learning_rate=1.0)
    ftr, fte = dyn(np.array([np.inf, 1e4]), f0, g0, k_tx)
    want = g0 + k_tx @ np.linalg.solve(k, y - f0)
    np.testing.assert_allclose(ftr[0], y, atol=1e-14)
    np.testing.assert_allclose(fte[0], want, atol=1e-10)
    np.testing.assert_allclose(fte[1], want, atol=1e-8)  # the flow converges to it


def test_linearized_network_trained_by_gd_follows_eq_8_to_11(rng):
    """A tiny two-layer net's linearisation, trained by explicit GD, vs the closed forms."""
    d, width, k_out, n, m = 3, 16, 2, 5, 3
    key = jax.random.PRNGKey(1)
    k1, k2 = jax.random.split(key)
    params0 = {"w1": jax.random.normal(k1, (d, width)), "w2": jax.random.normal(k2, (width, k_out))}

    def f(p, x):
        return jnp.tanh(x @ p["w1"] / np.sqrt(d)) @ p["w2"] / np.sqrt(width)

    x, xt = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=(m, d)))
    y = jnp.asarray(rng.normal(size=(n, k_out)))
    flat0, unravel = jax.flatten_util.ravel_pytree(params0)

    def f_flat(w, xx):
        return f(unravel(w), xx)

    jac = jax.jacobian(f_flat)(flat0, x)  # (n, k, P)
    jac_t = jax.jacobian(f_flat)(flat0, xt)
    theta = jnp.einsum("nkp,mlp->nkml", jac, jac)
    theta_tx = jnp.einsum("nkp,mlp->nkml", jac_t, jac)
    f0, g0 = f_flat(flat0, x), f_flat(flat0, xt)

    def lin(w, xx, jj, ff):
        return ff + jj @ (w - flat0)

    eta = 0.5 * P.eta_critical(theta)
    steps = 200
    grad = jax.grad(lambda w: 0.5 * jnp.sum((lin(w, x, jac, f0) - y) ** 2))
    w = jax.jit(lambda w0: jax.lax.fori_loop(0, steps, lambda _, w: w - eta * grad(w), w0))(flat0)
    dyn = P.gradient_descent_mse(theta, y, learning_rate=eta, optimizer="gd")
    ftr, fte = dyn(steps, f0, g0, theta_tx)
    np.testing.assert_allclose(ftr, lin(w, x, jac, f0), atol=1e-10)
    np.testing.assert_allclose(fte, lin(w, xt, jac_t, g0), atol=1e-10)
    np.testing.assert_allclose(dyn.weight_change(steps, f0, jacobian=jac), w - flat0, atol=1e-10)
    _, vjp_fn = jax.vjp(lambda p: f(p, x), params0)
    dw = dyn.weight_change(np.array([steps]), f0, vjp_fn=vjp_fn)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(
        jax.tree_util.tree_map(lambda a: a[0], dw))[0], w - flat0, atol=1e-10)
    # continuous time: many tiny GD steps approach the flow formula (eq. 8-11)
    flow = P.gradient_descent_mse(theta, y, learning_rate=1.0)
    small = P.gradient_descent_mse(theta, y, learning_rate=1e-4, optimizer="gd")
    a, b = flow(1.0, f0, g0, theta_tx), small(1e4, f0, g0, theta_tx)
    np.testing.assert_allclose(a[1], b[1], atol=1e-3 * float(jnp.max(jnp.abs(a[1]))))


def test_nngp_readout_and_posterior(rng):
    k, k_tx, k_tt = _joint_kernel(rng, 7, 3)
    y = rng.normal(size=(7, 2))
    post = P.gp_inference(k, y, k_tx, k_tt)
    kinv = np.linalg.inv(k)
    np.testing.assert_allclose(post.mean, k_tx @ kinv @ y, atol=1e-10)
    np.testing.assert_allclose(post.cov, k_tt - k_tx @ kinv @ k_tx.T, atol=1e-10)
    gp = P.gradient_descent_mse_gp(k, y, kind="nngp", learning_rate=0.5)
    out = gp(np.array([np.inf, 5000.0, 1.5]), k_tx, k_tt)
    np.testing.assert_allclose(out.mean[0], post.mean, atol=1e-10)
    np.testing.assert_allclose(out.cov[0], post.cov, atol=1e-10)
    np.testing.assert_allclose(out.mean[1], post.mean, atol=1e-6)
    e1, e2 = sla.expm(-0.5 * k * 1.5), sla.expm(-2 * 0.5 * k * 1.5)
    np.testing.assert_allclose(out.mean[2], k_tx @ kinv @ (np.eye(7) - e1) @ y, atol=1e-10)
    np.testing.assert_allclose(out.cov[2], k_tt - k_tx @ kinv @ (np.eye(7) - e2) @ k_tx.T,
                               atol=1e-10)


def test_ntk_gp_mean_and_covariance(rng):
    n, m = 6, 3
    kk, k_tx, k_tt = _joint_kernel(rng, n, m)
    th, th_tx, _ = _joint_kernel(rng, n, m)
    th, th_tx = th + 2 * kk, th_tx + 2 * k_tx  # an NTK dominates its NNGP
    y = rng.normal(size=(n, 1))
    eta, ts = 0.3, np.array([0.8, 4.0, np.inf])
    gp = P.gradient_descent_mse_gp(kk, y, ntk_train_train=th, kind="ntk", learning_rate=eta)
    out = gp(ts, k_tx, k_tt, th_tx)
    for i, t in enumerate(ts):
        e = np.zeros((n, n)) if np.isinf(t) else sla.expm(-eta * th * t)
        a = th_tx @ np.linalg.solve(th, np.eye(n) - e)  # eq. 14-16
        np.testing.assert_allclose(out.mean[i], a @ y, atol=1e-10)
        cov = k_tt + a @ kk @ a.T - a @ k_tx.T - k_tx @ a.T
        np.testing.assert_allclose(out.cov[i], cov, atol=1e-10)
    # t = 0: the prior
    out0 = gp(0.0, k_tx, k_tt, th_tx)
    np.testing.assert_allclose(out0.cov, k_tt, atol=1e-13)
    np.testing.assert_allclose(out0.mean, 0.0, atol=1e-13)


def test_predictors_are_jittable(rng):
    kk, k_tx, k_tt = _joint_kernel(rng, 5, 2)
    y = rng.normal(size=(5, 1))
    gp = P.gradient_descent_mse_gp(kk, y, ntk_train_train=2 * kk, kind="ntk")
    f = jax.jit(lambda t, a, b, c: gp(t, a, b, c))
    ts = jnp.array([1.0, jnp.inf])
    out = f(ts, k_tx, k_tt, 2 * k_tx)
    ref = gp(ts, k_tx, k_tt, 2 * k_tx)
    np.testing.assert_allclose(out.mean, ref.mean, atol=1e-13)
    dyn = P.gradient_descent_mse(kk, y, optimizer="momentum", momentum=0.5,
                                 learning_rate=P.eta_critical(kk))
    g = jax.jit(lambda t: dyn(t, 0.0, 0.0, k_tx)[1])
    np.testing.assert_allclose(g(jnp.array([3.0])), dyn(np.array([3.0]), 0.0, 0.0, k_tx)[1])


def test_ill_conditioned_kernel_warns_and_stays_finite(rng):
    k, k_tx, k_tt = _joint_kernel(rng, 8, 2, rank=3, jitter=0.0)  # rank 3 < 8: singular
    y = rng.normal(size=(8, 1))
    with pytest.warns(P.IllConditionedWarning, match="condition number"):
        dyn = P.gradient_descent_mse(k, y)
    ftr, fte = dyn(np.array([1.0, np.inf]), 0.0, 0.0, k_tx)
    assert np.all(np.isfinite(ftr)) and np.all(np.isfinite(fte))
    with pytest.warns(P.IllConditionedWarning):
        post = P.gp_inference(k, y, k_tx, k_tt)
    assert np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.cov))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.gp_inference(k, y, k_tx, k_tt, diag_reg=1e-4)  # regularised: no warning


def test_learning_rate_above_eta_critical_warns(rng):
    k, _, _ = _joint_kernel(rng, 5, 1)
    y = rng.normal(size=(5, 1))
    lam = np.linalg.eigvalsh(k)
    assert P.eta_critical(k) == pytest.approx(2 / (lam[0] + lam[-1]))
    with pytest.warns(P.LearningRateWarning, match="converges"):
        P.gradient_descent_mse(k, y, learning_rate=1.05 * P.eta_critical(k), optimizer="gd")
    with pytest.warns(P.LearningRateWarning, match="diverges"):
        P.gradient_descent_mse(k, y, learning_rate=2.1 / lam[-1], optimizer="gd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.gradient_descent_mse(k, y, learning_rate=10.0)  # gradient flow: any rate is fine
        P.gradient_descent_mse(k, y, learning_rate=0.9 * P.eta_critical(k), optimizer="gd")


@pytest.mark.parametrize("call, match", [
    (lambda k, y: P.gradient_descent_mse(k[:, :4], y), r"square matrix \(n, n\).*\(5, 4\)"),
    (lambda k, y: P.gradient_descent_mse(k, y[:3]), r"y_train: expected shape \(5, outputs\)"),
    (lambda k, y: P.gradient_descent_mse(k * np.nan, y), "NaN"),
    (lambda k, y: P.gradient_descent_mse(k, y, loss="avg"), "loss: expected one of"),
    (lambda k, y: P.gradient_descent_mse(k, y)(1.0, 0.0, 0.0, k[:, :3]),
     r"k_test_train: expected shape \(n_test, 5\)"),
    (lambda k, y: P.gradient_descent_mse(k, y, optimizer="gd")(1.5), "whole numbers"),
    (lambda k, y: P.gradient_descent_mse(k, y)(-1.0), "times >= 0"),
    (lambda k, y: P.gradient_descent_mse_gp(k, y, kind="ntk"), "ntk_train_train"),
])
def test_bad_inputs_raise_one_line_input_errors(rng, call, match):
    k, _, _ = _joint_kernel(rng, 5, 1)
    y = rng.normal(size=(5, 2))
    with pytest.raises(InputError, match=match) as e:
        call(k, y)
    assert "\n" not in str(e.value)


# -- input validation -----------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["gp_inference", "gradient_descent_mse", "gp_dynamics",
                                   "eta_critical"])
def test_grossly_asymmetric_kernel_is_refused_not_averaged(rng, entry):
    k, k_tx, _ = _joint_kernel(rng, 6, 3)
    y = rng.normal(size=(6, 2))
    bad = k.copy()
    bad[0, 4] += 0.5
    calls = {
        "gp_inference": lambda kk: P.gp_inference(kk, y, k_tx),
        "gradient_descent_mse": lambda kk: P.gradient_descent_mse(kk, y),
        "gp_dynamics": lambda kk: P.gradient_descent_mse_gp(kk, y, ntk_train_train=k),
        "eta_critical": lambda kk: P.eta_critical(kk),
    }
    with pytest.raises(InputError, match=r"expected a symmetric kernel, but \w+\[(0, 4|4, 0)\]"):
        calls[entry](bad)
    noisy = k + 1e-13 * rng.normal(size=k.shape)  # rounding-sized asymmetry is fine
    calls[entry](noisy)


def test_float32_kernel_rounding_is_accepted_in_float64(rng):
    k, k_tx, _ = _joint_kernel(rng, 6, 3)
    k32 = (k + 2e-7 * rng.normal(size=k.shape)).astype(np.float32)  # float32-sized asymmetry
    assert np.max(np.abs(k32 - k32.T)) > 1e-8 * np.max(np.abs(k32))
    P.gp_inference(k32, np.ones((6, 1)), k_tx)


def test_complex_targets_are_refused(rng):
    k, k_tx, _ = _joint_kernel(rng, 5, 2)
    y = rng.normal(size=(5, 1)) + 1j
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy ComplexWarning on the way
        with pytest.raises(InputError, match="y_train: expected real numbers, got a complex"):
            P.gp_inference(k, y, k_tx)
        with pytest.raises(InputError, match="y_train: expected real numbers"):
            P.gradient_descent_mse_gp(k, y, ntk_train_train=k)


def _advice(w) -> float:
    import re

    m = re.search(r"pass diag_reg=([0-9.e+-]+)", str(w.message))
    assert m, str(w.message)
    return float(m.group(1))


@pytest.mark.parametrize("dtype, base_reg", [("float32", 0.0), ("float32", 1e-6),
                                             ("float64", 0.0)])
def test_ill_conditioning_advice_is_computed_and_silences_the_warning(rng, dtype, base_reg):
    a = rng.normal(size=(40, 6))
    jitter = 1e-9 if dtype == "float32" else 1e-14
    k = a @ a.T / 6 + jitter * np.eye(40)  # rank 6 in 40 dimensions: far past the limit
    y = rng.normal(size=(40, 1))
    with pytest.warns(P.IllConditionedWarning) as rec:
        P.gradient_descent_mse(k, y, diag_reg=base_reg, dtype=dtype)
    advice = _advice(rec[0])
    assert advice > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", P.IllConditionedWarning)
        P.gradient_descent_mse(k, y, diag_reg=advice, dtype=dtype)  # following it silences it
        P.gp_inference(k, y, k[:3], diag_reg=advice, dtype=dtype)
    with pytest.warns(P.IllConditionedWarning):  # and it is not wildly more than needed
        P.gradient_descent_mse(k, y, diag_reg=advice / 50, dtype=dtype)


def test_diag_reg_advice_formula():
    lam = np.array([1e-12, 0.5, 10.0])
    r = P.diag_reg_advice(lam, mean_diag=2.0, condition_limit=400.0)
    shift = r * 2.0
    assert (lam[-1] + shift) / (lam[0] + shift) <= 100.0  # limit / margin 4
    assert (lam[-1] + shift * 0.98) / (lam[0] + shift * 0.98) > 100.0 * 0.97
    assert P.diag_reg_advice(np.array([1.0, 2.0]), 1.5, 400.0) == 0.0
    assert P.diag_reg_advice(lam, 0.0, 400.0) is None
