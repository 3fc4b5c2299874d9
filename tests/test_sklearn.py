"""ntkdsl.sklearn: scikit-learn's own estimator checks, Pipeline/GridSearchCV, and the
kernel's gradients and fits against independent computations."""

from __future__ import annotations

import importlib
import json
import math
import pickle
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.special import ndtr
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import ntkdsl
from ntkdsl import SpecError
from ntkdsl.sklearn import (
    NNGPClassifier,
    NNGPRegressor,
    NTKClassifier,
    NTKRegressor,
    SpecKernel,
    gram,
    vote_shares,
)

jax.config.update("jax_enable_x64", True)

# a one-hidden-layer ReLU net: every estimator check fits it many times, on inputs of
# any number of features (Input((-1,)))
SPEC = """net mlp(depth = 1, W = 1.5, b = 0.1) {
    Input((-1,))
    defaults W_std = W, b_std = b
    repeat depth { Dense(512); Relu }
    Dense(1)
}"""

# the same with two hidden layers written out, for the differentiable kernel
SPEC2 = """net relu2(W = 1.4, b = 0.3) {
    Input((-1,))
    defaults W_std = W, b_std = b
    Dense(512); Relu
    Dense(512); Relu
    Dense(1)
}"""

ESTIMATORS = [NNGPRegressor(SPEC), NTKRegressor(SPEC, time=20.0), NNGPClassifier(SPEC),
              NTKClassifier(SPEC, targets=(-0.1, 0.9))]

# the checks that fit nothing or fit once, run by default; every check runs with -m slow
FAST_CHECKS = {
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimators_unfitted",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_fit2d_predict1d", "check_n_features_in_after_fitting", "check_valid_tag_types",
}


def _check_params(fast: bool):
    mark = parametrize_with_checks(ESTIMATORS)
    names, params = mark.args
    out = []
    for p in params:
        values = p.values if hasattr(p, "values") else p
        check = values[1]
        name = getattr(check, "func", check).__name__
        if (name in FAST_CHECKS) == fast:
            out.append(p)
    return names, out, mark.kwargs.get("ids")


_names, _fast, _ids = _check_params(True)


@pytest.mark.parametrize(_names, _fast, ids=_ids)
def test_sklearn_checks_fast(estimator, check):
    check(estimator)


_names, _slow, _ids = _check_params(False)


@pytest.mark.slow
@pytest.mark.parametrize(_names, _slow, ids=_ids)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_the_split_covers_every_check():
    assert len(_fast) >= 4 * 8 and len(_slow) >= 4 * 30


# -- the estimators against the project's own prediction path --------------------------------

@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 4))
    y = np.stack([np.sin(x[:, 0]) + 0.3 * x[:, 1], np.cos(x[:, 2])], axis=1)
    return x[:30], y[:30], x[30:], y[30:]


@pytest.mark.parametrize("time", [math.inf, 3.0])
def test_ntk_regressor_is_the_ntk_gp_of_the_paper(data, time):
    # eq. 14-15 written out in numpy: A_t = Theta_tX Theta^-1 (1 - exp(-Theta t)),
    # mean A_t Y, cov K_tt + A_t K A_t^T - A_t K_Xt - K_tX A_t^T
    x, y, xt, _ = data
    reg = NTKRegressor(SPEC, overrides={"depth": 2}, time=time, diag_reg=1e-3).fit(x, y)
    k = ntkdsl.compile(SPEC, depth=2).kernel_fn(np.concatenate([x, xt]), None)
    n = len(x)
    th = k.ntk[:n, :n] + 1e-3 * np.trace(k.ntk[:n, :n]) / n * np.eye(n)
    lam, v = np.linalg.eigh(th)
    flow = np.ones_like(lam) if math.isinf(time) else -np.expm1(-lam * time)
    a = k.ntk[n:, :n] @ v @ np.diag(flow / lam) @ v.T
    kk, ktx = k.nngp[:n, :n], k.nngp[n:, :n]
    cov = k.nngp[n:, n:] + a @ kk @ a.T - a @ ktx.T - ktx @ a.T
    mean, std = reg.predict(xt, return_std=True)
    np.testing.assert_allclose(mean, a @ y, rtol=1e-8, atol=1e-10)
    # two targets: one std column per target (the same here: no normalize_y)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(std, np.stack([sd, sd], axis=1), rtol=1e-6, atol=1e-9)
    _, got = reg.predict(xt, return_cov=True)
    assert got.shape == (7, 7, 2)
    np.testing.assert_allclose(got[..., 1], cov, rtol=1e-6, atol=1e-9)


