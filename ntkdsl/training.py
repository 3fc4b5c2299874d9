"""Train a finite network and its linearisation side by side (paper sec. 2-3, fig. 1-4).

:func:`train` runs full-batch gradient descent, mini-batch SGD or heavy-ball
momentum on a network and on its first-order Taylor expansion around the same
initial parameters, with the same batches, and records outputs, losses,
selected weights, the relative change of every parameter array and of the
empirical NTK. One ``jax.jit`` covers the whole run (``lax.scan`` over record
points, a ``fori_loop`` over the steps between them) and ``jax.vmap`` runs an
ensemble of initialisations at once.

Conventions match :mod:`ntkdsl.predict`: ``loss="total"`` is the paper's
``sum 1/2 |f - y|^2`` (eq. 2) over the batch, ``loss="mean"`` divides by the
number of target entries of the batch (``batch * outputs``); cross-entropy
``-sum y . log_softmax(f)`` is reduced the same way. Momentum is
``v <- beta v - eta grad``, ``omega <- omega + v`` from ``v = 0``, exactly the
recurrence whose closed form :func:`ntkdsl.predict.gradient_descent_mse` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._x64 import float64
from .diagnostics import InputError

OPTIMIZERS = ("gd", "sgd", "momentum")
OBJECTIVES = ("mse", "cross_entropy")
Params = Any


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` recorded, as numpy arrays.

    With ``ensemble=True`` every per-run array has a leading ensemble axis ``E``;
    ``R`` is the number of record points (``steps[r]`` steps done at record ``r``).

    Attributes:
        steps: ``(R,)`` step counts at the record points (0 first, the last step last).
        fx_train, fx_test: network outputs ``(R, n, k)`` / ``(R, m, k)`` (test: ``None``
            without ``x_test``).
        loss_train, loss_test: ``(R,)`` losses on the full train / test set, with the
            training objective and reduction (test: ``None`` without ``y_test``).
        weight_change: ``(R, L)`` relative change ``|omega_t - omega_0|_F / |omega_0|_F`` of
            each parameter array (``param_names`` names them).
        watched: ``(R, w)`` values of ``watch(params)`` (``None`` without ``watch``).
        ntk_change: ``(R,)`` relative change ``|Theta_t - Theta_0|_F / |Theta_0|_F`` of the
            empirical NTK on the first ``ntk_points`` train inputs (``None`` if disabled).
        lin_*: the same for the linearised network (``None`` without ``linearized``);
            its NTK does not change by construction.
        params, lin_params: the final parameters (numpy pytrees).
        param_names: names of the parameter arrays (``jax.tree_util.keystr`` paths).
    """

    steps: np.ndarray
    fx_train: np.ndarray
    fx_test: np.ndarray | None
    loss_train: np.ndarray
    loss_test: np.ndarray | None
    weight_change: np.ndarray
    watched: np.ndarray | None
    ntk_change: np.ndarray | None
    lin_fx_train: np.ndarray | None
    lin_fx_test: np.ndarray | None
    lin_loss_train: np.ndarray | None
    lin_loss_test: np.ndarray | None
    lin_weight_change: np.ndarray | None
    lin_watched: np.ndarray | None
    params: Params
    lin_params: Params | None
    param_names: tuple[str, ...]

    def rmse(self, split: str = "test") -> np.ndarray:
        """RMSE between the network's and the linearisation's outputs at each record.

        Arguments:
            split: ``"test"`` or ``"train"``.

        Returns:
            ``([E,] R)`` root mean square over examples and outputs.
        """
        a = self.fx_test if split == "test" else self.fx_train
        b = self.lin_fx_test if split == "test" else self.lin_fx_train
        if a is None or b is None:
            raise InputError(f"rmse: expected recorded {split} outputs of both networks, "
                             "got none (pass x_test and linearized=True)")
        return np.sqrt(np.mean((a - b) ** 2, axis=(-2, -1)))


def loss_fn(objective: str | Callable, loss: str = "total") -> Callable:
    """``(f, y) -> scalar`` for an objective and reduction.

    Arguments:
        objective: ``"mse"`` (``1/2 |f - y|^2``), ``"cross_entropy"``
            (``-y . log_softmax(f)``) or a function ``(f, y) -> scalar`` (a total loss).
        loss: ``"total"`` (sum over examples and outputs) or ``"mean"`` (divided by ``y.size``).

    Returns:
        The loss function.
    """
    if loss not in ("total", "mean"):
        raise InputError(f"loss: expected one of total, mean, got {loss!r}")
    if callable(objective):
        base = objective
    elif objective == "mse":
        def base(f, y):
            return 0.5 * jnp.sum((f - y) ** 2)
    elif objective == "cross_entropy":
        def base(f, y):
            return -jnp.sum(y * jax.nn.log_softmax(f, axis=-1))
    else:
        raise InputError(f"objective: expected one of {', '.join(OBJECTIVES)} or a function, "
                         f"got {objective!r}")
    if loss == "total":
        return base
    return lambda f, y: base(f, y) / y.size


