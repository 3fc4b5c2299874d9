"""scikit-learn estimators and a scikit-learn kernel for a spec's infinitely wide net.

* :class:`NNGPRegressor` / :class:`NTKRegressor`: the infinite-width predictive
  distribution of the spec's net (Lee et al. 2019, eq. 13-16) as a regressor:
  ``fit`` computes the train kernel, ``predict`` the mean at training time
  ``time`` (``inf``: the end of gradient flow), ``predict(X, return_std=True)``
  its standard deviation, like ``GaussianProcessRegressor``.
* :class:`NNGPClassifier` / :class:`NTKClassifier`: the same regression on
  one-hot targets (as the paper trains classifiers with the MSE loss);
  ``predict`` is the argmax of the mean, ``decision_function`` the mean, and
  ``predict_vote_proba`` the probability that each class has the largest
  output (see its docstring: why softmax of the mean is not offered).
* :class:`SpecKernel`: a ``sklearn.gaussian_process.kernels.Kernel`` whose
  hyperparameters are net parameters of the spec (say ``W`` and ``b`` of
  ``net mlp(W = 1.5, b = 0.1)``), with exact gradients, so
  ``GaussianProcessRegressor(kernel=SpecKernel(...))`` fits them by marginal
  likelihood; :func:`gram` gives matrices for ``SVC(kernel="precomputed")``.

Every estimator takes the spec (its text, a path to a ``.ntk`` file, or a
compiled :class:`ntkdsl.Model`) first and only explicit keyword parameters, so
``get_params``/``set_params``, ``clone``, ``Pipeline`` and ``GridSearchCV`` work
as for any scikit-learn estimator. A grid over the spec's own parameters is a
grid over ``overrides``: either whole dicts (``{"overrides": [{"depth": 1},
{"depth": 3}]}``) or one parameter at a time (``{"overrides__depth": [1, 3]}``).

Inputs are the rows of a 2-D array ``(n_samples, n_features)``: a spec whose
``Input`` is ``(-1,)`` (or that has no ``Input``) takes any number of
features; a spec that declares a fixed multi-axis ``Input((8, 8, 1))`` gets
each row reshaped to it. See ``docs/sklearn.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "NNGPClassifier",
    "NNGPRegressor",
    "NTKClassifier",
    "NTKRegressor",
    "SpecKernel",
    "gram",
]

#: rows of a batch are padded up to one of a few sizes (see :func:`_bucket`), so that
#: cross-validation folds and prediction batches of nearby sizes share one compiled
#: kernel function instead of compiling one per size (about half a second each)
_PAD_UP_TO = 4096
#: rows per block when only the diagonal of a test kernel is needed
_DIAG_BLOCK = 256
_LOSSES = ("total", "mean")


# -- the spec -------------------------------------------------------------------------------

def _compile(spec, net: str | None, overrides: dict | None, trainable: tuple[str, ...] = ()):
    """A :class:`ntkdsl.Model` from spec text, a path or a model (with ``overrides``)."""
    from .model import Model, compile, compile_file

    overrides = {} if overrides is None else dict(overrides)
    extra = {"trainable": trainable} if trainable else {}
    if isinstance(spec, Model):
        if overrides or net is not None or trainable:
            raise ValueError("spec: a compiled Model takes no net, overrides or trainable "
                             "parameters; pass the spec's text or path instead")
        return spec
    if isinstance(spec, os.PathLike):
        return compile_file(spec, net=net, **extra, **overrides)
    if not isinstance(spec, str):
        raise ValueError(f"spec: expected the spec's text, a path to a .ntk file or an "
                         f"ntkdsl.Model, got {type(spec).__name__}")
    if "\n" not in spec and "{" not in spec:
        if Path(spec).is_file():
            return compile_file(spec, net=net, **extra, **overrides)
        raise ValueError(f"spec: {spec!r} is neither spec text (no 'net ... {{ }}') nor an "
                         f"existing file")
    return compile(spec, net=net, **extra, **overrides)


def _row_shape(model, n_features: int) -> tuple[int, ...]:
    """The per-input shape the rows of a 2-D ``X`` are reshaped to for this net."""
    declared = getattr(model.net, "input_shape", None)
    if declared is None or len(declared) <= 1 or any(d == -1 for d in declared):
        return (n_features,)
    if math.prod(declared) != n_features:
        raise ValueError(f"X has {n_features} features, but net '{model.net.name}' declares "
                         f"Input({tuple(declared)}), which has {math.prod(declared)} entries "
                         "per row")
    return tuple(declared)


def _bucket(n: int) -> int:
    """``n`` rounded up to at most 8 sizes per octave (at least 32); ``n`` itself if large."""
    if n > _PAD_UP_TO:
        return n
    if n <= 32:
        return 32
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def _pad(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    # distinct filler rows: the kernel function computes each distinct row once, so
    # repeated filler would shrink the batch back to a size of its own
    if n == len(x):
        return x
    filler = np.random.default_rng(seed).standard_normal((n - len(x), *x.shape[1:]))
    return np.concatenate([x, filler])


def _kernels(model, x1: np.ndarray, x2: np.ndarray | None, gets: tuple[str, ...]) -> dict:
    """``{name: (n1, n2) array}`` of the analytic kernels, rows padded to a bucket size."""
    n1 = len(x1)
    k = model.kernel_fn(_pad(x1, _bucket(n1), 1),
                        None if x2 is None else _pad(x2, _bucket(len(x2)), 2), gets)
    n2 = n1 if x2 is None else len(x2)
    return {g: np.asarray(getattr(k, g))[:n1, :n2] for g in gets}


# -- the estimators -----------------------------------------------------------------------

def _as_numpy(obj):
    """A frozen dataclass with every jax array in it (recursively) replaced by numpy's.

    A jax array unpickles in the precision of the unpickling process (float32 unless
    x64 is on there), so fitted state is kept in numpy arrays.
    """
    import jax

    if isinstance(obj, jax.Array):
        return np.asarray(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _as_numpy(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


@dataclass(frozen=True)
class _Fitted:
    """What ``fit`` keeps: the compiled model, the train inputs and the dynamics."""

    model: Any
    x_train: np.ndarray
    row_shape: tuple[int, ...]
    dynamics: Any  # ntkdsl.predict.GPDynamics


class _SpecGP(BaseEstimator):
    """The shared machinery: kernels of the spec, the predictive distribution at ``time``."""

    _kind = "ntk"

    def _check_params(self) -> None:
        if not (isinstance(self.time, int | float | np.floating | np.integer)
                and not isinstance(self.time, bool) and self.time >= 0):
            raise ValueError(f"time: expected a number >= 0 (inf: the end of training), "
                             f"got {self.time!r}")
        if not (isinstance(self.diag_reg, int | float | np.floating | np.integer)
                and math.isfinite(self.diag_reg) and self.diag_reg >= 0):
            raise ValueError(f"diag_reg: expected a finite number >= 0, got {self.diag_reg!r}")
        if not (isinstance(self.learning_rate, int | float | np.floating | np.integer)
                and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate: expected a finite number > 0, "
                             f"got {self.learning_rate!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(_LOSSES)}, got {self.loss!r}")
        if self.overrides is not None and not isinstance(self.overrides, dict):
            raise ValueError(f"overrides: expected a dict of the net's parameters or None, "
                             f"got {type(self.overrides).__name__}")

    def set_params(self, **params):
        """Set parameters; ``overrides__NAME=value`` sets one of the spec's parameters.

        Arguments:
            **params: estimator parameters, and ``overrides__NAME`` keys, each of
                which replaces (in a new dict) the entry ``NAME`` of ``overrides``.

        Returns:
            The estimator.
        """
        spec_values = {k[len("overrides__"):]: params.pop(k)
                       for k in [k for k in params if k.startswith("overrides__")]}
        super().set_params(**params)
        if spec_values:
            self.overrides = {**(self.overrides or {}), **spec_values}
        return self

    def _gets(self) -> tuple[str, ...]:
        return ("nngp", "ntk") if self._kind == "ntk" else ("nngp",)

    def _fit_targets(self, X, y_matrix: np.ndarray) -> None:
        from .predict import gradient_descent_mse_gp

        self._check_params()
        model = _compile(self.spec, self.net, self.overrides)
        row_shape = _row_shape(model, X.shape[1])
        x = X.reshape(len(X), *row_shape)
        k = _kernels(model, x, None, self._gets())
        dyn = gradient_descent_mse_gp(k["nngp"], y_matrix, ntk_train_train=k.get("ntk"),
                                      kind=self._kind, learning_rate=self.learning_rate,
                                      diag_reg=self.diag_reg, loss=self.loss,
                                      solver="dense")
        self.fitted_ = _Fitted(model, x, row_shape, _as_numpy(dyn))

    def _moments(self, X, *, std: bool = False, cov: bool = False):
        """Mean ``(m, k)`` and, as asked, the std ``(m,)`` or covariance ``(m, m)``."""
        f = self.fitted_
        x = X.reshape(len(X), *f.row_shape)
        k = _kernels(f.model, x, f.x_train, self._gets())
        ntk = k.get("ntk")
        t = float(self.time)
        if cov:
            ktt = _kernels(f.model, x, None, ("nngp",))["nngp"]
            g = f.dynamics(t, k["nngp"], ktt, ntk)
            return np.asarray(g.mean), np.asarray(g.cov)
        mean = np.asarray(f.dynamics(t, k["nngp"], None, ntk).mean)
        if not std:
            return mean, None
        # the variance of a row needs only its own prior variance and test-train row:
        # in blocks of rows, the test-test kernel is never more than one block square
        var, prior = np.empty(len(x)), np.empty(len(x))
        for i in range(0, len(x), _DIAG_BLOCK):
            sl = slice(i, i + _DIAG_BLOCK)
            kd = _kernels(f.model, x[sl], None, ("nngp",))["nngp"]
            g = f.dynamics(t, k["nngp"][sl], kd, None if ntk is None else ntk[sl])
            var[sl], prior[sl] = np.diag(np.asarray(g.cov)), np.diag(kd)
        if np.any(var < -1e-6 * prior):
            raise ValueError("the predictive variance came out negative beyond rounding "
                             f"(smallest {var.min():.3g}): the train kernel is too "
                             "ill-conditioned; raise diag_reg")
        return mean, np.sqrt(np.maximum(var, 0))


_COMMON_DOC = """
    Arguments:
        spec: the spec's text, a path to a ``.ntk`` file, or a compiled
            :class:`ntkdsl.Model` (then ``net`` and ``overrides`` must be ``None``).
        net: which net of the file, when it holds several.
        overrides: ``{name: value}`` for the net's parameters (``{"depth": 3}``);
            ``set_params(overrides__depth=3)`` sets one entry.
        time: the training time ``t`` of gradient flow (``inf``: converged, the
            default). For the NNGP, only the readout layer is trained (at ``inf``:
            the exact GP posterior).
        diag_reg: relative regulariser of the inverted train kernel: ``diag_reg *
            trace(K) / n`` is added to its diagonal (an observation-noise variance
            of ``diag_reg`` times the mean prior variance).
        learning_rate: ``eta`` of gradient flow (matters at finite ``time`` only).
        loss: ``"total"`` (``sum 1/2 |f - y|^2``, the paper's) or ``"mean"``
            (divided by ``y.size``), which scales the time axis.
"""


_NORMALIZE_DOC = """        normalize_y: subtract the targets' mean and divide by their std
            before fitting (undone in ``predict``), like ``GaussianProcessRegressor``.
"""


class _Regressor(RegressorMixin, _SpecGP):
    def __init__(self, spec, *, net=None, overrides=None, time=math.inf, diag_reg=1e-4,
                 learning_rate=1.0, loss="total", normalize_y=False):
        self.spec = spec
        self.net = net
        self.overrides = overrides
        self.time = time
        self.diag_reg = diag_reg
        self.learning_rate = learning_rate
        self.loss = loss
        self.normalize_y = normalize_y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Compute the train kernel(s) and the predictive distribution.

        Arguments:
            X: ``(n_samples, n_features)`` inputs.
            y: ``(n_samples,)`` or ``(n_samples, n_targets)`` targets.

        Returns:
            The estimator.
        """
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=np.float64)
        y = np.asarray(y, np.float64)
        y2 = y.reshape(len(y), -1)
        if self.normalize_y:
            self._y_mean = y2.mean(axis=0)
            sd = y2.std(axis=0)
            self._y_std = np.where(sd > 0, sd, 1.0)
        else:
            self._y_mean, self._y_std = np.zeros(y2.shape[1]), np.ones(y2.shape[1])
        self._y_1d = y.ndim == 1
        self._fit_targets(X, (y2 - self._y_mean) / self._y_std)
        return self

    def predict(self, X, return_std=False, return_cov=False):
        """The predictive mean at ``time``; optionally its std or covariance.

        The std and covariance are those of the latent outputs (no observation
        noise), as ``GaussianProcessRegressor`` returns them: for the NTK-GP
        the spread over random initialisations of the trained infinitely wide
        net, for the NNGP the posterior's.

        Arguments:
            X: ``(n, n_features)``.
            return_std: also return the standard deviation: ``(n,)`` for a 1-D
                ``y``, ``(n, n_targets)`` for a 2-D one (as ``GaussianProcessRegressor``;
                the columns differ only by ``normalize_y``'s scales).
            return_cov: also return the covariance, ``(n, n)`` or ``(n, n, n_targets)``
                (not with ``return_std``).

        Returns:
            ``mean`` shaped like ``y`` was (``(n,)`` or ``(n, n_targets)``), and the
            std or covariance when asked.
        """
        if return_std and return_cov:
            raise ValueError("at most one of return_std or return_cov can be requested")
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        mean, spread = self._moments(X, std=return_std, cov=return_cov)
        mean = mean * self._y_std + self._y_mean
        if self._y_1d:
            mean = mean[:, 0]
        if not (return_std or return_cov):
            return mean
        if self._y_1d:
            scale = self._y_std[0]
            return mean, (spread * scale if return_std else spread * scale**2)
        # several targets: one std (covariance) per target, as GaussianProcessRegressor
        return mean, (spread[:, None] * self._y_std if return_std
                      else spread[..., None] * self._y_std**2)


