"""Log marginal likelihoods and cross-validated errors of the infinite-width GPs.

``kind="nngp"``: the targets are a draw of the NNGP prior plus noise,
``Y ~ N(0, K(X, X) + s I)`` per output column (Lee et al. 2019, sec. 2.3; the
posterior of eq. 13). ``kind="ntk"``: the same with the NTK ``Theta(X, X)`` as
the covariance, the Bayesian model whose posterior mean is the NTK-GP mean at
``t = inf`` (eq. 16); docs/fitting.md says why that and not eq. 16's own
covariance (which is zero on the train inputs at ``t = inf``).

Both are differentiable with respect to the net's trainable parameters
(``params``) and the noise, through :meth:`ntkdsl.Model.kernel_fn` with
``params=``. Solves are dense Cholesky factorisations in float64 with a
reported jitter policy (:data:`JITTERS`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from .diagnostics import InputError

KINDS = ("nngp", "ntk")
#: jitters tried in turn, relative to the mean of the diagonal, until the Cholesky
#: factor is finite: 0 first, then 1e-12 .. 1e-4 by decades (float64 resolves a
#: relative 1e-16; a kernel that needs more than 1e-4 is refused rather than fitted)
JITTERS = (0.0, *(10.0 ** k for k in range(-12, -3)))


class JitterWarning(UserWarning):
    """The train kernel needed a jitter on its diagonal to be factorised."""


@dataclass(frozen=True)
class LikelihoodInfo:
    """How a likelihood was computed.

    Attributes:
        kind: ``"nngp"`` or ``"ntk"``.
        n: train points; outputs: target columns.
        jitter: the absolute jitter added to the diagonal (0: none was needed).
        relative_jitter: the same relative to the mean of the diagonal
            (one of :data:`JITTERS`; NaN when none made the kernel factorisable).
        noise: the noise variance used; diag_reg: the relative regulariser used.
    """

    kind: str
    n: int
    outputs: int
    jitter: Any
    relative_jitter: Any
    noise: Any
    diag_reg: float


def _traced(*values: Any) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


def _targets(y, n: int):
    if not _traced(y):
        a = np.asarray(y)
        if not np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
            raise InputError(f"y must be a numeric array, got dtype {a.dtype}")
        if a.ndim not in (1, 2) or a.shape[0] != n:
            raise InputError(f"y must have shape ({n},) or ({n}, k), got {a.shape}")
        if not np.isfinite(a).all():
            raise InputError("y contains NaN or infinite values")
    y = jnp.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise InputError(f"y must have shape ({n},) or ({n}, k), got {tuple(y.shape)}")
    return y


def train_kernel(model, x, kind: str = "nngp", params: Mapping[str, Any] | None = None,
                 x2=None):
    """The kernel a likelihood uses, as a jax array (differentiable when the model has
    trainable parameters).

    Arguments:
        model: a :class:`ntkdsl.Model`.
        x: inputs ``(n, ...)``.
        kind: ``"nngp"`` or ``"ntk"``.
        params: trainable parameter values (defaults for those not given).
        x2: other inputs (``None``: x with itself).

    Returns:
        ``(n, n)`` (or ``(n, n2)``) jax array.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be 'nngp' or 'ntk', got {kind!r}")
    if getattr(model, "trainable", ()):
        return model.kernel_fn(x, x2, get=kind, params=dict(params or {}))
    if params:
        raise InputError("params= needs a model compiled with trainable parameters "
                         "(ntkdsl.compile(text, trainable=(\"W\", \"b\")))")
    return jnp.asarray(model.kernel_fn(x, x2, get=kind))