def test_nngp_regressor_at_finite_time_trains_the_readout(data):
    # readout-only gradient flow: mean K_tX V (1 - e^{-lam t}) / lam V^T Y,
    # cov K_tt - K_tX V (1 - e^{-2 lam t}) / lam V^T K_Xt (lam, V: eigen of K + reg)
    x, y, xt, _ = data
    t = 2.0
    reg = NNGPRegressor(SPEC, overrides={"depth": 2}, time=t, diag_reg=1e-3).fit(x, y[:, 1])
    k = ntkdsl.compile(SPEC, depth=2).kernel_fn(np.concatenate([x, xt]), None, "nngp")
    n = len(x)
    lam, v = np.linalg.eigh(k[:n, :n] + 1e-3 * np.trace(k[:n, :n]) / n * np.eye(n))
    p = k[n:, :n] @ v
    mean = p @ np.diag(-np.expm1(-lam * t) / lam) @ v.T @ y[:, 1]
    cov = k[n:, n:] - p @ np.diag(-np.expm1(-2 * lam * t) / lam) @ p.T
    got, std = reg.predict(xt, return_std=True)
    np.testing.assert_allclose(got, mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-6, atol=1e-9)


def test_nngp_regressor_is_the_gp_posterior(data):
    x, y, xt, _ = data
    reg = NNGPRegressor(SPEC, diag_reg=1e-2, normalize_y=True).fit(x, y[:, 0])
    model = ntkdsl.compile(SPEC)
    k = model.kernel_fn(x, None, "nngp")
    kt = model.kernel_fn(xt, x, "nngp")
    ktt = model.kernel_fn(xt, None, "nngp")
    a = k + 1e-2 * np.trace(k) / len(x) * np.eye(len(x))
    mu, sd = y[:, 0].mean(), y[:, 0].std()
    mean = kt @ np.linalg.solve(a, (y[:, 0] - mu) / sd) * sd + mu
    var = np.diag(ktt - kt @ np.linalg.solve(a, kt.T)) * sd**2
    got, std = reg.predict(xt, return_std=True)
    assert got.shape == (7,) and std.shape == (7,)
    np.testing.assert_allclose(got, mean, rtol=1e-9)
    np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-7)
    # rows predicted in any batch are the same (the rows are padded to shared sizes)
    np.testing.assert_allclose(reg.predict(xt[:3]), got[:3], rtol=1e-12)


def test_fitted_estimator_pickles_in_float64(data):
    x, y, xt, _ = data
    reg = NTKRegressor(SPEC).fit(x, y)
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(xt), reg.predict(xt))


def test_classifier_regresses_one_hot_targets(data):
    x, _, xt, _ = data
    labels = np.array(["a", "b", "c"])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)]
    clf = NTKClassifier(SPEC, targets=(-0.1, 0.9)).fit(x, labels)
    assert list(clf.classes_) == ["a", "b", "c"]
    onehot = np.where(labels[:, None] == clf.classes_[None], 0.9, -0.1)
    reg = NTKRegressor(SPEC).fit(x, onehot)
    np.testing.assert_allclose(clf.decision_function(xt), reg.predict(xt), rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(xt), clf.classes_[np.argmax(reg.predict(xt), 1)])
    votes = clf.predict_vote_proba(xt)
    np.testing.assert_allclose(votes.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[np.argmax(votes, axis=1)], clf.predict(xt))


def test_binary_decision_function_is_the_difference_of_the_outputs(data):
    x, _, xt, _ = data
    labels = (x[:, 0] > 0).astype(int)
    clf = NNGPClassifier(SPEC).fit(x, labels)
    d = clf.decision_function(xt)
    reg = NNGPRegressor(SPEC).fit(x, np.eye(2)[labels])
    m = reg.predict(xt)
    np.testing.assert_allclose(d, m[:, 1] - m[:, 0], rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(xt), (d > 0).astype(int))
    # two classes: the vote share of class 1 is P(f1 > f0) = Phi((m1 - m0) / (sd sqrt 2))
    _, sd = reg.predict(xt, return_std=True)
    np.testing.assert_allclose(clf.predict_vote_proba(xt)[:, 1],
                               ndtr(d / (sd[:, 0] * math.sqrt(2))), rtol=1e-9, atol=1e-12)