class NNGPRegressor(_Regressor):
    __doc__ = ("""Regression by the NNGP kernel of a spec's infinitely wide net.

    The readout-trained (or Bayesian, at ``time=inf``) infinite-width net:
    ``predict`` is ``K(x, X) K(X, X)^{-1} y`` with the regulariser, its std the
    GP posterior's.
""" + _COMMON_DOC + _NORMALIZE_DOC + """

    Attributes (after ``fit``):
        fitted_: the compiled model, the train inputs and the predictive dynamics.
        n_features_in_: the number of features.
""")

    _kind = "nngp"


class NTKRegressor(_Regressor):
    __doc__ = ("""Regression by the NTK-GP of a spec's infinitely wide net (eq. 14-16).

    The whole infinitely wide net trained by gradient flow on the MSE loss for
    time ``time``: ``predict`` is the mean over random initialisations, its std
    their spread.
""" + _COMMON_DOC + _NORMALIZE_DOC + """

    Attributes (after ``fit``):
        fitted_: the compiled model, the train inputs and the predictive dynamics.
        n_features_in_: the number of features.
""")

    _kind = "ntk"


# -- classifiers ------------------------------------------------------------------------

_NODES = 64


def vote_shares(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``P(argmax_j f_j = c)`` for independent ``f_j ~ N(mean_j, std^2)``, per row.

    With ``e_c`` the standard normal noise of class ``c``:
    ``P(c) = E[prod_{j != c} Phi((mean_c - mean_j) / std + e_c)]``, a 1-D Gaussian
    expectation computed with 64 Gauss-Hermite nodes (the integrand is smooth on
    the scale of the node spacing for any ratio of means to std). A row with
    ``std == 0`` gets the indicator of its argmax (ties shared).

    Arguments:
        mean: ``(m, k)`` means; std: ``(m,)`` the common standard deviation.

    Returns:
        ``(m, k)`` probabilities, each row summing to 1.
    """
    from scipy.special import log_ndtr

    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    m, k = mean.shape
    z, w = np.polynomial.hermite_e.hermegauss(_NODES)
    w = w / w.sum()
    scale = np.max(np.abs(mean), axis=1, initial=0.0)
    zero = std <= 1e-12 * np.maximum(scale, 1e-300)
    s = np.where(zero, 1.0, std)
    out = np.empty((m, k))
    off = ~np.eye(k, dtype=bool)
    for i in range(0, m, 256):
        d = (mean[i:i + 256, :, None] - mean[i:i + 256, None, :]) / s[i:i + 256, None, None]
        lp = log_ndtr(d[..., None] + z) * off[None, :, :, None]  # (b, c, j, nodes)
        out[i:i + 256] = np.exp(lp.sum(axis=2)) @ w
    top = mean == mean.max(axis=1, keepdims=True)
    out[zero] = top[zero] / top[zero].sum(axis=1, keepdims=True)
    return out / out.sum(axis=1, keepdims=True)


class _Classifier(ClassifierMixin, _SpecGP):
    def __init__(self, spec, *, net=None, overrides=None, time=math.inf, diag_reg=1e-4,
                 learning_rate=1.0, loss="total", targets=(0.0, 1.0)):
        self.spec = spec
        self.net = net
        self.overrides = overrides
        self.time = time
        self.diag_reg = diag_reg
        self.learning_rate = learning_rate
        self.loss = loss
        self.targets = targets

    def fit(self, X, y):
        """Regress the one-hot encoding of the labels.

        Arguments:
            X: ``(n_samples, n_features)``; y: ``(n_samples,)`` class labels (at least 2).

        Returns:
            The estimator.
        """
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        try:
            off, on = (float(v) for v in self.targets)
        except (TypeError, ValueError):
            raise ValueError(f"targets: expected (value for other classes, value for the "
                             f"true class), got {self.targets!r}") from None
        if not (math.isfinite(off) and math.isfinite(on) and on != off):
            raise ValueError(f"targets: expected two different finite numbers, "
                             f"got {self.targets!r}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"a classifier needs at least 2 classes in y, got 1 class "
                             f"({self.classes_[0]!r})")
        onehot = np.full((len(y), len(self.classes_)), off)
        onehot[np.arange(len(y)), codes] = on
        self._fit_targets(X, onehot)
        return self

    def decision_function(self, X):
        """The predictive mean of the one-hot outputs.

        Arguments:
            X: ``(n, n_features)``.

        Returns:
            ``(n, n_classes)`` means; with two classes ``(n,)``, the mean of the
            second class's output minus the first's (positive: ``classes_[1]``).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        mean, _ = self._moments(X)
        return self._decision(mean)

    def _decision(self, mean):
        sign = 1.0 if self.targets[1] > self.targets[0] else -1.0
        if mean.shape[1] == 2:
            return sign * (mean[:, 1] - mean[:, 0])
        return sign * mean

    def predict(self, X):
        """The class whose output has the largest predictive mean.

        Arguments:
            X: ``(n, n_features)``.

        Returns:
            ``(n,)`` labels from ``classes_``.
        """
        d = self.decision_function(X)
        idx = (d > 0).astype(int) if d.ndim == 1 else np.argmax(d, axis=1)
        return self.classes_[idx]

    def predict_vote_proba(self, X):
        """Probability that each class has the largest output: a vote share, not softmax.

        Softmax of the mean is not offered: the outputs are regressed on one-hot
        targets with the MSE loss, so the mean is no logit and its softmax is no
        probability of anything. What the model does give is a Gaussian
        distribution of the outputs: independent across classes with a common
        variance. This method returns, under that distribution, the probability
        that class ``c``'s output is the largest, i.e. the share of the votes of
        class ``c`` among an infinite ensemble of independently initialised wide
        nets trained for ``time`` (NTK) or of posterior samples (NNGP). It is a
        probability of the ensemble's vote, not a calibrated probability of the
        label (calibrate it, or ``decision_function``, with
        ``sklearn.calibration.CalibratedClassifierCV`` for that). Its argmax is
        ``predict``'s choice.

        Arguments:
            X: ``(n, n_features)``.

        Returns:
            ``(n, n_classes)`` probabilities, rows summing to 1.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        mean, std = self._moments(X, std=True)
        if self.targets[1] < self.targets[0]:
            mean = -mean
        return vote_shares(mean, std)


class NNGPClassifier(_Classifier):
    __doc__ = ("""Classification by NNGP regression on one-hot targets.
""" + _COMMON_DOC + """        targets: ``(other, true)``: the values of the one-hot targets (Lee et
            al. 2018 use ``(-0.1, 0.9)``); ``predict`` does not depend on them.

    Attributes (after ``fit``):
        classes_: the labels, sorted; fitted_: the model, train inputs and dynamics.
""")

    _kind = "nngp"


class NTKClassifier(_Classifier):
    __doc__ = ("""Classification by NTK-GP regression on one-hot targets (eq. 14-16).
""" + _COMMON_DOC + """        targets: ``(other, true)``: the values of the one-hot targets (Lee et
            al. 2018 use ``(-0.1, 0.9)``); ``predict`` does not depend on them.

    Attributes (after ``fit``):
        classes_: the labels, sorted; fitted_: the model, train inputs and dynamics.
""")

    _kind = "ntk"


# -- a scikit-learn kernel ------------------------------------------------------------------

#: the default search interval of a hyperparameter (sklearn optimises its logarithm)
DEFAULT_BOUNDS = (1e-3, 1e3)
_KINDS = ("nngp", "ntk")


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=32)
def _cached_model(spec, net, overrides, trainable, stamp):
    return _compile(spec, net, dict(overrides), trainable)


def _model_of(spec, net, overrides, trainable=()):
    """The compiled model, cached: a kernel is evaluated many times while it is fitted."""
    stamp = None  # a spec file is compiled again when it changes
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "{" not in spec
                                         and Path(spec).is_file()):
        stamp = os.stat(spec).st_mtime_ns
    try:
        return _cached_model(spec, net, _freeze(overrides or {}), tuple(trainable), stamp)
    except TypeError:  # an unhashable spec or override value: compile every time
        return _compile(spec, net, overrides, tuple(trainable))


@functools.lru_cache(maxsize=32)
def _jitted(model, get: str):
    """Two jitted functions: the kernel at ``log`` values of the free parameters, and
    the kernel with its jacobian in those logs."""
    import jax
    import jax.numpy as jnp

    def value(free_log, fixed, x1, x2):
        p = {**fixed, **{k: jnp.exp(v) for k, v in free_log.items()}}
        return model.kernel_fn(x1, x2, get, params=p)

    def with_jacobian(free_log, fixed, x):
        f = functools.partial(value, fixed=fixed, x1=x, x2=None)
        return f(free_log), jax.jacfwd(f)(free_log)

    return jax.jit(value), jax.jit(with_jacobian)


class SpecKernel(Kernel):
    """A spec's NNGP kernel or NTK as a scikit-learn kernel, its net parameters as hyperparameters.

    ``params`` names net parameters of the spec (``W`` and ``b`` of ``net mlp(W =
    1.5, b = 0.1)``) with their starting values; they are the kernel's
    hyperparameters, optimised on a log scale (``theta = log(values)``) by
    ``GaussianProcessRegressor`` through exact gradients (``jax.jacfwd`` through
    the differentiable kernel of a model compiled with ``trainable=``). The
    fitted values are ``gpr.kernel_.params``.

    A ``SpecKernel`` combines with scikit-learn's kernels as any kernel does:
    ``SpecKernel(...) + WhiteKernel(0.1)`` fits an observation noise beside the
    net's parameters. It is also a callable ``kernel(X, Y)`` for
    ``SVC(kernel=SpecKernel(...))``; :func:`gram` gives the matrices for
    ``SVC(kernel="precomputed")``.

    Arguments:
        spec: the spec's text or a path to a ``.ntk`` file.
        net: which net of the file, when it holds several.
        kind: ``"nngp"`` (the NNGP kernel) or ``"ntk"`` (the NTK).
        params: ``{name: starting value}`` of the net parameters to fit (each
            must be positive: the search is over its logarithm); ``None``: none,
            the kernel is the spec's at its defaults.
        bounds: the search interval of each parameter: ``None`` (``(1e-3, 1e3)``,
            narrowed to what the layers using it accept), one ``(low, high)`` pair
            for all, or ``{name: (low, high) or "fixed"}`` (missing names: the
            default); ``"fixed"`` keeps a value out of the fit.
        overrides: ``{name: value}`` for other net parameters (``{"depth": 3}``).
    """

    def __init__(self, spec, net=None, kind="nngp", params=None, bounds=None,
                 overrides=None):
        self.spec = spec
        self.net = net
        self.kind = kind
        self.params = params
        self.bounds = bounds
        self.overrides = overrides

    # -- hyperparameters ------------------------------------------------------------------
    def _names(self) -> tuple[str, ...]:
        if self.params is None:
            return ()
        if not isinstance(self.params, dict):
            raise ValueError(f"params: expected a dict {{name: starting value}} or None, "
                             f"got {type(self.params).__name__}")
        return tuple(self.params)

    def _model(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind: expected 'nngp' or 'ntk', got {self.kind!r}")
        return _model_of(self.spec, self.net, self.overrides, self._names())

    # ``bounds`` is both the constructor argument (stored as given, returned by
    # get_params) and scikit-learn's read-only ``Kernel.bounds``: the log-bounds of theta
    # that GaussianProcessRegressor's optimiser reads
    @property
    def bounds(self) -> np.ndarray:
        """The log-transformed bounds of ``theta``, ``(n_free, 2)`` (scikit-learn's meaning;
        the constructor argument is ``get_params()["bounds"]``)."""
        return Kernel.bounds.fget(self)

    @bounds.setter
    def bounds(self, value) -> None:
        self._bounds_arg = value

    def get_params(self, deep=True) -> dict:
        """The constructor arguments, as given (``bounds`` included).

        Arguments:
            deep: unused (a SpecKernel holds no other kernel).

        Returns:
            ``{name: value}``.
        """
        params = super().get_params(deep=deep)
        params["bounds"] = self._bounds_arg
        return params

    def _bounds_of(self, name: str):
        b = self._bounds_arg
        if isinstance(b, dict):
            b = b.get(name)
        if isinstance(b, str):
            if b != "fixed":
                raise ValueError(f"bounds[{name!r}]: expected (low, high) or 'fixed', "
                                 f"got {b!r}")
            return "fixed"
        if b is None:
            low, high = DEFAULT_BOUNDS
            valid = self._model().trainable_bounds().get(name, (None, None))
            if valid[0] is not None:
                low = max(low, float(valid[0]) if valid[0] > 0 else low)
            if valid[1] is not None:
                high = min(high, float(valid[1]))
            return (low, high)
        low, high = (float(v) for v in b)
        if not (0 < low < high < math.inf):
            raise ValueError(f"bounds of {name!r}: expected 0 < low < high < inf (the search "
                             f"is over the logarithm), got {b!r}")
        return (low, high)

    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        """One ``Hyperparameter`` per entry of ``params``, named as in the spec."""
        return [Hyperparameter(name, "numeric", self._bounds_of(name))
                for name in self._names()]

    def _free(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyperparameters if not h.fixed)

    @property
    def theta(self) -> np.ndarray:
        """The logarithms of the free (non-fixed) parameters, in the order of ``params``."""
        free = self._free()
        values = np.array([float(self.params[n]) for n in free], dtype=np.float64)
        if np.any(values <= 0):
            bad = ", ".join(f"{n}={self.params[n]!r}" for n in free
                            if float(self.params[n]) <= 0)
            raise ValueError(f"params: the fitted values must be positive (the search is over "
                             f"their logarithm), got {bad}")
        return np.log(values)

    @theta.setter
    def theta(self, theta) -> None:
        free = self._free()
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        if len(theta) != len(free):
            raise ValueError(f"theta: expected {len(free)} values ({', '.join(free)}), "
                             f"got {len(theta)}")
        self.params = {**self.params, **{n: float(np.exp(v)) for n, v in zip(free, theta)}}

    def is_stationary(self) -> bool:
        """False: a net's kernel depends on the inputs, not only on their difference."""
        return False

    @property
    def requires_vector_input(self) -> bool:
        """True: the rows of ``X`` are the inputs of the net."""
        return True

    # -- evaluation ---------------------------------------------------------------------
    def _split(self):
        free = self._free()
        fixed = {n: float(v) for n, v in (self.params or {}).items() if n not in free}
        return free, fixed

    def _rows(self, model, X) -> np.ndarray:
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"X: expected a 2-D array (n_samples, n_features), "
                             f"got shape {x.shape}")
        return x.reshape(len(x), *_row_shape(model, x.shape[1]))

    def __call__(self, X, Y=None, eval_gradient=False):
        """The kernel matrix ``k(X, Y)`` and, optionally, its gradient in ``theta``.

        Arguments:
            X: ``(n, n_features)``; Y: ``(m, n_features)`` or ``None`` (``X``).
            eval_gradient: also return ``d k(X, X) / d theta`` (only with ``Y=None``).

        Returns:
            ``K`` ``(n, m)``; with ``eval_gradient``, ``(K, dK)`` with ``dK``
            ``(n, n, n_free_parameters)`` (derivatives in the parameters' logarithms).
        """
        import jax

        if eval_gradient and Y is not None:
            raise ValueError("gradient can only be evaluated when Y is None")
        model = self._model()
        x = self._rows(model, X)
        y = None if Y is None else self._rows(model, Y)
        free, fixed = self._split()
        if not self._names():
            k = _kernels(model, x, y, (self.kind,))[self.kind]
            return (k, np.empty((len(x), len(x), 0))) if eval_gradient else k
        free_log = {n: np.log(float(self.params[n])) for n in free}
        value, with_jacobian = _jitted(model, self.kind)
        with jax.enable_x64(True):
            if eval_gradient and free:
                k, jac = with_jacobian(free_log, fixed, x)
                return np.array(k), np.stack([np.array(jac[n]) for n in free], axis=-1)
            if eval_gradient:  # every parameter fixed
                return np.array(value(free_log, fixed, x, None)), np.empty((len(x), len(x), 0))
            n1 = len(x)
            xp = _pad(x, _bucket(n1), 1)
            yp = None if y is None else _pad(y, _bucket(len(y)), 2)
            k = np.asarray(value(free_log, fixed, xp, yp))
        return np.array(k[:n1, :(n1 if y is None else len(y))])

    def diag(self, X) -> np.ndarray:
        """``k(x, x)`` of every row, ``(n,)`` (computed in blocks of rows).

        Arguments:
            X: ``(n, n_features)``.

        Returns:
            The diagonal of ``k(X, X)``.
        """
        x = np.asarray(X, dtype=np.float64)
        return np.concatenate([np.diag(self(x[i:i + _DIAG_BLOCK]))
                               for i in range(0, len(x), _DIAG_BLOCK)]) if len(x) else \
            np.empty(0)

    def __repr__(self) -> str:
        values = ", ".join(f"{n}={float(v):.4g}" for n, v in (self.params or {}).items())
        net = getattr(self._model_or_none(), "net", None)
        what = self.kind if net is None else f"{self.kind} of {net.name}"
        return f"SpecKernel({what}{', ' if values else ''}{values})"

    def _model_or_none(self):
        try:
            return self._model()
        except Exception:  # repr must not raise on a kernel with bad settings
            return None