def _regularised(k, noise, diag_reg: float):
    if not isinstance(diag_reg, int | float) or isinstance(diag_reg, bool) or diag_reg < 0 \
            or not math.isfinite(diag_reg):
        raise InputError(f"diag_reg must be a number >= 0, got {diag_reg!r}")
    if not _traced(noise):
        v = np.asarray(noise)
        if v.shape != () or not np.isfinite(v) or v < 0:
            raise InputError(f"noise must be a number >= 0 (a variance), got {noise!r}")
    n = k.shape[0]
    shift = noise + (diag_reg * jnp.trace(k) / n if diag_reg else 0.0)
    return k + shift * jnp.eye(n, dtype=k.dtype)


def choose_jitter(a):
    """The first of :data:`JITTERS` (relative) that makes ``a`` Cholesky-factorisable.

    Runs as a ``lax.while_loop`` on ``stop_gradient(a)``, so it is traceable and
    gradients treat the chosen jitter as a constant.

    Returns:
        ``(absolute jitter, relative jitter)``: jax scalars, NaN when none worked.
    """
    a = jax.lax.stop_gradient(a)
    n = a.shape[0]
    scale = jnp.mean(jnp.diag(a))
    scale = jnp.where(scale > 0, scale, 1.0)
    levels = jnp.asarray(JITTERS, dtype=a.dtype)
    eye = jnp.eye(n, dtype=a.dtype)

    def works(i):
        chol = jnp.linalg.cholesky(a + levels[i] * scale * eye)
        return jnp.all(jnp.isfinite(chol))

    def cond(state):
        i, found = state
        return (~found) & (i < len(JITTERS))

    def body(state):
        i, _ = state
        ok = works(i)
        return jnp.where(ok, i, i + 1), ok

    i, found = jax.lax.while_loop(cond, body, (jnp.asarray(0), jnp.asarray(False)))
    rel = jnp.where(found, levels[jnp.minimum(i, len(JITTERS) - 1)], jnp.nan)
    return rel * scale, rel


def _cholesky(a, jitter):
    if jitter is None:
        absolute, relative = choose_jitter(a)
    else:
        scale = jax.lax.stop_gradient(jnp.mean(jnp.diag(a)))
        relative = jnp.asarray(float(jitter), dtype=a.dtype)
        absolute = relative * scale
    chol = jnp.linalg.cholesky(a + absolute * jnp.eye(a.shape[0], dtype=a.dtype))
    return chol, absolute, relative


def _factor(a, jitter):
    """``(L, absolute jitter, relative jitter)``: one Cholesky factorisation when none is
    needed; else the jitters of :data:`JITTERS` in turn (a ``lax.while_loop``)."""
    n = a.shape[0]
    eye = jnp.eye(n, dtype=a.dtype)
    scale = jnp.mean(jnp.diag(a))
    scale = jnp.where(scale > 0, scale, 1.0)
    if jitter is not None:
        rel = jnp.asarray(float(jitter), dtype=a.dtype)
        return jnp.linalg.cholesky(a + rel * scale * eye), rel * scale, rel
    levels = jnp.asarray(JITTERS, dtype=a.dtype)
    chol0 = jnp.linalg.cholesky(a)

    def cond(state):
        i, _, found = state
        return (~found) & (i < len(JITTERS) - 1)

    def body(state):
        i, _, _ = state
        chol = jnp.linalg.cholesky(a + levels[i + 1] * scale * eye)
        return i + 1, chol, jnp.all(jnp.isfinite(chol))

    i, chol, found = jax.lax.while_loop(
        cond, body, (jnp.asarray(0), chol0, jnp.all(jnp.isfinite(chol0))))
    rel = jnp.where(found, levels[i], jnp.nan)
    return chol, rel * scale, rel


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def gaussian_log_density(a, y, jitter=None):
    """``sum_k log N(y_k; 0, A + jitter I)`` over the columns of ``y``, and the jitter used.

    The gradient is the closed form ``dL/dA = (alpha alpha^T - k A^-1) / 2``,
    ``dL/dy = -alpha`` (``alpha = A^-1 y``), from the one Cholesky factor: cheaper
    than differentiating the factorisation, and the jitter search (a loop) needs no
    derivative. Reverse mode only (``jax.grad``/``vjp``), as for any ``custom_vjp``.

    Arguments:
        a: the covariance ``(n, n)`` (symmetric).
        y: targets ``(n, k)``.
        jitter: a fixed relative jitter, or ``None`` for the policy of :data:`JITTERS`.

    Returns:
        ``(value, absolute jitter, relative jitter)``.
    """
    value, absolute, relative, _ = _density_parts(a, y, jitter)
    return value, absolute, relative