def test_vote_shares_against_sampling():
    rng = np.random.default_rng(1)
    mean = rng.standard_normal((4, 5)) * 0.5
    std = np.array([0.3, 1.0, 2.0, 0.05])
    draws = mean[None] + std[None, :, None] * rng.standard_normal((400_000, 4, 5))
    winner = np.argmax(draws, axis=2)
    empirical = np.stack([(winner == c).mean(axis=0) for c in range(5)], axis=1)
    # 400k draws: the binomial standard error is at most 0.0008
    np.testing.assert_allclose(vote_shares(mean, std), empirical, atol=0.004)


def test_vote_shares_without_spread_are_the_argmax():
    mean = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(vote_shares(mean, np.zeros(2)),
                                  [[0, 1, 0], [0.5, 0.5, 0]])


# -- parameters, overrides, specs -----------------------------------------------------------

def test_set_params_of_one_override_makes_a_new_dict():
    given = {"depth": 1, "W": 1.2}
    reg = NTKRegressor(SPEC, overrides=given)
    reg.set_params(overrides__depth=3, diag_reg=0.1)
    assert reg.overrides == {"depth": 3, "W": 1.2} and reg.diag_reg == 0.1
    assert given == {"depth": 1, "W": 1.2}
    assert clone(reg).get_params()["overrides"] == {"depth": 3, "W": 1.2}


def test_grid_search_over_depth_in_a_pipeline(data):
    x, y, _, _ = data
    y = y[:, 0]
    pipe = Pipeline([("scale", StandardScaler()), ("ntk", NTKRegressor(SPEC, diag_reg=1e-2))])
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(pipe, {"ntk__overrides__depth": [1, 4]}, cv=cv).fit(x, y)
    by_hand = {d: cross_val_score(clone(pipe).set_params(ntk__overrides={"depth": d}),
                                  x, y, cv=cv).mean() for d in (1, 4)}
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               [by_hand[1], by_hand[4]], rtol=1e-10)
    best = max(by_hand, key=by_hand.get)
    assert search.best_params_ == {"ntk__overrides__depth": best}
    assert search.best_estimator_["ntk"].overrides == {"depth": best}
    # the same grid written as whole override dicts
    dicts = GridSearchCV(pipe, {"ntk__overrides": [{"depth": 1}, {"depth": 4}]}, cv=cv)
    np.testing.assert_allclose(dicts.fit(x, y).cv_results_["mean_test_score"],
                               search.cv_results_["mean_test_score"], rtol=1e-12)


def test_spec_from_a_path_and_from_a_model(tmp_path, data):
    x, y, xt, _ = data
    path = tmp_path / "mlp.ntk"
    path.write_text(SPEC)
    expected = NNGPRegressor(SPEC).fit(x, y).predict(xt)
    for spec in (path, str(path), ntkdsl.compile(SPEC)):
        np.testing.assert_allclose(NNGPRegressor(spec).fit(x, y).predict(xt), expected,
                                   rtol=1e-12)


def test_bad_specs_and_parameters_fail_at_fit_with_clear_errors(data):
    x, y, _, _ = data
    with pytest.raises(SpecError, match="depht"):
        NTKRegressor(SPEC, overrides={"depht": 2}).fit(x, y)
    with pytest.raises(ValueError, match="neither spec text"):
        NTKRegressor("no/such/file.ntk").fit(x, y)
    with pytest.raises(ValueError, match="diag_reg"):
        NTKRegressor(SPEC, diag_reg=-1).fit(x, y)
    with pytest.raises(ValueError, match="time"):
        NTKRegressor(SPEC, time=-1.0).fit(x, y)
    with pytest.raises(ValueError, match="compiled Model"):
        NTKRegressor(ntkdsl.compile(SPEC), overrides={"depth": 2}).fit(x, y)


def test_a_declared_image_input_gets_each_row_reshaped():
    spec = """net cnn(W = 1.5) {
        Input((3, 3, 1))
        defaults W_std = W, b_std = 0.1
        Conv(4, (2, 2), padding = "SAME"); Relu; Flatten; Dense(1)
    }"""
    rng = np.random.default_rng(2)
    images = rng.standard_normal((10, 3, 3, 1))
    y = images.mean(axis=(1, 2, 3))
    reg = NTKRegressor(spec, diag_reg=0.0).fit(images[:7].reshape(7, 9), y[:7])
    th = ntkdsl.compile(spec).kernel_fn(images, None, "ntk")
    expected = th[7:, :7] @ np.linalg.solve(th[:7, :7], y[:7])
    np.testing.assert_allclose(reg.predict(images[7:].reshape(3, 9)), expected, rtol=1e-8)
    with pytest.raises(ValueError, match="declares"):
        NTKRegressor(spec).fit(images.reshape(10, 9)[:, :8], y)


