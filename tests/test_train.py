"""Training a finite net and its linearisation (ntkdsl.training) against the closed forms."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl import InputError
from ntkdsl import predict as P
from ntkdsl.empirical import empirical_ntk
from ntkdsl.training import init_ensemble, train

SPEC = """
net mlp(width = 32, outputs = 1) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Erf()
    Dense(outputs, W_std = 1.5, b_std = 0.1)
}
"""


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    model = ntkdsl.compile(SPEC)
    x, xt = rng.normal(size=(6, 3)), rng.normal(size=(3, 3))
    y = rng.normal(size=(6, 1))
    params = model.init(jax.random.PRNGKey(0), (3,))
    return model, params, x, y, xt


@pytest.mark.parametrize("optimizer", ["gd", "momentum"])
def test_linearised_training_follows_the_closed_form(setup, optimizer):
    model, params, x, y, xt = setup
    theta = np.asarray(empirical_ntk(model.apply, params, x))  # one output: exact kernel
    theta_tx = np.asarray(empirical_ntk(model.apply, params, xt, x))
    eta = 0.5 * P.eta_critical(theta, momentum=0.9 if optimizer == "momentum" else 0.0)
    res = train(model, params, x, y, xt, optimizer=optimizer, learning_rate=eta, steps=60,
                record_every=20, momentum=0.9, ntk_points=0)
    np.testing.assert_array_equal(res.steps, [0, 20, 40, 60])
    dyn = P.gradient_descent_mse(theta, y, learning_rate=eta, optimizer=optimizer, momentum=0.9)
    f0, g0 = np.asarray(model.apply(params, x)), np.asarray(model.apply(params, xt))
    ftr, fte = dyn(res.steps, f0, g0, theta_tx)
    np.testing.assert_allclose(res.lin_fx_train, ftr, atol=1e-9)
    np.testing.assert_allclose(res.lin_fx_test, fte, atol=1e-9)
    np.testing.assert_allclose(res.lin_loss_train, 0.5 * np.sum((ftr - y) ** 2, axis=(1, 2)),
                               atol=1e-9)
    # eq. 8: the linearised net's weights moved by J^T c_t
    _, vjp_fn = jax.vjp(lambda p: model.apply(p, x), params)
    dw = dyn.weight_change(res.steps[-1], f0, vjp_fn=vjp_fn)
    got = jax.tree_util.tree_map(lambda a, b: a - b, res.lin_params, params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(dw)):
        np.testing.assert_allclose(a, b, atol=1e-9)
    # the finite net itself trains, from the same outputs as its linearisation
    assert res.loss_train[-1] < 0.2 * res.loss_train[0]
    assert res.rmse("test")[0] == 0 and np.all(np.isfinite(res.rmse("train")))


def test_records_and_ensemble_match_single_runs(setup):
    model, _, x, y, xt = setup
    ps = init_ensemble(model, jax.random.PRNGKey(3), (3,), 3)
    kw = dict(optimizer="gd", learning_rate=0.1, steps=10, record_every=4, ntk_points=4,
              watch=lambda p: p[0]["w"][0, :2])
    res = train(model, ps, x, y, xt, y[:3], ensemble=True, **kw)
    assert res.fx_train.shape == (3, 4, 6, 1) and res.fx_test.shape == (3, 4, 3, 1)
    np.testing.assert_array_equal(res.steps, [0, 4, 8, 10])
    assert res.weight_change.shape == (3, 4, len(res.param_names)) == (3, 4, 4)
    assert res.watched.shape == (3, 4, 2) and res.loss_test.shape == (3, 4)
    np.testing.assert_allclose(res.weight_change[:, 0], 0.0)
    np.testing.assert_allclose(res.ntk_change[:, 0], 0.0)
    assert np.all(res.ntk_change[:, -1] > 0) and np.all(res.weight_change[:, -1] > 0)
    one = train(model, jax.tree_util.tree_map(lambda a: a[1], ps), x, y, xt, y[:3], **kw)
    np.testing.assert_allclose(res.fx_test[1], one.fx_test, atol=1e-12)
    np.testing.assert_allclose(res.ntk_change[1], one.ntk_change, atol=1e-12)
    np.testing.assert_allclose(res.watched[1, 0], np.asarray(ps[0]["w"])[1, 0, :2])


@pytest.mark.slow
def test_sgd_and_cross_entropy(setup):
    _, _, x, _, _ = setup
    m2 = ntkdsl.compile(SPEC, outputs=3)
    p = m2.init(jax.random.PRNGKey(1), (3,))
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    full = train(m2, p, x, y, optimizer="gd", learning_rate=0.5, steps=5, ntk_points=0,
                 objective="cross_entropy", loss="mean")
    same = train(m2, p, x, y, optimizer="sgd", batch_size=6, learning_rate=0.5, steps=5,
                 ntk_points=0, objective="cross_entropy", loss="mean")
    np.testing.assert_allclose(full.fx_train, same.fx_train, atol=1e-12)
    sgd = train(m2, p, x, y, optimizer="sgd", batch_size=2, learning_rate=0.5, steps=40,
                record_every=40, ntk_points=0, objective="cross_entropy")
    assert sgd.loss_train[-1] < sgd.loss_train[0]
    assert sgd.lin_loss_train[-1] < sgd.lin_loss_train[0]


def test_bad_options(setup):
    model, params, x, y, _ = setup
    with pytest.raises(InputError, match="batch_size"):
        train(model, params, x, y, optimizer="sgd", learning_rate=0.1, steps=2)
    with pytest.raises(InputError, match="optimizer"):
        train(model, params, x, y, optimizer="adam", learning_rate=0.1, steps=2)
    with pytest.raises(InputError, match=r"y_train: expected shape \(6, outputs\)"):
        train(model, params, x, y[:4], learning_rate=0.1, steps=2)
