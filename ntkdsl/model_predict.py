"""A compiled model's predictions: kernels and the predictive equations in one jit.

This is the glue between the compiler (which knows the net) and
``predict.py`` (which sees only matrices): ``Model.predict_fn`` calls
:func:`model_predict_fn`.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from ._x64 import float64
from .diagnostics import InputError
from .predict import KINDS, _dtype, _is_traced, _times, gradient_descent_mse_gp


@float64
def model_predict_fn(model, x_train, y_train, *, kind: str = "ntk", learning_rate: float = 1.0,
                     diag_reg: float = 0.0, loss: str = "total", compute_cov: bool = True,
                     dtype=None, solver: str = "auto", solver_options=None,
                     storage: str = "auto", adjacency_train=None):
    """A jitted ``(x_test, t) -> Gaussian(mean, cov)`` for a compiled model (eq. 13-16).

    The train-train kernels and their eigendecomposition are
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
        solver: ``"auto"``, ``"dense"``, ``"cg"`` or ``"lanczos"``; ``auto`` is dense
            while the dense working set fits (``docs/solvers.md``). The iterative ones
            write the train kernels tile by tile to temporary memory-mapped files
            (``storage``: ``"auto"``, ``"float32"``, ``"float64"``) and are not jitted.
        solver_options: dict of ``tol``, ``max_iter``, ``precond``, ``rank``.
        adjacency_train: for a net with ``Aggregate``, the train graphs' adjacency
            ``(n, nodes, nodes)`` (array or ``ntkdsl.graphs.EdgeList``); the returned
            function then takes the test graphs' as ``predict(x_test, t,
            adjacency_test=...)``. Dense solver only.

    Returns:
        ``predict(x_test, t)`` returning :class:`Gaussian` with ``mean``
        ``(*t.shape, m, k)`` and ``cov`` ``(*t.shape, m, m)`` (``None`` without
        ``compute_cov``).
    """
    from .compiler.adjacency import pack_inputs
    from .compiler.inputs import check_inputs
    from .compiler.kernels import build_tile_fn, get_plan

    if kind not in KINDS:
        raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    from .solvers.select import choose_solver

    chosen = choose_solver(solver, int(getattr(x_train, "shape", (len(x_train),))[0]))
    if chosen != "dense":
        if adjacency_train is not None:
            raise InputError(f"graph inputs (adjacency_train) need solver='dense', got "
                             f"solver={solver!r} (chosen: {chosen!r})")
        from .solvers.model import iterative_model_predict_fn

        return iterative_model_predict_fn(model, x_train, y_train, kind=kind,
                                          learning_rate=learning_rate, diag_reg=diag_reg,
                                          loss=loss, compute_cov=compute_cov, solver=chosen,
                                          storage=storage, options=solver_options)
    dtype = _dtype(dtype)
    net = getattr(model, "net", model)
    x_train = check_inputs(net, x_train, None)[0]
    gets = ("nngp", "ntk") if kind == "ntk" else ("nngp",)
    train_shape = x_train.shape[1:]
    # a graph net's rows travel packed with their adjacency (compiler/adjacency.py)
    packed = pack_inputs(net, x_train, None, adjacency_train, None,
                         ("adjacency_train", "x_train"))[0]
    kern = model.kernel_fn(x_train, None, gets, dtype=dtype, adjacency1=adjacency_train)
    x_train = jnp.asarray(packed, dtype)
    dyn = gradient_descent_mse_gp(kern.nngp, y_train, ntk_train_train=kern.ntk, kind=kind,
                                  learning_rate=learning_rate, diag_reg=diag_reg, loss=loss,
                                  dtype=dtype)
    p = get_plan(model, tuple(x_train.shape[1:]))
    n = x_train.shape[0]

    # the train arrays are arguments, not closed-over constants: XLA would otherwise
    # constant-fold the train-side kernel work at compile time (minutes for n ~ 1000)
    # on the device once, not copied in at every call (the factors are numpy arrays);
    # the handle keeps the device copies too, so they are held once
    def dev(a):
        return None if a is None else jnp.asarray(a)

    spec = replace(dyn.spec, kernel=dev(dyn.spec.kernel), evals=dev(dyn.spec.evals),
                   evecs=dev(dyn.spec.evecs), chol=dev(dyn.spec.chol))
    dyn = replace(dyn, spec=spec, nngp_train_train=dev(dyn.nngp_train_train),
                  y_train=dev(dyn.y_train))
    train_arrays = (x_train, dyn.nngp_train_train, dyn.y_train, spec.kernel, spec.evals,
                    spec.evecs, spec.chol)
    # V^T K V of the NTK-GP covariance: formed by the handle once the calls' covariance
    # rows make it pay (GPDynamics.wants_eigenbasis_product), then passed to every call
    kept: dict = {}

    @jax.jit
    def fused(x_test, t, arrays, mkm_):
        xt, kk, y, kern_, evals, evecs, chol = arrays
        d = replace(dyn, nngp_train_train=kk, y_train=y, nngp_eigenbasis=mkm_,
                    spec=replace(spec, kernel=kern_, evals=evals, evecs=evecs, chol=chol))
        m = x_test.shape[0]
        kx = build_tile_fn(p, m, n, gets)(x_test, xt)
        k_tt = build_tile_fn(p, m, None, ("nngp",))(x_test)[0] if compute_cov else None
        return d(t, kx[0], k_tt, kx[1] if kind == "ntk" else None)

    @float64
    def predict_fn(x_test, t, adjacency_test=None):
        """Mean and covariance of the outputs on ``x_test`` at times ``t`` (graph nets:
        with the test graphs' ``adjacency_test``)."""
        x_test = check_inputs(net, x_test, None)[0]
        if x_test.shape[1:] != train_shape:
            raise InputError(f"x_test: expected shape (m, {', '.join(map(str, train_shape))})"
                             f" like x_train, got {x_test.shape}")
        x_test = pack_inputs(net, x_test, None, adjacency_test, None,
                             ("adjacency_test", "x_test"))[0]
        x_test = jnp.asarray(x_test, dtype)
        t = jnp.asarray(t, dtype)
        _times(t, dtype)
        if (kind == "ntk" and compute_cov and "mkm" not in kept and not _is_traced(t)
                and not _is_traced(x_test)
                and dyn.wants_eigenbasis_product(x_test.shape[0]
                                                 * int(np.sum(np.isfinite(np.asarray(t)))))):
            kept["mkm"] = jnp.asarray(dyn.eigenbasis_product())
            object.__setattr__(dyn, "nngp_eigenbasis", kept["mkm"])  # held once
        return fused(x_test, t, train_arrays, kept.get("mkm"))

    predict_fn.dynamics = dyn
    predict_fn.solver = "dense"
    return predict_fn