# -- the kernel -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["nngp", pytest.param("ntk", marks=pytest.mark.slow)])
def test_spec_kernel_gradient_is_central_differences(kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 3))
    k = SpecKernel(SPEC2, kind=kind, params={"W": 1.3, "b": 0.2})
    value, grad = k(x, eval_gradient=True)
    assert grad.shape == (9, 9, 2)
    np.testing.assert_allclose(value, ntkdsl.compile(SPEC2, W=1.3, b=0.2).kernel_fn(x, None, kind),
                               rtol=1e-12)
    h = 1e-5
    for i in range(2):
        up, down = k.theta.copy(), k.theta.copy()
        up[i] += h
        down[i] -= h
        fd = (k.clone_with_theta(up)(x) - k.clone_with_theta(down)(x)) / (2 * h)
        # central differences are exact to O(h^2) ~ 1e-10 here, well below the 1e-6 asked
        np.testing.assert_allclose(grad[..., i], fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


def test_spec_kernel_fits_an_activation_constant_with_exact_gradients():
    spec = """net leaky(a = 0.2) {
        Input((-1,))
        defaults W_std = 1.5, b_std = 0.1
        Dense(512); LeakyRelu(alpha = a); Dense(1)
    }"""
    x = np.random.default_rng(7).standard_normal((6, 2))
    k = SpecKernel(spec, kind="ntk", params={"a": 0.3})
    value, grad = k(x, eval_gradient=True)
    np.testing.assert_allclose(value, ntkdsl.compile(spec, a=0.3).kernel_fn(x, None, "ntk"),
                               rtol=1e-12)
    h = 1e-5
    fd = (k.clone_with_theta(k.theta + h)(x) - k.clone_with_theta(k.theta - h)(x)) / (2 * h)
    np.testing.assert_allclose(grad[..., 0], fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())
    assert np.abs(fd).max() > 1e-3  # the constant matters


def test_gaussian_process_regressor_optimises_a_bare_spec_kernel():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 3))  # the shape of the gradient test: its compiled kernel
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1]
    start = SpecKernel(SPEC2, params={"W": 1.3, "b": 0.2})
    gpr = GaussianProcessRegressor(kernel=start, alpha=0.05).fit(x, y)
    fitted = gpr.kernel_.params
    assert set(fitted) == {"W", "b"} and fitted != start.params
    np.testing.assert_allclose(np.log([fitted["W"], fitted["b"]]), gpr.kernel_.theta)
    assert gpr.log_marginal_likelihood_value_ > gpr.log_marginal_likelihood(start.theta) + 1e-3
    # an interior optimum: the gradient there vanishes
    _, grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    inside = (gpr.kernel_.theta > gpr.kernel_.bounds[:, 0] + 1e-3) & (
        gpr.kernel_.theta < gpr.kernel_.bounds[:, 1] - 1e-3)
    assert np.all(np.abs(grad[inside]) < 1e-3)


def test_spec_kernel_hyperparameters_theta_bounds_clone():
    k = SpecKernel(SPEC2, params={"W": 1.3, "b": 0.2}, bounds={"b": "fixed"})
    assert [h.name for h in k.hyperparameters] == ["W", "b"]
    assert k.hyperparameters[1].fixed
    np.testing.assert_allclose(k.theta, [math.log(1.3)])
    np.testing.assert_allclose(k.bounds, [[math.log(1e-3), math.log(1e3)]])
    assert k.get_params()["bounds"] == {"b": "fixed"}
    c = clone(k)
    assert c == k and c.get_params()["params"] == {"W": 1.3, "b": 0.2}
    moved = k.clone_with_theta(np.log([2.0]))
    assert moved.params == {"W": 2.0, "b": 0.2} and k.params == {"W": 1.3, "b": 0.2}
    assert not k.is_stationary() and k.requires_vector_input
    x = np.random.default_rng(4).standard_normal((5, 2))
    np.testing.assert_allclose(k.diag(x), np.diag(k(x)), rtol=1e-12)
    assert "W=1.3" in repr(k)
    with pytest.raises(ValueError, match="0 < low < high"):
        _ = SpecKernel(SPEC2, params={"W": 1.0}, bounds=(0, 2)).hyperparameters


