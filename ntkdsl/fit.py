"""Fit trainable net parameters (and the noise) by marginal likelihood or cross-validation.

:func:`fit_hyperparameters` minimises the negative log marginal likelihood
(per target entry) or the k-fold cross-validated squared error of
``ntkdsl/likelihood.py`` with scipy's L-BFGS-B, gradients from ``jax``, bounds
from the validation of the layer fields each parameter sets (a std >= 0) and
the noise variance > 0. Everything runs in float64 (a local
``jax.enable_x64(True)``). Dense Cholesky solves: the memory is a few
``n x n`` float64 matrices (docs/fitting.md gives the limits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .diagnostics import InputError
from .likelihood import KINDS, cross_validation_error, log_marginal_likelihood

OBJECTIVES = ("mll", "cv")
#: the name ``--fit`` / ``fit=`` uses for the observation noise variance
NOISE = "noise"
#: lower bounds of 0 from the layers' validation are moved up by this much: a std of
#: exactly 0 makes the kernel constant (singular), and L-BFGS-B may stop on a bound
BOUND_MARGIN = 1e-6


@dataclass(frozen=True)
class FitResult:
    """What a fit found.

    Attributes:
        params: fitted (and fixed) trainable net-parameter values.
        noise: the noise variance (fitted when ``noise`` was among the fitted names).
        fitted: the names that were optimised, in order.
        kind, objective: as asked.
        value: the final objective: the log marginal likelihood (``mll``, larger is
            better) or the cross-validated mean squared error (``cv``).
        initial_value: the same at the starting point.
        success, message: scipy's verdict.
        iterations, evaluations: L-BFGS-B iterations and objective evaluations.
        relative_jitter: the jitter the final kernel needed (``mll``; 0: none).
        laplace_sd: ``mll`` only: the Laplace approximation's posterior standard
            deviation of each fitted value (``sqrt(diag(H^-1))``, ``H`` the Hessian of
            the negative log likelihood at the optimum; NaN where ``H`` is not
            positive definite).
        bounds: the bounds used, ``{name: (low, high)}`` (``None``: no bound).
        history: one dict per iteration: ``iteration``, ``objective``, the values.
    """

    params: dict[str, float]
    noise: float
    fitted: tuple[str, ...]
    kind: str
    objective: str
    value: float
    initial_value: float
    success: bool
    message: str
    iterations: int
    evaluations: int
    relative_jitter: float | None
    laplace_sd: dict[str, float] | None
    bounds: dict[str, tuple[float | None, float | None]]
    history: tuple[dict[str, float], ...] = field(default=(), repr=False)

    def set_options(self) -> str:
        """The fitted net parameters as ``--set`` options for the other commands."""
        return " ".join(f"--set {k}={_num(v)}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "params": dict(self.params), "noise": self.noise, "fitted": list(self.fitted),
            "kind": self.kind, "objective": self.objective, "value": self.value,
            "initial_value": self.initial_value, "success": self.success,
            "message": self.message, "iterations": self.iterations,
            "evaluations": self.evaluations, "relative_jitter": self.relative_jitter,
            "laplace_sd": self.laplace_sd,
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "set": self.set_options(), "history": list(self.history),
        }


def _num(v: float) -> str:
    return f"{v:.10g}"


def _names(model, fit: Sequence[str] | str | None) -> tuple[tuple[str, ...], bool]:
    trainable = tuple(getattr(model, "trainable", ()))
    if fit is None:
        names = trainable
    else:
        names = tuple(s.strip() for s in fit.split(",")) if isinstance(fit, str) else tuple(fit)
    if not names or any(not n for n in names):
        raise InputError("name at least one parameter to fit (e.g. W,b or W,b,noise)")
    if len(set(names)) != len(names):
        raise InputError(f"a parameter is named twice in {','.join(names)}")
    if NOISE in names and NOISE in trainable:
        raise InputError("the net has a parameter named 'noise', which the fit reserves for "
                         "the noise variance: rename the net parameter")
    for n in names:
        if n != NOISE and n not in trainable:
            raise InputError(
                f"cannot fit '{n}': it is not a trainable parameter of the model (trainable: "
                f"{', '.join(trainable) or 'none'}; compile with trainable=(...) or name "
                f"'{NOISE}')")
    return tuple(n for n in names if n != NOISE), NOISE in names


def fit_hyperparameters(model, x, y, *, fit: Sequence[str] | str | None = None,
                        kind: str = "nngp", objective: str = "mll", folds: int = 5,
                        noise: float | None = None, diag_reg: float = 0.0,
                        init: Mapping[str, float] | None = None,
                        bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
                        maxiter: int = 200, seed: int = 0,
                        progress: Callable[[dict[str, float]], None] | None = None,
                        laplace: bool = True) -> FitResult:
    """Fit trainable net parameters and optionally the noise variance.

    Arguments:
        model: a :class:`ntkdsl.Model` compiled with ``trainable=``.
        x: train inputs ``(n, ...)``; y: targets ``(n,)`` or ``(n, k)``.
        fit: the names to optimise: trainable net parameters and/or ``"noise"``
            (default: every trainable parameter); the others stay at their values.
        kind: ``"nngp"`` or ``"ntk"`` (see :func:`ntkdsl.log_marginal_likelihood`).
        objective: ``"mll"`` (maximise the log marginal likelihood) or ``"cv"``
            (minimise the ``folds``-fold cross-validated squared error).
        folds: folds for ``"cv"``.
        noise: the noise variance, the start value when fitted (default: 0 when fixed,
            ``0.1 * mean(y^2)`` when fitted).
        diag_reg: a fixed relative regulariser (as in :func:`ntkdsl.gp_inference`).
        init: start values of net parameters (default: their compiled defaults).
        bounds: ``{name: (low, high)}`` replacing the bounds derived from the layers.
        maxiter: L-BFGS-B iterations at most.
        seed: the seed of the cross-validation split.
        progress: called with each iteration's row (``iteration``, ``objective``,
            the values).
        laplace: compute :attr:`FitResult.laplace_sd` (``mll`` only).

    Returns:
        A :class:`FitResult`.

    Raises:
        InputError: bad names, options, inputs, or a kernel no jitter factorises.
    """
    import jax
    import jax.numpy as jnp
    from scipy.optimize import minimize

    if kind not in KINDS:
        raise InputError(f"kind must be 'nngp' or 'ntk', got {kind!r}")
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be 'mll' or 'cv', got {objective!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise InputError(f"maxiter must be a positive integer, got {maxiter!r}")
    names, fit_noise = _names(model, fit)
    y_arr = np.asarray(y, dtype=np.float64)
    if y_arr.ndim == 0 or not np.isfinite(y_arr).all():
        raise InputError("y must be a finite array (n,) or (n, k)")
    size = y_arr.size
    if noise is None:
        noise = 0.1 * float(np.mean(y_arr**2)) if fit_noise else 0.0
        noise = noise if noise > 0 else 1e-2
    if not isinstance(noise, int | float) or isinstance(noise, bool) or noise < 0 \
            or not math.isfinite(noise):
        raise InputError(f"noise must be a number >= 0, got {noise!r}")
    values = dict(getattr(model, "trainable_defaults", {}) or {})
    for k, v in (init or {}).items():
        if k not in values:
            raise InputError(f"init has {k!r}, which is not a trainable parameter")
        values[k] = float(v)
    derived = model.trainable_bounds() if names else {}
    order = [*names, *([NOISE] if fit_noise else [])]
    box: dict[str, tuple[float | None, float | None]] = {}
    for n in names:
        lo, hi = derived.get(n, (None, None))
        box[n] = (None if lo is None else lo + BOUND_MARGIN if lo == 0 else lo, hi)
    if fit_noise:
        box[NOISE] = (max(1e-12, 1e-9 * float(np.mean(y_arr**2))), None)
    for k, b in (bounds or {}).items():
        if k not in box:
            raise InputError(f"bounds has {k!r}, which is not fitted ({', '.join(order)})")
        box[k] = (None if b[0] is None else float(b[0]), None if b[1] is None else float(b[1]))
    start = [values[n] for n in names] + ([float(noise)] if fit_noise else [])
    start = [_clip(v, box[n]) for v, n in zip(start, order)]
    x64 = jax.enable_x64(True)
    with x64:
        x_arr = np.asarray(x, dtype=np.float64)
        from .compiler.inputs import check_inputs
        from .likelihood import _targets

        check_inputs(model.net, x_arr, None)
        _targets(y_arr, x_arr.shape[0])
        # the data are arguments of the jitted function, not constants XLA would fold
        x_dev, y_dev = jnp.asarray(x_arr), jnp.asarray(y_arr)

        def unpack(vec):
            p = dict(values)
            p.update({n: vec[i] for i, n in enumerate(names)})
            s = vec[len(names)] if fit_noise else float(noise)
            return p, s

        def loss(vec, xs, ys):
            p, s = unpack(vec)
            if objective == "mll":
                return -log_marginal_likelihood(model, xs, ys, kind=kind, noise=s,
                                                diag_reg=diag_reg, params=p) / size
            return cross_validation_error(model, xs, ys, kind=kind, folds=folds,
                                          noise=s, diag_reg=diag_reg, params=p, seed=seed)

        jitted = jax.jit(jax.value_and_grad(loss))

        def value_and_grad(vec):
            return jitted(vec, x_dev, y_dev)
        evaluations = 0

        def fun(vec):
            nonlocal evaluations
            evaluations += 1
            v, g = value_and_grad(jnp.asarray(vec, dtype=jnp.float64))
            v, g = float(v), np.asarray(g, dtype=np.float64)
            if not math.isfinite(v) or not np.isfinite(g).all():
                return math.inf, np.zeros_like(g)  # the line search backs off
            return v, g

        def as_objective(v: float) -> float:
            return -v * size if objective == "mll" else v

        history: list[dict[str, float]] = []

        def record(vec, v: float) -> None:
            row = {"iteration": len(history), "objective": as_objective(v)}
            row.update({n: float(vec[i]) for i, n in enumerate(order)})
            history.append(row)
            if progress is not None:
                progress(row)

        v0, _ = fun(np.asarray(start))
        if not math.isfinite(v0):
            raise InputError("the objective is not finite at the starting point "
                             f"({dict(zip(order, start))}); give a noise variance or other "
                             "start values")
        record(start, v0)

        def callback(intermediate_result):
            record(intermediate_result.x, float(intermediate_result.fun))

        res = minimize(fun, np.asarray(start, dtype=np.float64), jac=True, method="L-BFGS-B",
                       bounds=[box[n] for n in order], callback=callback,
                       options={"maxiter": maxiter})
        best = np.asarray(res.x, dtype=np.float64)
        p, s = unpack(best)
        p = {k: float(v) for k, v in p.items()}
        final = as_objective(float(res.fun))
        rel = None
        sd = None
        if objective == "mll":
            _, info = log_marginal_likelihood(model, x_arr, y_arr, kind=kind, noise=float(s),
                                              diag_reg=diag_reg, params=p, return_info=True)
            rel = info.relative_jitter
            if laplace:
                def grad(vec):
                    return value_and_grad(jnp.asarray(vec, dtype=jnp.float64))[1]

                sd = _laplace_sd(grad, best, size, order)
    return FitResult(params=p, noise=float(s), fitted=tuple(order), kind=kind,
                     objective=objective, value=final, initial_value=as_objective(v0),
                     success=bool(res.success), message=str(res.message),
                     iterations=int(res.nit), evaluations=evaluations, relative_jitter=rel,
                     laplace_sd=sd, bounds=box, history=tuple(history))


def _clip(v: float, b: tuple[float | None, float | None]) -> float:
    lo, hi = b
    if lo is not None and v < lo:
        v = lo
    if hi is not None and v > hi:
        v = hi
    return float(v)


def laplace_hessian(grad: Callable, at: np.ndarray, size: int,
                    step: float = 1e-4) -> np.ndarray:
    """The Hessian of the negative log likelihood ``size * loss`` at ``at``.

    Central differences of the exact (jax) gradient ``grad`` of ``loss``, with steps
    ``step * max(|at_i|, 1)``; symmetrised. (Forward-mode derivatives do not pass the
    likelihood's ``custom_vjp``, and the kernels' guarded square roots have no second
    derivative at correlation 1.)

    Returns:
        ``(d, d)`` float64.
    """
    at = np.asarray(at, dtype=np.float64)
    d = at.size
    h = np.empty((d, d))
    for j in range(d):
        e = np.zeros(d)
        e[j] = step * max(abs(at[j]), 1.0)
        h[:, j] = (np.asarray(grad(at + e)) - np.asarray(grad(at - e))) * size / (2 * e[j])
    return (h + h.T) / 2


def _laplace_sd(grad, at, size, order) -> dict[str, float]:
    h = laplace_hessian(grad, at, size)
    try:
        np.linalg.cholesky(h)
        cov = np.linalg.inv(h)
        sd = np.sqrt(np.diag(cov))
    except np.linalg.LinAlgError:
        sd = np.full(len(order), np.nan)
    return {n: float(v) for n, v in zip(order, sd)}