def _density_parts(a, y, jitter):
    chol, absolute, relative = _factor(a, jitter)
    n, m = y.shape
    alpha = cho_solve((chol, True), y)
    value = (-0.5 * jnp.sum(y * alpha) - m * jnp.sum(jnp.log(jnp.diag(chol)))
             - 0.5 * n * m * math.log(2 * math.pi))
    return value, absolute, relative, (chol, alpha)


def _density_fwd(a, y, jitter):
    value, absolute, relative, res = _density_parts(a, y, jitter)
    return (value, absolute, relative), res


def _density_bwd(jitter, res, cts):
    chol, alpha = res
    ct = cts[0]
    m = alpha.shape[1]
    inv = cho_solve((chol, True), jnp.eye(chol.shape[0], dtype=chol.dtype))
    grad_a = 0.5 * (alpha @ alpha.T - m * (inv + inv.T) / 2)
    return ct * grad_a, -ct * alpha


gaussian_log_density.defvjp(_density_fwd, _density_bwd)


def _report(info: LikelihoodInfo, value) -> None:
    """Concrete calls only: refuse a failed factorisation, warn about a jitter."""
    rel = float(info.relative_jitter)
    if not math.isfinite(rel) or not math.isfinite(float(value)):
        raise InputError(
            f"the {info.kind} train kernel ({info.n} x {info.n}) is not positive definite even "
            f"with a jitter of {JITTERS[-1]:g} x its mean diagonal: give a noise variance "
            "(noise=..., --fit ...,noise) or diag_reg, or remove duplicate inputs")
    if rel > 0:
        warnings.warn(f"the {info.kind} train kernel needed a jitter of {rel:g} x its mean "
                      f"diagonal ({float(info.jitter):.3g}) to be factorised", JitterWarning,
                      stacklevel=3)


def log_marginal_likelihood(model, x, y, *, kind: str = "nngp", noise: Any = 0.0,
                            diag_reg: float = 0.0, params: Mapping[str, Any] | None = None,
                            jitter: float | None = None, return_info: bool = False):
    """The log marginal likelihood of targets under the NNGP or the NTK Gaussian process.

    ``log N(Y; 0, C)`` summed over the columns of ``Y``, with
    ``C = G(X, X) + (noise + diag_reg * tr(G) / n + jitter) I`` and ``G`` the NNGP
    kernel (``kind="nngp"``) or the NTK (``kind="ntk"``); see docs/fitting.md for the
    definitions (Lee et al. 2019, eq. 13 and 16).

    Arguments:
        model: a :class:`ntkdsl.Model` (compiled with ``trainable=`` to differentiate
            with respect to net parameters).
        x: train inputs ``(n, ...)``.
        y: targets ``(n,)`` or ``(n, k)`` (columns are independent outputs).
        kind: ``"nngp"`` or ``"ntk"``.
        noise: the observation noise variance (>= 0; may be traced).
        diag_reg: relative regulariser, ``diag_reg * tr(G) / n`` on the diagonal (as in
            :func:`ntkdsl.gp_inference`).
        params: trainable net-parameter values (defaults for the rest; may be traced).
        jitter: a fixed relative jitter; ``None`` (default): the first of
            :data:`JITTERS` that makes the Cholesky factor finite.
        return_info: also return a :class:`LikelihoodInfo` (the jitter used).

    Returns:
        The log likelihood: a Python float when nothing is traced (computed in
        float64; a needed jitter warns with :class:`JitterWarning`, a failure raises),
        else a jax scalar in the caller's precision (NaN when no jitter worked:
        ``info.relative_jitter`` is NaN then). With ``return_info``, ``(value, info)``.

    Raises:
        InputError: bad arguments; a concrete kernel that no jitter makes factorisable.
    """
    if _traced(x, y, noise, params):
        return _lml(model, x, y, kind, noise, diag_reg, params, jitter, return_info)
    with jax.enable_x64(True):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
            x = x.astype(np.float64)
        value, info = _lml(model, x, y, kind, noise, diag_reg, params, jitter, True)
        _report(info, value)
        info = LikelihoodInfo(info.kind, info.n, info.outputs, float(info.jitter),
                              float(info.relative_jitter), float(info.noise), info.diag_reg)
        value = float(value)
    return (value, info) if return_info else value


