"""neural-tangents' ``predict`` module on ntkdsl's predictions (``ntkdsl.predict``).

The peer's conventions are kept: the MSE loss is the mean over the ``n k`` target
entries (``ntkdsl``'s ``loss="mean"``), ``t`` is the training time in units of the
learning rate (``t=None`` means infinity), ``diag_reg`` is relative to the mean
diagonal unless ``diag_reg_absolute_scale=True``, and the returned functions take
and return what the peer's do. Only ``trace_axes=(-1,)`` (per-output kernels
``(n, n)`` shared by the ``k`` outputs) is supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from .. import predict as native
from ._nodes import CompatError
from ._triple import _named

__all__ = ["Gaussian", "gp_inference", "gradient_descent", "gradient_descent_mse",
           "gradient_descent_mse_ensemble", "max_learning_rate"]


class Gaussian(NamedTuple):
    """A predictive distribution as the peer returns it: ``mean`` and ``covariance``."""

    mean: Any
    covariance: Any


def _gauss(g) -> Gaussian:
    return Gaussian(g.mean, g.cov)


def _check_trace(name: str, trace_axes) -> None:
    t = tuple(trace_axes) if isinstance(trace_axes, tuple | list) else (trace_axes,)
    if t != (-1,):
        raise CompatError(f"predict.{name}: trace_axes={trace_axes} is not supported; "
                          "ntkdsl's predictions use per-output (n, n) kernels "
                          "(trace_axes=(-1,))")


def _kernel2d(name: str, k):
    k = k if hasattr(k, "shape") else np.asarray(k)
    if len(k.shape) != 2:
        raise CompatError(f"predict.{name}: expected an (n, n) kernel (trace_axes=(-1,)), "
                          f"got shape {tuple(k.shape)}")
    return k


def _relative(k, diag_reg: float, absolute: bool) -> float:
    """The peer's ``diag_reg`` as ntkdsl's (relative to the mean diagonal)."""
    if not absolute or diag_reg == 0:
        return float(diag_reg)
    mean_diag = float(jnp.mean(jnp.diagonal(jnp.asarray(k))))
    if mean_diag <= 0:
        raise ValueError("diag_reg_absolute_scale=True needs a kernel with a positive diagonal")
    return float(diag_reg) / mean_diag


def _times(t):
    return jnp.inf if t is None else t


def gradient_descent_mse(k_train_train, y_train, learning_rate: float = 1.0,
                         diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                         trace_axes=(-1,)):
    """Outputs of a linear(ised) model under MSE gradient flow (the peer's signature).

    Arguments:
        k_train_train: ``(n, n)`` NTK of the training inputs.
        y_train: ``(n, k)`` targets.
        learning_rate: the rate of the mean-loss gradient flow.
        diag_reg, diag_reg_absolute_scale: the regulariser of ``k_train_train``.
        trace_axes: ``(-1,)`` only.

    Returns:
        ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning
        ``fx_train_t``, ``fx_test_t`` or both (``fx_train_0=None`` / ``fx_test_0=None``
        leave one out), with leading axes ``t.shape``; ``t=None`` is infinity.
    """
    _check_trace("gradient_descent_mse", trace_axes)
    k = _kernel2d("gradient_descent_mse", k_train_train)
    dyn = native.gradient_descent_mse(
        k, y_train, learning_rate=learning_rate,
        diag_reg=_relative(k, diag_reg, diag_reg_absolute_scale), loss="mean")

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("To get predictions on the test set, please provide "
                             "`k_test_train` kernel to the parametric `predict_fn`.")
        f0 = 0.0 if fx_train_0 is None else fx_train_0
        train, test = dyn(_times(t), f0, fx_test_0,
                          k_test_train if fx_test_0 is not None else None)
        if fx_test_0 is None:
            return train
        if fx_train_0 is None:
            return test
        return train, test

    return predict_fn


def gradient_descent(loss: Callable, k_train_train, y_train, learning_rate: float = 1.0,
                     momentum: float | None = None, trace_axes=(-1,)):
    """Outputs under gradient flow of any ``loss(fx, y_hat)`` (the peer's signature).

    ``dfx/dt = -learning_rate * K dloss/dfx``, integrated by ntkdsl's fixed-step RK4
    (``ntkdsl.predict.gradient_flow``). ``momentum`` (the peer's continuous heavy-ball
    ODE) is not supported.

    Returns:
        ``predict_fn(t, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)``
        returning ``fx_train_t``, ``fx_test_t`` or both; ``t`` must be finite.
    """
    _check_trace("gradient_descent", trace_axes)
    if momentum is not None:
        raise CompatError("predict.gradient_descent(momentum=...) (the continuous-time "
                          "heavy-ball ODE) is not supported; ntkdsl has discrete momentum: "
                          "ntkdsl.gradient_descent_mse(..., optimizer='momentum')")
    k = _kernel2d("gradient_descent", k_train_train)

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        if t is None:
            raise CompatError("predict.gradient_descent: t=None (infinite time) is not "
                              "supported by ntkdsl's ODE integrator; pass finite times")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("To get predictions on the test set, please provide "
                             "`k_test_train` kernel to the parametric `predict_fn`.")
        f0 = 0.0 if fx_train_or_state_0 is None else fx_train_or_state_0
        train, test = native.gradient_flow(
            k, y_train, t, objective=loss, fx_train_0=f0, fx_test_0=fx_test_0,
            k_test_train=k_test_train if fx_test_0 is not None else None,
            learning_rate=learning_rate, loss="total")
        if fx_test_0 is None:
            return train
        if fx_train_or_state_0 is None:
            return test
        return train, test

    return predict_fn


def _attr(k, g: str):
    if k is None or hasattr(k, "shape"):
        return k
    if isinstance(k, np.ndarray | list):
        return np.asarray(k)
    v = getattr(k, g, None)
    if v is None:
        raise ValueError(f"the kernel passed has no {g!r} entry (pass both 'nngp' and 'ntk' "
                         "kernels, e.g. kernel_fn(x1, x2, ('nngp', 'ntk')))")
    return v


def _gets(get) -> tuple[tuple[str, ...], bool]:
    if get is None:
        return ("nngp", "ntk"), False
    if isinstance(get, str):
        names, single = (get,), True
    else:
        names, single = tuple(get), False
    for g in names:
        if g == "ntkgp":
            raise CompatError("get='ntkgp' (the NTK-GP of Bayesian deep ensembles) is not "
                              "supported")
        if g not in ("nngp", "ntk"):
            raise ValueError(f"get: expected 'nngp', 'ntk', a tuple of them or None, got {get!r}")
    return names, single


def _pack(out: dict, names, single: bool):
    if single:
        return out[names[0]]
    return _named(tuple(names))(*(out[g] for g in names))


def gp_inference(k_train_train, y_train, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False, trace_axes=(-1,)):
    """The exact posterior of the NNGP and of the NTK-GP at infinite time (the peer's).

    Arguments:
        k_train_train: an ``(n, n)`` array or a kernel with ``nngp`` / ``ntk``.
        y_train: ``(n, k)``; diag_reg, diag_reg_absolute_scale: the regulariser.

    Returns:
        ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: per ``get``, the
        mean ``(m, k)`` or, with ``k_test_test``, ``Gaussian(mean, covariance)``; several
        ``get`` give a namedtuple ``Gaussians``. ``k_test_train=None``: the train set.
    """
    _check_trace("gp_inference", trace_axes)

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names, single = _gets(get)
        out = {}
        for g in names:
            k_dd = _kernel2d("gp_inference", _attr(k_train_train, g))
            reg = _relative(k_dd, diag_reg, diag_reg_absolute_scale)
            if k_test_train is None:
                y = jnp.asarray(y_train, jnp.result_type(float))
                out[g] = (y if k_test_test is None else
                          Gaussian(y, jnp.zeros(k_dd.shape, y.dtype)))
                continue
            k_td = _attr(k_test_train, g)
            if k_test_test is None:
                out[g] = native.gp_inference(k_dd, y_train, k_td, None, diag_reg=reg).mean
            elif g == "nngp":
                out[g] = _gauss(native.gp_inference(k_dd, y_train, k_td,
                                                    _attr(k_test_test, "nngp"), diag_reg=reg))
            else:
                nngp_dd = _attr(k_train_train, "nngp")
                if nngp_dd is k_dd or not hasattr(k_test_train, "nngp"):
                    raise ValueError("the NTK posterior covariance needs both NTK and NNGP "
                                     "train-train and test-train kernels (objects with "
                                     "`nngp` and `ntk`)")
                dyn = native.gradient_descent_mse_gp(nngp_dd, y_train, ntk_train_train=k_dd,
                                                     kind="ntk", diag_reg=reg, loss="mean")
                out[g] = _gauss(dyn(jnp.inf, _attr(k_test_train, "nngp"),
                                    _attr(k_test_test, "nngp"), k_td))
        return _pack(out, names, single)

    return predict_fn


def gradient_descent_mse_ensemble(kernel_fn: Callable, x_train, y_train,
                                  learning_rate: float = 1.0, diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False, trace_axes=(-1,),
                                  **kernel_fn_train_train_kwargs):
    """The infinite ensemble of nets trained by MSE gradient flow (the peer's signature).

    Arguments:
        kernel_fn: ``kernel_fn(x1, x2, get)`` (e.g. from ``ntkdsl.compat.stax``).
        x_train, y_train: ``(n, ...)``, ``(n, k)``.
        learning_rate, diag_reg, diag_reg_absolute_scale: as the peer (mean loss).
        **kernel_fn_train_train_kwargs: passed to ``kernel_fn``.

    Returns:
        ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kwargs)``: per
        ``get`` (``'nngp'``: readout-only training, ``'ntk'``: all layers) the mean
        ``(*t.shape, m, k)`` or ``Gaussian(mean, covariance)``; several ``get`` give a
        namedtuple ``Gaussians``. ``x_test=None``: the train set (``diag_reg=0`` only).
    """
    _check_trace("gradient_descent_mse_ensemble", trace_axes)
    cache: dict = {}

    def train_kernel():
        if "k" not in cache:
            k = kernel_fn(x_train, None, ("nngp", "ntk"), **kernel_fn_train_train_kwargs)
            cache["k"] = (_kernel2d("gradient_descent_mse_ensemble", k.nngp),
                          _kernel2d("gradient_descent_mse_ensemble", k.ntk))
        return cache["k"]

    def dynamics(g: str):
        if g not in cache:
            nngp, ntk = train_kernel()
            k = nngp if g == "nngp" else ntk
            cache[g] = native.gradient_descent_mse_gp(
                nngp, y_train, ntk_train_train=ntk, kind=g, learning_rate=learning_rate,
                diag_reg=_relative(k, diag_reg, diag_reg_absolute_scale), loss="mean")
        return cache[g]

    def predict_fn(t=None, x_test=None, get=None, compute_cov: bool = False,
                   **kernel_fn_test_test_kwargs):
        names, single = _gets(get)
        nngp_dd, ntk_dd = train_kernel()
        if x_test is None:
            if diag_reg:
                raise CompatError("train-set predictions (x_test=None) with diag_reg > 0 are "
                                  "not supported; pass x_test=x_train")
            k_td_nngp, k_td_ntk, k_tt = nngp_dd, ntk_dd, nngp_dd
        else:
            kw = {**kernel_fn_train_train_kwargs, **kernel_fn_test_test_kwargs}
            k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"), **kw)
            k_td_nngp, k_td_ntk = k_td.nngp, k_td.ntk
            k_tt = kernel_fn(x_test, None, "nngp", **kw) if compute_cov else None
        out = {}
        for g in names:
            res = dynamics(g)(_times(t), k_td_nngp,
                              k_tt if compute_cov else None,
                              k_td_ntk if g == "ntk" else None)
            out[g] = _gauss(res) if compute_cov else res.mean
        return _pack(out, names, single)

    return predict_fn


def max_learning_rate(ntk_train_train, y_train_size: int | None = None,
                      momentum: float = 0.0, eps: float = 1e-12) -> float:
    """The peer's largest stable learning rate, ``2 (1 + momentum) n / (lambda_max + eps)``.

    ``n`` is ``y_train_size`` (default: the kernel's rows). This is the divergence
    threshold of the mean loss; ``ntkdsl.eta_critical`` is the paper's (smaller)
    ``2 / (lambda_min + lambda_max)`` of monotone convergence.
    """
    k = _kernel2d("max_learning_rate", ntk_train_train)
    k = np.asarray(k, np.float64)
    factor = k.shape[0] if y_train_size is None else int(y_train_size)
    lam_max = float(np.linalg.eigvalsh((k + k.T) / 2)[-1])
    return 2 * (1 + momentum) * factor / (lam_max + eps)