@pytest.mark.slow
def test_gaussian_process_regressor_fits_the_net_parameters_like_ntkdsl_fit(tmp_path):
    from ntkdsl.cli import main

    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 3))
    # targets drawn from the prior of a known net, plus noise
    truth = ntkdsl.compile(SPEC2, W=1.7, b=0.5).kernel_fn(x, None, "nngp")
    y = np.linalg.cholesky(truth + 0.05 * np.eye(40)) @ rng.standard_normal(40)
    # both start at the spec's defaults W = 1.4, b = 0.3 and a noise variance of 0.1
    kernel = SpecKernel(SPEC2, params={"W": 1.4, "b": 0.3}) + WhiteKernel(0.1)
    gpr = GaussianProcessRegressor(kernel=kernel, alpha=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence remarks of the optimiser
        gpr.fit(x, y)
    fitted = gpr.kernel_.k1.params
    noise = gpr.kernel_.k2.noise_level
    (tmp_path / "relu2.ntk").write_text(SPEC2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    rc = main(["fit", str(tmp_path / "relu2.ntk"), "--x-train", str(tmp_path / "x.npy"),
               "--y-train", str(tmp_path / "y.npy"), "--fit", "W,b,noise", "--noise", "0.1",
               "--out", str(tmp_path / "fit.json")])
    assert rc == 0
    ours = json.loads((tmp_path / "fit.json").read_text())
    assert ours["success"] and ours["kind"] == "nngp"
    # two L-BFGS-B runs (scikit-learn's in log space, ntkdsl fit's in the values) stop
    # within their tolerances of the same optimum
    np.testing.assert_allclose([fitted["W"], fitted["b"], noise],
                               [ours["params"]["W"], ours["params"]["b"], ours["noise"]],
                               rtol=2e-3)
    np.testing.assert_allclose(gpr.log_marginal_likelihood_value_, ours["value"], rtol=1e-6)


def test_gram_serves_svc_precomputed():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(int)
    train, test = slice(0, 30), slice(30, 40)
    svc = SVC(kernel="precomputed").fit(gram(SPEC, x[train]), labels[train])
    pred = svc.predict(gram(SPEC, x[test], x[train]))
    direct = SVC(kernel=SpecKernel(SPEC, kind="ntk")).fit(x[train], labels[train])
    np.testing.assert_array_equal(direct.predict(x[test]), pred)
    np.testing.assert_allclose(gram(SPEC, x[test], x[train], kind="nngp"),
                               ntkdsl.compile(SPEC).kernel_fn(x[test], x[train], "nngp"),
                               rtol=1e-12)


# -- the worked example (examples/fit_diabetes.py, docs/sklearn.md) -------------------------

ROOT = Path(__file__).resolve().parent.parent


def _example():
    if str(ROOT / "examples") not in sys.path:
        sys.path.insert(0, str(ROOT / "examples"))
    return importlib.import_module("fit_diabetes")


@pytest.mark.slow
def test_the_diabetes_example_fits_on_a_small_subset():
    ex = _example()
    x, y = load_diabetes(return_X_y=True)
    name = "NNGP, W, b, noise fitted"
    row = ex.evaluate(name, ex.models()[name], x[:40], y[:40], x[400:], y[400:])
    assert row["model"] == name and math.isfinite(row["test_rmse"])
    assert row["W"] > 0 and row["b"] > 0 and row["noise_std"] > 0
    assert math.isfinite(row["log_marginal_likelihood_per_point"])
    assert set(ex.models()) == {r["model"] for r in _recorded()["rows"]}


def _recorded() -> dict:
    return json.loads((ROOT / "docs" / "img" / "fit_diabetes.json").read_text())


def test_the_docs_show_the_numbers_the_example_wrote():
    rec = _recorded()
    assert rec["command"] == "python examples/fit_diabetes.py" and rec["n_train"] == 331
    assert rec["spec"] == _example().SPEC
    doc = (ROOT / "docs" / "sklearn.md").read_text()
    for r in rec["rows"]:
        line = next(ln for ln in doc.splitlines() if ln.startswith(r["model"] + " "))
        assert f"{r['test_rmse']:9.2f}".strip() in line.split()


@pytest.mark.slow
def test_the_diabetes_example_quick_run(tmp_path):
    rows = _example().main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "fit_diabetes.json").read_text())
    assert written["n_train"] == 80 and len(written["rows"]) == len(rows) == 5
    assert all(math.isfinite(r["test_rmse"]) for r in rows)