def gram(spec, X, Y=None, *, net=None, overrides=None, kind="ntk"):
    """The kernel matrix of a spec for ``SVC(kernel="precomputed")`` and the like.

    ``SVC(kernel="precomputed").fit(gram(spec, X), y).predict(gram(spec, X_test, X))``
    (the test rows first, then the train rows).

    Arguments:
        spec: the spec's text, a path to a ``.ntk`` file or an :class:`ntkdsl.Model`.
        X: ``(n, n_features)``; Y: ``(m, n_features)`` or ``None`` (``X`` itself).
        net: which net of the file; overrides: ``{name: value}`` of net parameters.
        kind: ``"ntk"`` or ``"nngp"``.

    Returns:
        ``(n, m)`` numpy array.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind: expected 'nngp' or 'ntk', got {kind!r}")
    model = _compile(spec, net, overrides)
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (n_samples, n_features), got shape {x.shape}")
    rows = _row_shape(model, x.shape[1])
    y = None if Y is None else np.asarray(Y, dtype=np.float64)
    if y is not None and (y.ndim != 2 or y.shape[1] != x.shape[1]):
        raise ValueError(f"Y: expected shape (m, {x.shape[1]}) like X, got {y.shape}")
    return _kernels(model, x.reshape(len(x), *rows),
                    None if y is None else y.reshape(len(y), *rows), (kind,))[kind]