def _lml(model, x, y, kind, noise, diag_reg, params, jitter, return_info):
    k = train_kernel(model, x, kind, params)
    n = k.shape[0]
    yy = _targets(y, n).astype(k.dtype)
    a = _regularised(k, noise, diag_reg)
    value, absolute, relative = gaussian_log_density(a, yy, jitter)
    if not return_info:
        return value
    return value, LikelihoodInfo(kind, n, yy.shape[1], absolute, relative, noise, diag_reg)


def fold_indices(n: int, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, held-out) index pairs of a seeded random split of ``range(n)``.

    Raises:
        InputError: fewer than 2 folds, or more folds than points.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2 or folds > n:
        raise InputError(f"folds must be an integer from 2 to n = {n}, got {folds!r}")
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1:])), np.sort(parts[i]))
            for i in range(folds)]


def cross_validation_error(model, x, y, *, kind: str = "nngp", folds: int = 5,
                           noise: Any = 0.0, diag_reg: float = 0.0,
                           params: Mapping[str, Any] | None = None, seed: int = 0,
                           jitter: float | None = None):
    """The k-fold cross-validated mean squared error of the GP posterior mean.

    Each fold's held-out targets are predicted by the mean trained on the other
    folds: ``G_vt (G_tt + (noise + diag_reg tr/n + jitter) I)^{-1} Y_t``, the NNGP
    posterior mean (eq. 13) or the NTK-GP mean at ``t = inf`` (eq. 16). The error
    is averaged over every held-out entry. Differentiable like
    :func:`log_marginal_likelihood`; the kernel is computed once for all folds.

    Arguments:
        model, x, y, kind, noise, diag_reg, params, jitter: as for
            :func:`log_marginal_likelihood`.
        folds: the number of folds (2 .. n).
        seed: the seed of the random split.

    Returns:
        The mean squared held-out error: a float when nothing is traced, else a jax
        scalar.
    """
    if _traced(x, y, noise, params):
        return _cv(model, x, y, kind, folds, noise, diag_reg, params, seed, jitter)[0]
    with jax.enable_x64(True):
        value, rels = _cv(model, x, y, kind, folds, noise, diag_reg, params, seed, jitter)
        if not all(math.isfinite(float(r)) for r in rels) or not math.isfinite(float(value)):
            raise InputError(f"a fold's {kind} train kernel is not positive definite even with "
                             f"a jitter of {JITTERS[-1]:g} x its mean diagonal: give a noise "
                             "variance or diag_reg")
        return float(value)


def _cv(model, x, y, kind, folds, noise, diag_reg, params, seed, jitter):
    k = train_kernel(model, x, kind, params)
    n = k.shape[0]
    yy = _targets(y, n).astype(k.dtype)
    total = 0.0
    rels = []
    for train, held in fold_indices(n, folds, seed):
        a = _regularised(k[np.ix_(train, train)], noise, diag_reg)
        chol, _, rel = _cholesky(a, jitter)
        mean = k[np.ix_(held, train)] @ cho_solve((chol, True), yy[train])
        total = total + jnp.sum((mean - yy[held]) ** 2)
        rels.append(rel)
    return total / yy.size, rels