@float64
def init_ensemble(model, key, input_shape, size: int) -> Params:
    """``size`` independent initialisations, stacked on a leading axis (for ``ensemble=True``).

    Arguments:
        model: a :class:`ntkdsl.Model` (or anything with ``init(key, input_shape)``).
        key: a ``jax.random`` key.
        input_shape: one input's shape, without the batch axis.
        size: the ensemble size.

    Returns:
        The params pytree with a leading axis of ``size``.
    """
    keys = jax.random.split(key, int(size))
    return jax.vmap(lambda k: model.init(k, tuple(input_shape)))(keys)


def _tree_sub(a, b):
    return jax.tree_util.tree_map(lambda u, v: u - v, a, b)


def _relative_changes(p, p0):
    out = []
    for u, v in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(p0)):
        base = jnp.linalg.norm(v.ravel())
        out.append(jnp.linalg.norm((u - v).ravel()) / jnp.where(base > 0, base, 1))
    return jnp.stack(out) if out else jnp.zeros((0,))


def _record_points(steps: int, every: int) -> np.ndarray:
    pts = list(range(0, steps + 1, every))
    if pts[-1] != steps:
        pts.append(steps)
    return np.asarray(pts, np.int64)


@float64
def train(model, params0, x_train, y_train, x_test=None, y_test=None, *,
          optimizer: str = "gd", learning_rate: float, steps: int, record_every: int = 1,
          objective: str | Callable = "mse", loss: str = "total", momentum: float = 0.9,
          batch_size: int | None = None, key=None, linearized: bool = True,
          ensemble: bool = False, watch: Callable | None = None,
          ntk_points: int | None = 16, dtype=None) -> TrainResult:
    """Train a network and its linearisation from the same init; record the dynamics.

    Arguments:
        model: a :class:`ntkdsl.Model` or an ``apply_fn(params, x)``.
        params0: initial parameters (with a leading ensemble axis if ``ensemble``).
        x_train, y_train: ``(n, ...)`` inputs and ``(n, k)`` targets (one-hot for
            cross-entropy).
        x_test, y_test: optional test inputs / targets.
        optimizer: ``"gd"`` (full batch), ``"sgd"`` (mini-batches of ``batch_size``, drawn
            without replacement each step) or ``"momentum"`` (heavy ball; full batch
            unless ``batch_size``).
        learning_rate: ``eta``.
        steps: number of steps.
        record_every: record every this many steps (and at the last step).
        objective: ``"mse"``, ``"cross_entropy"`` or a function ``(f, y) -> scalar``.
        loss: ``"total"`` (paper eq. 2) or ``"mean"``.
        momentum: ``beta`` for ``"momentum"``.
        batch_size: mini-batch size (required for ``"sgd"``).
        key: ``jax.random`` key for the batches (default ``PRNGKey(0)``); with an ensemble
            each member gets its own stream.
        linearized: also train the linearisation ``f(omega_0) + J (omega - omega_0)``.
        ensemble: ``params0`` leaves carry a leading ensemble axis (see
            :func:`init_ensemble`); everything is ``vmap``-ed over it.
        watch: ``params -> 1-D array`` of weights to record (e.g. a few entries).
        ntk_points: train inputs used for the empirical-NTK change (``0`` or ``None``:
            not recorded).
        dtype: float64 (default) or float32 for data and parameters.

    Returns:
        A :class:`TrainResult`.
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "sgd" and batch_size is None:
        raise InputError("batch_size: expected a positive integer for optimizer='sgd', got None")
    steps, record_every = int(steps), int(record_every)
    if steps < 0 or record_every < 1:
        raise InputError(f"steps/record_every: expected steps >= 0 and record_every >= 1, got "
                         f"{steps} and {record_every}")
    if not learning_rate > 0:
        raise InputError(f"learning_rate: expected a positive number, got {learning_rate}")
    dtype = jnp.float64 if dtype is None else jnp.dtype(dtype)
    apply_fn = model.apply if hasattr(model, "apply") else model
    lfn = loss_fn(objective, loss)
    x = jnp.asarray(x_train, dtype)
    y = jnp.asarray(y_train, dtype)
    if y.ndim == 1:
        y = y[:, None]
    n = x.shape[0]
    if y.ndim != 2 or y.shape[0] != n:
        raise InputError(f"y_train: expected shape ({n}, outputs) to match x_train {x.shape}, "
                         f"got {y.shape}")
    for name, a in (("x_train", x), ("y_train", y)):
        if not bool(jnp.all(jnp.isfinite(a))):
            raise InputError(f"{name}: expected finite values, got NaN/inf in shape {a.shape}")
    xt = None if x_test is None else jnp.asarray(x_test, dtype)
    yt = None if y_test is None else jnp.asarray(y_test, dtype)
    if yt is not None and yt.ndim == 1:
        yt = yt[:, None]
    if yt is not None and (xt is None or yt.shape != (xt.shape[0], y.shape[1])):
        raise InputError(f"y_test: expected shape ({'m' if xt is None else xt.shape[0]}, "
                         f"{y.shape[1]}) matching x_test, got {yt.shape}")
    b = n if batch_size is None else int(batch_size)
    if not 1 <= b <= n:
        raise InputError(f"batch_size: expected 1..{n}, got {batch_size}")
    beta = float(momentum) if optimizer == "momentum" else 0.0
    if not 0 <= beta < 1:
        raise InputError(f"momentum: expected a number in [0, 1), got {momentum}")
    params0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params0)
    # A net with fewer outputs than targets would broadcast silently in the loss
    # (and train with a silently scaled rate): compare shapes before any work.
    one = jax.tree_util.tree_map(lambda a: a[0], params0) if ensemble else params0
    out = jax.eval_shape(apply_fn, one, x[:1])
    if out.shape[1:] != y.shape[1:]:
        raise InputError(f"y_train: expected {out.shape[-1]} outputs per example (what the "
                         f"network gives), got shape {y.shape}")
    key = jax.random.PRNGKey(0) if key is None else key
    n_ntk = 0 if not ntk_points else min(int(ntk_points), n)
    points = _record_points(steps, record_every)
    increments = jnp.asarray(np.diff(points), jnp.int32)
    eta = float(learning_rate)
    names = tuple(jax.tree_util.keystr(p)
                  for p, _ in jax.tree_util.tree_flatten_with_path(params0)[0])

    def run_one(p0, k0):
        from .empirical import empirical_ntk, linearize

        f_lin = linearize(apply_fn, p0) if linearized else None
        theta0 = empirical_ntk(apply_fn, p0, x[:n_ntk]) if n_ntk else None

        def batch(k):
            if b == n:
                return x, y
            idx = jax.random.permutation(k, n)[:b]
            return x[idx], y[idx]

        def grads(fn, p, xb, yb):
            return jax.grad(lambda q: lfn(fn(q, xb), yb))(p)

        def update(fn, p, v, xb, yb):
            g = grads(fn, p, xb, yb)
            v = jax.tree_util.tree_map(lambda vi, gi: beta * vi - eta * gi, v, g)
            return jax.tree_util.tree_map(lambda pi, vi: pi + vi, p, v), v

        def step(_, state):
            p, v, lp, lv, k = state
            k, sub = jax.random.split(k)
            xb, yb = batch(sub)
            p, v = update(apply_fn, p, v, xb, yb)
            if linearized:
                lp, lv = update(f_lin, lp, lv, xb, yb)
            return p, v, lp, lv, k

        def observe(fn, p):
            out = {"fx_train": fn(p, x), "weight_change": _relative_changes(p, p0)}
            out["loss_train"] = lfn(out["fx_train"], y)
            if xt is not None:
                out["fx_test"] = fn(p, xt)
                if yt is not None:
                    out["loss_test"] = lfn(out["fx_test"], yt)
            if watch is not None:
                out["watched"] = jnp.ravel(watch(p))
            return out

        def record(state):
            p, _, lp, _, _ = state
            out = observe(apply_fn, p)
            if n_ntk:
                theta = empirical_ntk(apply_fn, p, x[:n_ntk])
                out["ntk_change"] = (jnp.linalg.norm(theta - theta0)
                                     / jnp.linalg.norm(theta0))
            if linearized:
                out.update({f"lin_{kk}": vv for kk, vv in observe(f_lin, lp).items()})
            return out

        zeros = jax.tree_util.tree_map(jnp.zeros_like, p0)
        state0 = (p0, zeros, p0, zeros, k0)

        def chunk(state, inc):
            state = jax.lax.fori_loop(0, inc, step, state)
            return state, record(state)

        final, recs = jax.lax.scan(chunk, state0, increments)
        first = record(state0)
        recs = jax.tree_util.tree_map(lambda a, r: jnp.concatenate([a[None], r]), first, recs)
        return recs, final[0], final[2]

    if ensemble:
        sizes = {a.shape[0] for a in jax.tree_util.tree_leaves(params0)}
        if len(sizes) != 1:
            raise InputError(f"params0: expected one leading ensemble axis on every leaf, got "
                             f"sizes {sorted(sizes)}")
        keys = jax.random.split(key, sizes.pop())
        recs, pf, lpf = jax.jit(jax.vmap(run_one))(params0, keys)
    else:
        recs, pf, lpf = jax.jit(run_one)(params0, key)
    recs = {kk: np.asarray(vv) for kk, vv in recs.items()}
    return TrainResult(
        steps=points, fx_train=recs["fx_train"], fx_test=recs.get("fx_test"),
        loss_train=recs["loss_train"], loss_test=recs.get("loss_test"),
        weight_change=recs["weight_change"], watched=recs.get("watched"),
        ntk_change=recs.get("ntk_change"),
        lin_fx_train=recs.get("lin_fx_train"), lin_fx_test=recs.get("lin_fx_test"),
        lin_loss_train=recs.get("lin_loss_train"), lin_loss_test=recs.get("lin_loss_test"),
        lin_weight_change=recs.get("lin_weight_change"), lin_watched=recs.get("lin_watched"),
        params=jax.tree_util.tree_map(np.asarray, pf),
        lin_params=jax.tree_util.tree_map(np.asarray, lpf) if linearized else None,
        param_names=names,
    )
