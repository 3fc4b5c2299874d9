"""A compiled model's predictions: kernels and the predictive equations in one jit.

This is the glue between the compiler (which knows the net) and
``predict.py`` (which sees only matrices): ``Model.predict_fn`` calls
:func:`model_predict_fn`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .diagnostics import InputError
from .predict import KINDS, _dtype, _times, gradient_descent_mse_gp


def model_predict_fn(model, x_train, y_train, *, kind: str = "ntk", learning_rate: float = 1.0,
                     diag_reg: float = 0.0, loss: str = "total", compute_cov: bool = True,
                     dtype=None):
    """A jitted ``(x_test, t) -> Gaussian(mean, cov)`` for a compiled model (eq. 13-16).

    The train-train kernels, their eigendecomposition and Cholesky factor are
    computed once, here (so conditioning warnings appear now, and the train
    kernel may be tiled). The returned function is one ``jax.jit`` of the
    test-train and test-test kernel computation (the kernel compiler's traceable
    tile function, untiled) and the predictive equations; it is compiled once per
    test-set size and shape of ``t``.

    Arguments:
        model: a :class:`ntkdsl.Model`.
        x_train: ``(n, *input_shape)``; y_train: ``(n, k)``.
        kind: ``"ntk"`` (NTK-GP, eq. 14-16) or ``"nngp"`` (readout-only; eq. 13 at inf).
        learning_rate, diag_reg, loss: as :func:`gradient_descent_mse_gp`.
        compute_cov: also return the ``(m, m)`` covariance.
        dtype: default float64.

    Returns:
        ``predict(x_test, t)`` returning :class:`Gaussian` with ``mean``
        ``(*t.shape, m, k)`` and ``cov`` ``(*t.shape, m, m)`` (``None`` without
        ``compute_cov``).
    """
    from .compiler.inputs import check_inputs
    from .compiler.kernels import build_tile_fn, get_plan

    if kind not in KINDS:
        raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    dtype = _dtype(dtype)
    net = getattr(model, "net", model)
    x_train = jnp.asarray(check_inputs(net, x_train, None)[0], dtype)
    gets = ("nngp", "ntk") if kind == "ntk" else ("nngp",)
    kern = model.kernel_fn(x_train, None, gets, dtype=dtype)
    dyn = gradient_descent_mse_gp(kern.nngp, y_train, ntk_train_train=kern.ntk, kind=kind,
                                  learning_rate=learning_rate, diag_reg=diag_reg, loss=loss,
                                  dtype=dtype)
    p = get_plan(model, tuple(x_train.shape[1:]))
    n = x_train.shape[0]

    @jax.jit
    def fused(x_test, t):
        m = x_test.shape[0]
        kx = build_tile_fn(p, m, n, gets)(x_test, x_train)
        k_tt = build_tile_fn(p, m, None, ("nngp",))(x_test)[0] if compute_cov else None
        return dyn(t, kx[0], k_tt, kx[1] if kind == "ntk" else None)

    def predict_fn(x_test, t):
        """Mean and covariance of the outputs on ``x_test`` at times ``t``."""
        x_test = jnp.asarray(check_inputs(net, x_test, None)[0], dtype)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise InputError(f"x_test: expected shape (m, {', '.join(map(str, x_train.shape[1:]))})"
                             f" like x_train, got {x_test.shape}")
        t = jnp.asarray(t, dtype)
        _times(t, dtype)
        return fused(x_test, t)

    predict_fn.dynamics = dyn
    return predict_fn
