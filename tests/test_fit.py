"""Marginal likelihoods, cross-validation and fitting of trainable net parameters.

* ``log_marginal_likelihood`` equals scipy's multivariate normal log density of the
  targets under ``K + noise I`` (NNGP and NTK, several outputs), and its gradients
  with respect to the net parameters and the noise equal central finite
  differences; ``cross_validation_error`` equals the fold-by-fold numpy computation;
* the jitter policy: a singular kernel gets the smallest jitter that factorises it,
  reported and warned about; an indefinite matrix gives NaN with the jitter NaN;
* recovery: targets drawn from the NNGP prior of a net with ``W_std = 1.7`` and
  ``b_std = 0.3`` are fitted back to within 4 posterior standard deviations, the
  standard deviations computed here from the Hessian of the log likelihood at the
  fit (the Laplace approximation; asymptotically the maximum-likelihood estimate is
  normal around the true value with that covariance, so a 4-sd miss per parameter
  has probability ~6e-5). The standard deviations are also required to be small, so
  the check has teeth;
* the ``ntkdsl fit`` command end to end (exit 0, JSON, the ``--set`` line) and its
  one-line exit-2 errors.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import ntkdsl
from ntkdsl import InputError
from ntkdsl.cli import main
from ntkdsl.likelihood import JitterWarning, fold_indices, gaussian_log_density

SPEC = """net f(W = 1.0, b = 0.1) {
    Dense(512, W_std = W, b_std = b)
    Relu
    Dense(512, W_std = W, b_std = b)
    Relu
    Dense(1, W_std = W, b_std = b)
}
"""


@pytest.fixture(scope="module")
def model():
    return ntkdsl.compile(SPEC, trainable=("W", "b"))


def _data(n, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 3)
    y = np.stack([np.sin(x[:, 0]), np.cos(x[:, 1])], axis=1) + 0.1 * rng.randn(n, 2)
    return x, y


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_likelihood_is_the_gaussian_log_density(model, kind):
    x, y = _data(12)
    p = {"W": 1.3, "b": 0.2}
    k = ntkdsl.compile(SPEC, **p).kernel_fn(x, get=kind)
    cov = k + 0.05 * np.eye(12)
    want = sum(multivariate_normal(np.zeros(12), cov).logpdf(y[:, j]) for j in range(2))
    got, info = ntkdsl.log_marginal_likelihood(model, x, y, kind=kind, noise=0.05, params=p,
                                               return_info=True)
    assert got == pytest.approx(want, rel=1e-11)
    assert info.relative_jitter == 0.0 and info.outputs == 2 and info.n == 12
    # diag_reg is relative to the mean diagonal, as in gp_inference
    cov2 = k + (0.05 + 0.01 * np.trace(k) / 12) * np.eye(12)
    want2 = multivariate_normal(np.zeros(12), cov2).logpdf(y[:, 0])
    got2 = ntkdsl.log_marginal_likelihood(model, x, y[:, 0], kind=kind, noise=0.05,
                                          diag_reg=0.01, params=p)
    assert got2 == pytest.approx(want2, rel=1e-11)


def test_likelihood_of_a_model_without_trainable_parameters():
    x, y = _data(10)
    plain = ntkdsl.compile(SPEC, W=1.3)
    k = plain.kernel_fn(x, get="nngp") + 0.1 * np.eye(10)
    want = multivariate_normal(np.zeros(10), k).logpdf(y[:, 1])
    assert ntkdsl.log_marginal_likelihood(plain, x, y[:, 1], noise=0.1) == pytest.approx(
        want, rel=1e-11)


@pytest.mark.parametrize("kind", ["nngp", pytest.param("ntk", marks=pytest.mark.slow)])
def test_likelihood_gradients_match_finite_differences(model, kind):
    x, y = _data(12)
    p0 = {"W": 1.3, "b": 0.2, "noise": 0.05}

    def f(q):
        return ntkdsl.log_marginal_likelihood(
            model, x, y, kind=kind, noise=q["noise"], params={"W": q["W"], "b": q["b"]})

    g = jax.grad(f)({k: jnp.asarray(v) for k, v in p0.items()})
    for k in p0:
        h = 1e-5 * max(1.0, p0[k])
        hi, lo = dict(p0), dict(p0)
        hi[k] += h
        lo[k] -= h
        fd = (f(hi) - f(lo)) / (2 * h)
        assert float(g[k]) == pytest.approx(fd, rel=1e-6), k


def test_cross_validation_error_is_the_fold_by_fold_mean(model):
    x, y = _data(15)
    p = {"W": 1.2, "b": 0.3}
    k = ntkdsl.compile(SPEC, **p).kernel_fn(x, get="ntk")
    err, count = 0.0, 0
    for train, held in fold_indices(15, 3, seed=4):
        a = k[np.ix_(train, train)] + 0.02 * np.eye(len(train))
        mean = k[np.ix_(held, train)] @ np.linalg.solve(a, y[train])
        err += np.sum((mean - y[held]) ** 2)
        count += y[held].size
    got = ntkdsl.cross_validation_error(model, x, y, kind="ntk", folds=3, noise=0.02,
                                        params=p, seed=4)
    assert got == pytest.approx(err / count, rel=1e-10)
    folds = fold_indices(15, 3, seed=4)
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(15))


@pytest.mark.slow
def test_cross_validation_gradient_matches_finite_differences(model):
    x, y = _data(15)

    def f(w):
        return ntkdsl.cross_validation_error(model, x, y, folds=3, noise=0.02,
                                             params={"W": w})

    g = float(jax.grad(f)(1.2))
    fd = (f(1.2 + 1e-5) - f(1.2 - 1e-5)) / 2e-5
    assert g == pytest.approx(fd, rel=1e-6)


def test_jitter_policy(model):
    x, y = _data(8)
    xd, yd = np.concatenate([x, x]), np.concatenate([y, y])  # a singular kernel
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, info = ntkdsl.log_marginal_likelihood(model, xd, yd, return_info=True)
    assert np.isfinite(value)
    assert info.relative_jitter > 0 and info.jitter > 0
    assert any(issubclass(w.category, JitterWarning) for w in caught)
    # with a noise variance no jitter is needed
    _, info = ntkdsl.log_marginal_likelihood(model, xd, yd, noise=1e-3, return_info=True)
    assert info.relative_jitter == 0.0
    # an indefinite matrix: no jitter helps; traced, the value and the jitter are NaN
    a = jnp.asarray([[1.0, 2.0], [2.0, 1.0]])
    value, _, relative = jax.jit(lambda a: gaussian_log_density(a, jnp.ones((2, 1))))(a)
    assert np.isnan(float(relative)) and np.isnan(float(value))


def test_bad_arguments(model):
    x, y = _data(6)
    with pytest.raises(InputError, match="kind"):
        ntkdsl.log_marginal_likelihood(model, x, y, kind="gp")
    with pytest.raises(InputError, match="noise"):
        ntkdsl.log_marginal_likelihood(model, x, y, noise=-1.0)
    with pytest.raises(InputError, match="shape"):
        ntkdsl.log_marginal_likelihood(model, x, y[:4])
    with pytest.raises(InputError, match="folds"):
        ntkdsl.cross_validation_error(model, x, y, folds=1)
    with pytest.raises(InputError, match="not a trainable"):
        ntkdsl.fit_hyperparameters(model, x, y, fit="W,width")


def _prior_targets(model, n, seed, noise):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4)
    k = np.asarray(model.kernel_fn(x, get="nngp", params={"W": 1.7, "b": 0.3}))
    y = np.linalg.cholesky(k + noise * np.eye(n)) @ rng.randn(n)
    return x, y


def _hessian_sd(model, x, y, at, noise):
    """Laplace standard deviations: the Hessian of -log p(y) by central differences
    of its exact gradient."""
    def grad(v):
        g = jax.grad(lambda q: -ntkdsl.log_marginal_likelihood(
            model, x, y, noise=noise, params={"W": q[0], "b": q[1]}))(jnp.asarray(v))
        return np.asarray(g)

    h = np.empty((2, 2))
    for j in range(2):
        e = np.zeros(2)
        e[j] = 1e-4
        h[:, j] = (grad(at + e) - grad(at - e)) / 2e-4
    h = (h + h.T) / 2
    np.linalg.cholesky(h)  # a maximum: positive definite
    return np.sqrt(np.diag(np.linalg.inv(h)))


def _recovery(model, n, sd_max):
    noise = 0.01
    x, y = _prior_targets(model, n, seed=0, noise=noise)
    result = ntkdsl.fit_hyperparameters(model, x, y, fit=("W", "b"), noise=noise)
    assert result.success, result.message
    got = np.array([result.params["W"], result.params["b"]])
    sd = _hessian_sd(model, x, y, got, noise)
    assert np.all(sd < sd_max), sd
    assert np.all(np.abs(got - [1.7, 0.3]) <= 4 * sd), (got, sd)
    # the fit's own Laplace estimate agrees with the one computed here
    np.testing.assert_allclose([result.laplace_sd["W"], result.laplace_sd["b"]], sd, rtol=1e-2)
    assert result.value >= result.initial_value
    return result


def test_recovery_of_prior_hyperparameters_small(model):
    _recovery(model, 120, sd_max=np.array([0.15, 0.25]))


@pytest.mark.slow
def test_recovery_of_prior_hyperparameters_n500(model):
    _recovery(model, 500, sd_max=np.array([0.06, 0.1]))


@pytest.mark.slow
def test_fit_noise_and_cv_objective(model):
    noise = 0.01
    x, y = _prior_targets(model, 150, seed=1, noise=noise)
    r = ntkdsl.fit_hyperparameters(model, x, y, fit="W,b,noise")
    assert r.success and r.fitted == ("W", "b", "noise")
    assert abs(r.noise - noise) <= 4 * r.laplace_sd["noise"]
    cv = ntkdsl.fit_hyperparameters(model, x, y, fit="W", objective="cv", folds=3,
                                    noise=noise, kind="ntk")
    assert cv.value <= cv.initial_value and cv.laplace_sd is None


# -- the command line -------------------------------------------------------------------

@pytest.fixture()
def files(tmp_path):
    spec = tmp_path / "net.ntk"
    spec.write_text("net f(W = 1.0, b = 0.1, width = 64) {\n    Dense(width, W_std = W, "
                    "b_std = b)\n    Relu\n    Dense(1, W_std = W, b_std = b)\n}\n")
    rng = np.random.RandomState(2)
    x = rng.randn(30, 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.sin(x[:, 0]) + 0.1 * rng.randn(30))
    return tmp_path


def test_cli_fit_end_to_end(files, capsys):
    out = files / "r.json"
    rc = main(["fit", str(files / "net.ntk"), "--x-train", str(files / "x.npy"),
               "--y-train", str(files / "y.npy"), "--fit", "W,b,noise", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    record = json.loads(out.read_text())
    assert record["success"] and record["fitted"] == ["W", "b", "noise"]
    assert "iter" in captured.err and "log-lik" in captured.err  # the progress table
    line = captured.out.strip().splitlines()[-1]
    sets = dict(item.split("=") for item in line.split("#")[0].split("--set") if item.strip())
    sets = {k.strip(): float(v) for k, v in sets.items()}
    assert sets == pytest.approx({k: record["params"][k] for k in ("W", "b")}, rel=1e-9)
    # the fitted log likelihood is the one the library computes at those values
    model = ntkdsl.compile_file(files / "net.ntk", trainable=("W", "b"))
    lml = ntkdsl.log_marginal_likelihood(model, np.load(files / "x.npy"),
                                         np.load(files / "y.npy"), noise=record["noise"],
                                         params=record["params"])
    assert lml == pytest.approx(record["value"], rel=1e-9)
    # the --set line works with the other commands
    rc = main(["kernel", str(files / "net.ntk"), "--x1", str(files / "x.npy"),
               "-o", str(files / "k.npz"), *line.split("#")[0].split()])
    assert rc == 0


@pytest.mark.parametrize("extra,message", [
    (["--fit", "width"], "cannot set Dense's 'out'"),
    (["--fit", "Q"], "no parameter 'Q'"),
    (["--fit", "W,,b"], "comma-separated"),
    (["--fit", "W", "--noise", "-1"], "--noise"),
    (["--fit", "W", "--set", "W=2"], "--set W"),
])
def test_cli_fit_errors(files, capsys, extra, message):
    rc = main(["fit", str(files / "net.ntk"), "--x-train", str(files / "x.npy"),
               "--y-train", str(files / "y.npy"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err


def test_cli_fit_rejects_mismatched_targets(files, capsys):
    np.save(files / "y2.npy", np.zeros(7))
    rc = main(["fit", str(files / "net.ntk"), "--x-train", str(files / "x.npy"),
               "--y-train", str(files / "y2.npy"), "--fit", "W"])
    assert rc == 2 and "--y-train" in capsys.readouterr().err
