"""Training dynamics and Gaussian-process predictions (Lee et al. 2019, eq. 6-16).

Everything here works on plain kernel matrices, so the same code serves the
analytic kernels of a spec (infinite width) and the empirical NTK of a finite
network (its linearisation). See ``docs/maths.md`` for the derivations.

Conventions
-----------
* Kernels are per-output matrices ``(n1, n2)`` and act on outputs
  ``(n, k)`` as ``Theta (x) I_k`` (outputs are independent). The MSE dynamics
  (:func:`gradient_descent_mse`) also accept a full kernel ``(n1, k, n2, k)``
  (a finite net's empirical NTK without averaging over outputs), which makes
  the linearised dynamics of a finite net exact.
* ``loss="total"`` (the paper's eq. 2): ``L = sum_i 1/2 |f(x_i) - y_i|^2``, so
  gradient flow is ``df/dt = -eta Theta (f - y)``.
  ``loss="mean"`` (the peer library's convention): ``L = 1/(2 n k) sum |f - y|^2``
  over the ``n k = y_train.size`` entries, which is the total loss with
  ``eta`` replaced by ``eta / (n k)``; every function below takes ``loss`` and
  rescales the learning rate exactly so.
* Continuous time ``t`` is the paper's: ``f_t = (I - e^{-eta Theta t}) Y + ...``.
  For discrete optimisers (``"gd"``, ``"momentum"``) ``t`` counts steps.
* ``diag_reg`` adds ``diag_reg * trace(K) / n`` to the diagonal of the train
  kernel that is inverted (relative to its mean eigenvalue, so it is scale
  free; the peer's default).

Numerics: one symmetric eigendecomposition of the train kernel serves every
finite time; ``t = inf`` uses a Cholesky solve in :func:`gp_inference` and
:func:`gradient_descent_mse` (falling back to an eigenvalue-thresholded
pseudo-inverse, with a warning, when the kernel is not numerically positive
definite) and the same eigendecomposition in :func:`gradient_descent_mse_gp`
(``1 / lambda`` per mode, warning when the threshold drops a mode). Eigenvalues
are clipped at 0. An
ill-conditioned kernel warns with its condition number
(:class:`IllConditionedWarning`); a learning rate above ``eta_critical`` warns
for the discrete optimisers (:class:`LearningRateWarning`). All predictor
objects are pure JAX in their time and test arguments, so they can be jitted.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ._x64 import float64
from .diagnostics import InputError
from .dynamics import (
    KINDS,
    Gaussian,
    _check_loss,
    _flow_factors,
    _mode_factors,
    effective_learning_rate,
)

Array = Any

# ``ntkdsl.predict`` is this module (a namespace, like the peer's ``nt.predict``);
# ntkdsl/__init__.py resolves the public name ``predict`` through this attribute.
predict = sys.modules[__name__]

OPTIMIZERS = ("flow", "gd", "momentum")


class IllConditionedWarning(UserWarning):
    """The train kernel is close to singular: solves lose digits."""


class LearningRateWarning(UserWarning):
    """A discrete-step learning rate above ``eta_critical``."""


# -- input checks ----------------------------------------------------------------

def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _as_array(x, name: str, dtype) -> jax.Array:
    if x is None:
        raise InputError(f"{name}: expected an array, got None")
    if not _is_traced(x) and np.iscomplexobj(x):  # the cast would drop the imaginary part
        raise InputError(f"{name}: expected real numbers, got a complex array "
                         f"(dtype {np.asarray(x).dtype})")
    try:
        a = jnp.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: expected a numeric array, got {type(x).__name__} ({e})") from e
    if not _is_traced(a) and not bool(jnp.all(jnp.isfinite(a))):
        bad = int(jnp.sum(~jnp.isfinite(a)))
        raise InputError(f"{name}: expected finite values, got {bad} NaN/inf entries "
                         f"in an array of shape {a.shape}")
    return a


def _targets(y, n: int, dtype) -> jax.Array:
    y = _as_array(y, "y_train", dtype)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise InputError(f"y_train: expected shape ({n}, outputs) to match the train kernel, "
                         f"got {y.shape}")
    return y


def _square(k, name: str, dtype) -> jax.Array:
    k = _as_array(k, name, dtype)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise InputError(f"{name}: expected a square matrix (n, n), got shape {k.shape}")
    return k


def _rows(k, name: str, n: int, dtype) -> jax.Array:
    k = _as_array(k, name, dtype)
    if k.ndim != 2 or k.shape[1] != n:
        raise InputError(f"{name}: expected shape (n_test, {n}), got {k.shape}")
    return k


def _dtype(dtype):
    return jnp.float64 if dtype is None else jnp.dtype(dtype)


def symmetry_tolerance(*dtypes) -> float:
    """Relative asymmetry ``max |K - K^T| / max |K|`` accepted as rounding: ``sqrt(eps)``
    of the least precise of ``dtypes`` (1.5e-8 in float64, 3.5e-4 in float32)."""
    eps = max((float(np.finfo(d).eps) for d in dtypes
               if d is not None and np.dtype(d).kind == "f"), default=float(np.finfo(float).eps))
    return math.sqrt(eps)


def check_symmetric(k, name: str, source_dtype=None) -> None:
    """Refuse a kernel that is not symmetric up to rounding (it would be silently averaged).

    Arguments:
        k: a square ``(n, n)`` array (not traced).
        name: how the message names it.
        source_dtype: the dtype the kernel had before any cast (its rounding counts).

    Raises:
        InputError: naming the worst pair of entries, the scale and the tolerance.
    """
    if _is_traced(k):
        return
    a = np.asarray(k)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if scale == 0:
        return
    diff = np.abs(a - a.T)
    worst = float(np.max(diff))
    tol = symmetry_tolerance(source_dtype, a.dtype)
    if worst > tol * scale:
        i, j = (int(v) for v in np.unravel_index(int(np.argmax(diff)), diff.shape))
        count = int(np.count_nonzero(np.triu(diff > tol * scale)))
        raise InputError(
            f"{name}: expected a symmetric kernel, but {name}[{i}, {j}] = {a[i, j]:.6g} and "
            f"{name}[{j}, {i}] = {a[j, i]:.6g} ({count} pair{'s' if count != 1 else ''} differ "
            f"by more than {tol:.2g} x the largest entry {scale:.3g}); pass (K + K.T) / 2 "
            f"if the difference is intended")


def diag_reg_advice(evals, mean_diag: float, condition_limit: float,
                    margin: float = 4.0) -> float | None:
    """The smallest relative ``diag_reg`` that brings the condition number under a limit.

    With the convention of :func:`spectrum` (``diag_reg * trace(K) / n`` added to the
    diagonal, shifting every eigenvalue by ``r * mean_diag``), the condition number
    ``(l_max + r m) / (l_min + r m)`` is at most ``C = condition_limit / margin`` when
    ``r >= (l_max - C l_min) / (m (C - 1))``; the margin absorbs the rounding of the
    eigenvalues the warning was computed from. Rounded up to two significant digits.

    Arguments:
        evals: eigenvalues of the unregularised (symmetrised) kernel, ascending.
        mean_diag: ``trace(K) / n`` of that kernel.
        condition_limit: the condition number the warning fires above.
        margin: how far under the limit to aim.

    Returns:
        The advice, or ``None`` when ``mean_diag <= 0`` (no relative regulariser helps).
    """
    lam = np.asarray(evals, np.float64)
    big, small = float(lam[-1]), float(lam[0])
    target = condition_limit / margin
    if mean_diag <= 0 or target <= 1:
        return None
    r = max((big - target * small) / (mean_diag * (target - 1)), 0.0)
    if r == 0:
        return 0.0
    digits = 10 ** (math.floor(math.log10(r)) - 1)
    return math.ceil(r / digits) * digits


# -- the train kernel's spectrum ----------------------------------------------------

def _regularize(k: jax.Array, diag_reg: float) -> jax.Array:
    if diag_reg < 0:
        raise InputError(f"diag_reg: expected a number >= 0, got {diag_reg}")
    k = (k + k.T) / 2  # checked symmetric up to rounding; remove that rounding before eigh
    if diag_reg:
        n = k.shape[0]
        k = k + diag_reg * jnp.trace(k) / n * jnp.eye(n, dtype=k.dtype)
    return k


def _symmetrised(a: np.ndarray, name: str, source_dtype=None, tile: int = 256) -> np.ndarray:
    """:func:`check_symmetric` and ``(a + a.T) / 2`` of a concrete kernel in one pass over
    pairs of square tiles (a whole-matrix transpose reads memory 6x slower at n = 4000)."""
    n = a.shape[0]
    out = np.empty(a.shape, a.dtype)
    worst = scale = 0.0
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            upper, lower = a[i:i + tile, j:j + tile], a[j:j + tile, i:i + tile].T
            if upper.size:
                worst = max(worst, float(np.max(np.abs(upper - lower))))
                scale = max(scale, float(np.max(np.abs(upper))), float(np.max(np.abs(lower))))
            part = upper + lower
            part *= 0.5  # exact, like the division by 2
            out[i:i + tile, j:j + tile] = part
            out[j:j + tile, i:i + tile] = part.T
    if scale and worst > symmetry_tolerance(source_dtype, a.dtype) * scale:
        check_symmetric(a, name, source_dtype)  # the same test: raises, naming the pair
    return out


def _prepared(k, diag_reg: float, name: str, source_dtype=None):
    """The checked, symmetrised and regularised train kernel (numpy when concrete)."""
    if _is_traced(k):
        return _regularize(k, diag_reg)
    if diag_reg < 0:
        raise InputError(f"diag_reg: expected a number >= 0, got {diag_reg}")
    a = _symmetrised(np.asarray(k), name, source_dtype)
    if diag_reg:
        a[np.diag_indices(a.shape[0])] += diag_reg * np.trace(a) / a.shape[0]
    return a


# Concrete kernels are factorised by LAPACK through scipy (the divide-and-conquer
# ``?syevd`` that jax also calls on CPU, without jax's extra symmetrising copy), and
# the large products run in numpy, whose BLAS is faster on CPU than XLA's dot; traced
# kernels (inside a user's jit) take the jax path. Both are module functions so the
# tests can count the factorisations.

# LAPACK's copy of the input (which becomes the eigenvectors) and dsyevd's workspace
# of 2 n^2 + 6 n + 1 doubles.
_EIGH_COPIES = 3


@contextlib.contextmanager
def _dense_memory(name: str, n: int, copies: int):
    """Turn a failed allocation of a dense factorisation into an error that says what
    to use instead (the CLI's exit 2, not an internal error)."""
    try:
        yield
    except MemoryError as e:
        raise InputError(
            f"{name}: the dense factorisation of a {n}-point kernel ran out of memory ({e}); "
            f"it needs about {copies * n * n * 8 / 2**30:.1f} GiB beside the kernels; pass "
            "solver='cg' to gp_inference, gradient_descent_mse_gp or predict_fn (CLI: "
            "--solver cg), which factorises nothing dense") from e


def _eigh(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a concrete symmetric matrix."""
    import scipy.linalg

    return scipy.linalg.eigh(k, driver="evd", check_finite=False)


def _cholesky(k: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a concrete matrix, or ``None`` if it is not positive
    definite in floating point."""
    import scipy.linalg

    try:
        chol = scipy.linalg.cholesky(k, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    return chol if bool(np.all(np.isfinite(np.diagonal(chol)))) else None


@dataclass(frozen=True)
class Spectrum:
    """The regularised train kernel, its eigendecomposition and (when it exists) Cholesky factor.

    ``chol`` is ``None`` when the kernel is not numerically positive definite;
    then ``t = inf`` uses ``pinv`` (eigenvalues below ``rcond * lambda_max``
    dropped). Concrete kernels give numpy arrays, traced ones jax arrays; a posterior
    without dynamics (:func:`gp_inference`) may hold only ``chol`` (``evals`` and
    ``evecs`` None, ``condition`` LAPACK's estimate).
    """

    kernel: jax.Array
    evals: jax.Array  # clipped at 0, ascending
    evecs: jax.Array
    chol: jax.Array | None
    condition: float

    @property
    def n(self) -> int:
        return self.kernel.shape[0]

    @property
    def concrete(self) -> bool:
        """Whether the factors are concrete (numpy) arrays, not tracers of a jit."""
        return not (_is_traced(self.evecs) or _is_traced(self.chol))

    def solve(self, rhs: jax.Array) -> jax.Array:
        """``K^{-1} rhs`` (Cholesky, or the thresholded pseudo-inverse)."""
        if self.concrete and not _is_traced(rhs):
            return self._solve_np(np.asarray(rhs))
        if self.chol is not None:
            return cho_solve((self.chol, True), rhs)
        lam = self.evals
        cut = lam[-1] * self.n * jnp.finfo(lam.dtype).eps
        inv = jnp.where(lam > cut, 1 / jnp.where(lam > cut, lam, 1), 0)
        return self.evecs @ (inv[:, None] * (self.evecs.T @ rhs))

    def _solve_np(self, rhs: np.ndarray) -> np.ndarray:
        import scipy.linalg

        if self.chol is not None:
            return scipy.linalg.cho_solve((np.asarray(self.chol), True), rhs,
                                          check_finite=False)
        return self._pinv_np(rhs, 1.0)

    def _pinv_np(self, rhs: np.ndarray, power: float) -> np.ndarray:
        """``V diag(lam^-power) V^T rhs`` (``power`` 1) or ``diag(lam^-1/2) V^T rhs``
        (``power`` 0.5), eigenvalues below the cut of :meth:`solve` dropped."""
        v = np.asarray(self.evecs)
        w = self.inverse_weights(power)[:, None] * (v.T @ rhs)
        return v @ w if power == 1.0 else w

    def inverse_weights(self, power: float = 1.0) -> np.ndarray:
        """``lambda^-power`` of the concrete eigenvalues, 0 below the pseudo-inverse's cut
        ``n eps lambda_max`` (``power`` 1 or 0.5)."""
        lam = np.asarray(self.evals)
        cut = lam[-1] * self.n * np.finfo(lam.dtype).eps
        keep = lam > cut
        safe = np.where(keep, lam, 1)
        return np.where(keep, 1 / (safe if power == 1.0 else np.sqrt(safe)), 0)

    def half_solve(self, rhs: jax.Array) -> jax.Array:
        """``Z`` with ``Z^T Z = rhs^T K^{-1} rhs`` (keeps posterior covariances symmetric)."""
        if self.concrete and not _is_traced(rhs):
            rhs = np.asarray(rhs)
            if self.chol is None:
                return self._pinv_np(rhs, 0.5)
            import scipy.linalg

            return scipy.linalg.solve_triangular(np.asarray(self.chol), rhs, lower=True,
                                                 check_finite=False)
        if self.chol is not None:
            return solve_triangular(self.chol, rhs, lower=True)
        lam = self.evals
        cut = lam[-1] * self.n * jnp.finfo(lam.dtype).eps
        inv = jnp.where(lam > cut, 1 / jnp.sqrt(jnp.where(lam > cut, lam, 1)), 0)
        return inv[:, None] * (self.evecs.T @ rhs)


@float64
def spectrum(k_train_train, *, diag_reg: float = 0.0, dtype=None, name: str = "k_train_train",
             warn: bool = True, source_dtype=None, cholesky: bool = True) -> Spectrum:
    """Regularise, eigendecompose and Cholesky-factor a train kernel, warning if ill-conditioned.

    Arguments:
        k_train_train: ``(n, n)`` kernel on the training inputs.
        diag_reg: relative diagonal regulariser (times ``trace / n``).
        dtype: computation dtype (default float64).
        name: how errors and warnings name the kernel.
        source_dtype: the dtype the kernel was computed in, when ``k_train_train`` is
            already a cast of it (its rounding sets the symmetry tolerance).
        warn: emit :class:`IllConditionedWarning` when the condition number exceeds
            ``1e-3 / eps`` (about 4.5e12 in float64, 8.4e3 in float32: solves may lose
            all but 3 digits); the warning names the ``diag_reg`` that silences it
            (:func:`diag_reg_advice`).
        cholesky: also factor the kernel for ``solve``; ``False`` leaves ``chol`` None, so
            solves use the eigenbasis (the pseudo-inverse), and then the warning also
            fires whenever that drops eigenvalues (below ``n eps lambda_max``).

    Returns:
        A :class:`Spectrum`.

    Raises:
        InputError: a kernel that is not square, not finite, not symmetric up to
            rounding (:func:`check_symmetric`), or without a positive eigenvalue.
    """
    dtype = _dtype(dtype)
    k = _square(k_train_train, name, dtype)
    diag_reg = float(diag_reg)
    k = _prepared(k, diag_reg, name, source_dtype or getattr(k_train_train, "dtype", None))
    traced = _is_traced(k)
    if traced:
        evals, evecs = jnp.linalg.eigh(k)
    else:
        with _dense_memory(name, k.shape[0], _EIGH_COPIES):
            evals, evecs = _eigh(k)
        if not bool(np.all(np.isfinite(evals))):
            raise InputError(f"{name}: eigendecomposition failed (non-finite eigenvalues)")
    lam_max = float(evals[-1]) if not traced else 1.0
    lam_min = float(evals[0]) if not traced else 1.0
    eps = float(jnp.finfo(dtype).eps)
    condition = lam_max / lam_min if lam_min > 0 else math.inf
    chol = None
    if cholesky and lam_min > 0:
        if traced:
            chol = jnp.linalg.cholesky(k)
        else:
            with _dense_memory(name, k.shape[0], 1):
                chol = _cholesky(k)
    limit = 1e-3 / eps
    if cholesky:
        pinv = chol is None
        positive = not pinv
    else:  # solves drop the eigenvalues under the pseudo-inverse's cut: warn then too
        positive = lam_min > 0
        pinv = condition >= 1 / (k.shape[0] * eps)
        limit = min(limit, 1 / (k.shape[0] * eps))
    if warn and (condition > limit or not positive or pinv) and lam_max > 0:
        how = ("is not numerically positive definite" if not positive
               else "is ill-conditioned")
        # the advice is for the unregularised kernel: undo the shift diag_reg made
        mean_diag = float((jnp if traced else np).trace(k)) / k.shape[0] / (1 + diag_reg)
        shift = diag_reg * mean_diag
        advice = diag_reg_advice(np.asarray(evals) - shift, mean_diag, limit)
        fix = ("" if advice is None else
               f"; pass diag_reg={advice:.2g} (the smallest that brings the condition number "
               f"under {limit:.3g}) to regularise")
        warnings.warn(
            f"{name} {how} (condition number {condition:.3g}, smallest eigenvalue "
            f"{lam_min:.3g}, largest {lam_max:.3g}, {jnp.dtype(dtype).name}); t = inf solves and "
            f"posteriors lose accuracy{' (using a pseudo-inverse)' if pinv else ''}"
            f"{fix}",
            IllConditionedWarning, stacklevel=3)
    if lam_max <= 0 and not _is_traced(evals):
        raise InputError(f"{name}: expected a positive semi-definite kernel with a positive "
                         f"eigenvalue, got largest eigenvalue {lam_max:.3g}")
    return Spectrum(k, (jnp.maximum(evals, 0) if traced else np.maximum(evals, 0)), evecs,
                    chol, condition)


@float64
def eta_critical(k_train_train, *, loss: str = "total", n_outputs: int = 1,
                 momentum: float = 0.0) -> float:
    """The paper's critical learning rate ``2 / (lambda_min + lambda_max)`` of the train kernel.

    Below it, discrete gradient descent contracts every eigenmode monotonically
    (Theorem 2.1's condition); it diverges above ``2 / lambda_max``. With the
    mean loss the value is multiplied by ``n * n_outputs`` (see module docs);
    with momentum ``beta`` by ``1 + beta`` (each mode's recurrence is stable for
    ``0 < eta lambda < 2 (1 + beta)``).

    Arguments:
        k_train_train: ``(n, n)`` per-output kernel or full ``(n, k, n, k)`` kernel.
        loss: ``"total"`` or ``"mean"``.
        n_outputs: outputs per example ``k`` (only used for ``loss="mean"`` with a 2-D kernel).
        momentum: heavy-ball momentum ``beta`` in ``[0, 1)``.

    Returns:
        ``eta_critical`` as a Python float.
    """
    _check_loss(loss)
    k = jnp.asarray(k_train_train, jnp.float64)
    if k.ndim == 4:
        n_outputs = 1
        k = k.reshape(k.shape[0] * k.shape[1], -1)
    k = _square(k, "k_train_train", jnp.float64)
    check_symmetric(k, "k_train_train", getattr(k_train_train, "dtype", None))
    lam = jnp.linalg.eigvalsh((k + k.T) / 2)
    lam_min, lam_max = max(float(lam[0]), 0.0), float(lam[-1])
    if lam_max <= 0:
        raise InputError(f"k_train_train: expected a positive eigenvalue, got {lam_max:.3g}")
    eta = 2 * (1 + momentum) / (lam_min + lam_max)
    return eta * (k.shape[0] * n_outputs if loss == "mean" else 1)


# -- per-eigenmode factors of the dynamics ------------------------------------------
#
# Every linear dynamics below has, per eigenmode (lambda, v) of the train kernel,
#   residual_t = s(t) * residual_0        (residual = f_train - y along v)
#   c_t        = -h(t) * residual_0 with h = (1 - s) / lambda   (the coefficient in
#   omega_t - omega_0 = J^T c_t and f_test_t - f_test_0 = Theta_tX c_t),
# with h(t) -> its lambda -> 0 limit on null modes.


def _times(t, dtype) -> tuple[jax.Array, tuple[int, ...]]:
    t = jnp.asarray(t, dtype)
    if not _is_traced(t):
        if bool(jnp.any(jnp.isnan(t))) or bool(jnp.any(t < 0)):
            raise InputError(f"t: expected times >= 0 (inf allowed), got {np.asarray(t)}")
    return t.reshape(-1), t.shape


def _check_steps(t, optimizer: str) -> None:
    if optimizer != "flow" and not _is_traced(t):
        finite = t[jnp.isfinite(t)]
        if bool(jnp.any(finite != jnp.round(finite))):
            raise InputError(f"t: expected whole numbers of steps for optimizer={optimizer!r}, "
                             f"got {np.asarray(t)}")


# -- MSE dynamics of a linear(ised) model: eq. 8-11 and discrete analogues ------------

@dataclass(frozen=True)
class MSEDynamics:
    """Closed-form MSE training of a linear model with train kernel ``Theta`` (eq. 8-11).

    Built by :func:`gradient_descent_mse`. Call it as
    ``dyn(t, fx_train_0, fx_test_0=None, k_test_train=None)``; use
    :meth:`coefficients` / :meth:`weight_change` for eq. 8.
    """

    spec: Spectrum
    y_train: jax.Array  # (N, k) in flattened layout
    eta: float  # effective rate of the total-loss dynamics
    optimizer: str
    momentum: float
    n_outputs: int
    full: bool  # True: kernel was (n, k, n, k), layout flattened to (n k, 1)

    def _flat_train(self, fx):
        fx = jnp.broadcast_to(jnp.asarray(fx, self.y_train.dtype),
                              (self.y_train.shape[0] // (self.n_outputs if self.full else 1),
                               self.n_outputs))
        return fx.reshape(-1, 1) if self.full else fx

    def residual_coefficients(self, t, fx_train_0=0.0):
        """Per-time coefficients of the dynamics.

        Arguments:
            t: times (steps for discrete optimisers), any shape; ``inf`` allowed.
            fx_train_0: train outputs at initialisation ``(n, k)`` (a scalar broadcasts).

        Returns:
            ``(fx_train_t, c_t)``: train outputs ``(*t.shape, n, k)`` and the
            coefficients ``c_t`` ``(*t.shape, n, k)`` with
            ``omega_t - omega_0 = J^T c_t`` and ``f_test_t - f_test_0 = Theta_tX c_t``
            (``c_t = -Theta^{-1} (I - e^{-eta Theta t}) (f_0 - Y)``, eq. 8).
        """
        dtype = self.y_train.dtype
        tt, shape = _times(t, dtype)
        _check_steps(tt, self.optimizer)
        r0 = self._flat_train(fx_train_0) - self.y_train
        inf = jnp.isinf(tt)
        s, h = _mode_factors(self.optimizer, self.spec.evals, jnp.where(inf, 0, tt), self.eta,
                             self.momentum)
        v = self.spec.evecs
        r0_modes = v.T @ r0  # (N, k)
        fx = self.y_train + jnp.einsum("ij,tj,jk->tik", v, s, r0_modes)
        c = -jnp.einsum("ij,tj,jk->tik", v, h, r0_modes)
        c_inf = -self.spec.solve(r0)
        fx = jnp.where(inf[:, None, None], self.y_train, fx)
        c = jnp.where(inf[:, None, None], c_inf, c)
        return self._unflat(fx, shape), self._unflat(c, shape)

    def _unflat(self, a, shape):
        if self.full:
            a = a.reshape(a.shape[0], -1, self.n_outputs)
        return a.reshape(*shape, *a.shape[1:])

    @float64
    def __call__(self, t, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        """Train (and test) outputs at times ``t`` (eq. 9-11).

        Arguments:
            t: times, any shape (steps for ``"gd"``/``"momentum"``); ``inf`` allowed.
            fx_train_0: train outputs at ``t = 0``, ``(n, k)`` or a scalar.
            fx_test_0: test outputs at ``t = 0``, ``(m, k)`` or a scalar (default 0).
            k_test_train: ``(m, n)`` kernel (``(m, k, n, k)`` for a full kernel);
                ``None`` returns only train outputs.

        Returns:
            ``(fx_train_t, fx_test_t)`` with leading axes ``t.shape``; ``fx_test_t``
            is ``None`` without ``k_test_train``.
        """
        fx_train, c = self.residual_coefficients(t, fx_train_0)
        if k_test_train is None:
            return fx_train, None
        k_tx = self._test_kernel(k_test_train)
        m = k_tx.shape[0] // (self.n_outputs if self.full else 1)
        f0 = jnp.broadcast_to(jnp.asarray(0.0 if fx_test_0 is None else fx_test_0,
                                          self.y_train.dtype), (m, self.n_outputs))
        tshape = jnp.shape(t)
        c_flat = c.reshape(-1, *self.y_train.shape)
        df = jnp.einsum("mn,tnk->tmk", k_tx, c_flat)
        if self.full:
            df = df.reshape(df.shape[0], m, self.n_outputs)
        return fx_train, (f0 + df).reshape(*tshape, m, self.n_outputs)

    def _test_kernel(self, k_test_train):
        dtype = self.y_train.dtype
        k = _as_array(k_test_train, "k_test_train", dtype)
        if self.full:
            if k.ndim != 4 or k.shape[1] != self.n_outputs or k.shape[3] != self.n_outputs:
                raise InputError(f"k_test_train: expected a full kernel (m, {self.n_outputs}, "
                                 f"n, {self.n_outputs}) like the train kernel, got {k.shape}")
            k = k.reshape(k.shape[0] * k.shape[1], -1)
        return _rows(k, "k_test_train", self.y_train.shape[0], dtype)

    def weight_change(self, t, fx_train_0, *, jacobian=None, vjp_fn: Callable | None = None):
        """``omega_t - omega_0`` of a linearised finite net (eq. 8).

        Arguments:
            t: times (any shape).
            fx_train_0: train outputs at initialisation ``(n, k)``.
            jacobian: ``d f(X) / d omega`` as an array ``(n, k, P)`` (flat parameters), or
            vjp_fn: the ``vjp`` of ``omega -> f(X)`` at ``omega_0`` (``jax.vjp``'s second
                output): maps a cotangent ``(n, k)`` to a 1-tuple of parameter pytrees.

        Returns:
            With ``jacobian``: an array ``(*t.shape, P)``; with ``vjp_fn``: the pytree
            of parameter changes with leading axes ``t.shape``.
        """
        _, c = self.residual_coefficients(t, fx_train_0)
        tshape = jnp.shape(t)
        c = c.reshape(-1, *c.shape[len(tshape):])
        if jacobian is not None:
            jac = jnp.asarray(jacobian, c.dtype)
            if jac.shape[:2] != c.shape[1:]:
                raise InputError(f"jacobian: expected shape {c.shape[1:]} + (P,), "
                                 f"got {jac.shape}")
            return jnp.einsum("tnk,nkp->tp", c, jac).reshape(*tshape, -1)
        if vjp_fn is None:
            raise InputError("weight_change: expected jacobian= or vjp_fn=, got neither")
        out = jax.vmap(lambda ci: vjp_fn(ci)[0])(c)
        return jax.tree_util.tree_map(lambda a: a.reshape(*tshape, *a.shape[1:]), out)


@float64
def gradient_descent_mse(k_train_train, y_train, *, learning_rate: float = 1.0,
                         diag_reg: float = 0.0, loss: str = "total", optimizer: str = "flow",
                         momentum: float = 0.9, dtype=None) -> MSEDynamics:
    """Closed-form MSE training dynamics for a kernel (eq. 9-11, discrete GD, momentum).

    Arguments:
        k_train_train: ``(n, n)`` per-output kernel (acts as ``Theta (x) I_k``) or a full
            ``(n, k, n, k)`` kernel.
        y_train: targets ``(n, k)`` (or ``(n,)``).
        learning_rate: ``eta``.
        diag_reg: relative diagonal regulariser of the train kernel.
        loss: ``"total"`` (paper eq. 2) or ``"mean"`` (rate divided by ``n k``).
        optimizer: ``"flow"`` (continuous gradient flow, ``e^{-eta Theta t}``),
            ``"gd"`` (``(I - eta Theta)^t`` after ``t`` steps) or ``"momentum"`` (heavy ball,
            ``v <- momentum v - eta grad``, ``omega <- omega + v``, from ``v = 0``).
        momentum: the heavy-ball coefficient ``beta`` in ``[0, 1)`` (``"momentum"`` only).
        dtype: computation dtype (default float64).

    Returns:
        An :class:`MSEDynamics`; call it with ``(t, fx_train_0, fx_test_0, k_test_train)``.

    Warns:
        :class:`LearningRateWarning` for ``"gd"``/``"momentum"`` when the effective rate
        exceeds ``eta_critical``; :class:`IllConditionedWarning` as :func:`spectrum`.
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, "
                         f"got {optimizer!r}")
    beta = float(momentum) if optimizer == "momentum" else 0.0
    if not 0 <= beta < 1:
        raise InputError(f"momentum: expected a number in [0, 1), got {momentum}")
    dtype = _dtype(dtype)
    k = _as_array(k_train_train, "k_train_train", dtype)
    full = k.ndim == 4
    if full:
        n, kout = k.shape[0], k.shape[1]
        if k.shape != (n, kout, n, kout):
            raise InputError(f"k_train_train: expected a full kernel (n, k, n, k), "
                             f"got {k.shape}")
        y = _targets(y_train, n, dtype)
        if y.shape[1] != kout:
            raise InputError(f"y_train: expected {kout} outputs to match the full kernel, "
                             f"got shape {y.shape}")
        k = k.reshape(n * kout, n * kout)
        y = y.reshape(-1, 1)
    else:
        k = _square(k, "k_train_train", dtype)
        y = _targets(y_train, k.shape[0], dtype)
        kout = y.shape[1]
    eta = effective_learning_rate(learning_rate, y.size, loss)
    spec = spectrum(k, diag_reg=diag_reg, dtype=dtype,
                    source_dtype=getattr(k_train_train, "dtype", None))
    if optimizer != "flow":
        _warn_learning_rate(spec, eta, beta, learning_rate, loss)
    return MSEDynamics(spec, y, eta, optimizer, beta, kout, full)


def _warn_learning_rate(spec: Spectrum, eta: float, beta: float, lr: float, loss: str) -> None:
    if _is_traced(spec.evals):
        return
    lam_min, lam_max = float(spec.evals[0]), float(spec.evals[-1])
    crit = 2 * (1 + beta) / (lam_min + lam_max)
    if eta > crit * (1 + 1e-12):
        scale = eta / lr
        fate = ("diverges" if eta * lam_max > 2 * (1 + beta)
                else "oscillates in its fastest modes but converges")
        warnings.warn(
            f"learning rate {lr:.6g} exceeds eta_critical = {crit / scale:.6g} "
            f"(2(1+momentum)/(lambda_min+lambda_max) of the train kernel, loss={loss!r}); "
            f"discrete training {fate}",
            LearningRateWarning, stacklevel=3)


# -- losses without a closed form: integrate eq. 6-7 ---------------------------------

def _objective_grad(objective):
    if callable(objective):
        return jax.grad(objective)
    if objective == "mse":
        return lambda f, y: f - y
    if objective == "cross_entropy":
        return lambda f, y: jax.nn.softmax(f, axis=-1) - y
    raise InputError(f"objective: expected 'mse', 'cross_entropy' or a function, "
                     f"got {objective!r}")


@float64
def gradient_flow(k_train_train, y_train, t, *, objective="cross_entropy", fx_train_0=0.0,
                  fx_test_0=None, k_test_train=None, learning_rate: float = 1.0,
                  loss: str = "total", max_step: float | None = None, dtype=None):
    """Integrate the function-space gradient flow of any loss (eq. 6-7) with fixed-step RK4.

    ``df_train/dt = -eta Theta dL/df_train`` and ``df_test/dt = -eta Theta_tX dL/df_train``
    with a constant kernel (the linearised / infinite-width dynamics).

    Accuracy: classical RK4 has global error ``O(h^4)``. For a linear mode
    ``r' = -a r`` one step multiplies by ``e^{-z} (1 + O(z^5 / 120))`` with ``z = a h``, so
    the error at any time is at most ``max_x x e^{-x} * z^4 / 120 ~ 0.37 z^4 / 120`` of
    the initial residual. The default step ``h = 0.02 / (eta lambda_max)``
    (``lambda_max`` of the train kernel; the softmax Hessian has norm <= 1/2, MSE's
    is 1) gives ``z <= 0.02`` and errors below ~5e-10 of the initial residual (the
    tests check 1e-8 against an adaptive solver); pass ``max_step`` to trade accuracy
    for speed. Each interval between requested times is split into equal steps of
    at most ``max_step``.

    Arguments:
        k_train_train: ``(n, n)`` kernel.
        y_train: targets ``(n, k)`` (one-hot / probabilities for cross-entropy).
        t: finite times ``>= 0`` (any order, any shape).
        objective: ``"cross_entropy"`` (softmax over the last axis, summed over examples),
            ``"mse"`` (``1/2 |f - y|^2``) or a function ``(f, y) -> scalar`` (the total loss).
        fx_train_0, fx_test_0: outputs at ``t = 0``.
        k_test_train: ``(m, n)`` kernel or ``None``.
        learning_rate: ``eta``; loss: ``"total"`` or ``"mean"`` (rate divided by ``n k``).
        max_step: the largest RK4 step.
        dtype: default float64.

    Returns:
        ``(fx_train_t, fx_test_t)`` with leading axes ``t.shape`` (``fx_test_t`` None
        without ``k_test_train``).
    """
    dtype = _dtype(dtype)
    k = _square(k_train_train, "k_train_train", dtype)
    y = _targets(y_train, k.shape[0], dtype)
    eta = effective_learning_rate(learning_rate, y.size, loss)
    grad = _objective_grad(objective)
    tt, tshape = _times(t, dtype)
    if not _is_traced(tt) and bool(jnp.any(jnp.isinf(tt))):
        raise InputError("t: expected finite times for the ODE integrator, got inf")
    if max_step is None:
        lam_max = float(jnp.linalg.eigvalsh((k + k.T) / 2)[-1])
        max_step = 0.02 / (eta * max(lam_max, 1e-300))
    f_tr0 = jnp.broadcast_to(jnp.asarray(fx_train_0, dtype), y.shape)
    k_tx = None
    if k_test_train is not None:
        k_tx = _rows(k_test_train, "k_test_train", k.shape[0], dtype)
        f_te0 = jnp.broadcast_to(jnp.asarray(0.0 if fx_test_0 is None else fx_test_0, dtype),
                                 (k_tx.shape[0], y.shape[1]))
    else:
        f_te0 = jnp.zeros((0, y.shape[1]), dtype)
        k_tx = jnp.zeros((0, k.shape[0]), dtype)
    order = jnp.argsort(tt)
    ts = tt[order]

    def rhs(state):
        f_tr, _ = state
        g = grad(f_tr, y)
        return -eta * (k @ g), -eta * (k_tx @ g)

    def rk4(state, h):
        def add(a, b, c):
            return jax.tree_util.tree_map(lambda u, v: u + c * v, a, b)
        k1 = rhs(state)
        k2 = rhs(add(state, k1, h / 2))
        k3 = rhs(add(state, k2, h / 2))
        k4 = rhs(add(state, k3, h))
        return jax.tree_util.tree_map(
            lambda s, a, b, c, d: s + h / 6 * (a + 2 * b + 2 * c + d), state, k1, k2, k3, k4)

    def interval(carry, t_next):
        state, t_now = carry
        span = t_next - t_now
        n_steps = jnp.maximum(jnp.ceil(span / max_step), 1).astype(jnp.int32)
        h = span / n_steps
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: rk4(s, h), state)
        return (state, t_next), state

    _, (f_trs, f_tes) = jax.lax.scan(interval, ((f_tr0, f_te0), jnp.asarray(0.0, dtype)), ts)
    inv = jnp.argsort(order)
    f_trs = f_trs[inv].reshape(*tshape, *y.shape)
    f_tes = f_tes[inv].reshape(*tshape, *f_te0.shape)
    return f_trs, (f_tes if k_test_train is not None else None)


# -- infinite-width predictive distributions: eq. 13-16 ------------------------------

def _condition_estimate(k: np.ndarray, chol: np.ndarray) -> float:
    """LAPACK's ``?pocon`` estimate of the 1-norm condition number from the Cholesky factor
    (O(n^2)); for a symmetric matrix it bounds the 2-norm one from above, up to the
    estimator's under-estimate of ``|K^-1|_1`` (rarely beyond 3x)."""
    from scipy.linalg import lapack

    pocon = lapack.get_lapack_funcs("pocon", (chol,))
    anorm = float(np.max(np.sum(np.abs(k), axis=0)))
    rcond, info = pocon(chol, anorm, uplo="L")
    return math.inf if info != 0 or not rcond > 0 else 1 / float(rcond)


def _cholesky_factor(k_train_train, diag_reg, dtype, name) -> Spectrum | None:
    """A :class:`Spectrum` holding only the Cholesky factor (``evals``/``evecs`` None), or
    ``None`` when :func:`spectrum` is needed: a traced kernel, a failed factorisation, or a
    condition estimate within 10x of :func:`spectrum`'s warning limit."""
    if _is_traced(k_train_train):
        return None
    k = _square(k_train_train, name, dtype)
    k = _prepared(k, float(diag_reg), name, getattr(k_train_train, "dtype", None))
    with _dense_memory(name, k.shape[0], 1):
        chol = _cholesky(k)
    if chol is None:
        return None
    condition = _condition_estimate(k, chol)
    if not condition * 10 < 1e-3 / float(np.finfo(k.dtype).eps):
        return None
    return Spectrum(k, None, None, chol, condition)


@float64
def gp_inference(k_train_train, y_train, k_test_train, k_test_test=None, *,
                 diag_reg: float = 0.0, dtype=None, solver: str = "auto",
                 solver_options=None) -> Gaussian:
    """The exact GP posterior of a kernel (eq. 13 with the NNGP kernel ``K``).

    ``mean = K_tX K^{-1} Y``, ``cov = K_tt - K_tX K^{-1} K_Xt`` (Cholesky solve).

    Arguments:
        k_train_train: ``(n, n)``; y_train: ``(n, k)``; k_test_train: ``(m, n)``;
        k_test_test: ``(m, m)`` or ``None`` (then ``cov`` is ``None``).
        diag_reg: relative diagonal regulariser (the observation-noise variance
            ``diag_reg * trace(K) / n``).
        dtype: default float64.
        solver: ``"auto"``, ``"dense"``, ``"cg"`` or ``"lanczos"`` (``docs/solvers.md``);
            the iterative ones also take a memory-mapped/zarr kernel and return a
            ``SolvedGaussian`` whose ``.solver`` names the method.
        solver_options: dict of ``tol``, ``max_iter``, ``precond``, ``rank`` (iterative).

    Returns:
        :class:`Gaussian` ``(mean (m, k), cov (m, m) or None)``.
    """
    from .solvers.select import resolve_for

    chosen = resolve_for(solver, k_train_train)
    if chosen != "dense":
        from .solvers.gp import iterative_gp_inference

        return iterative_gp_inference(k_train_train, y_train, k_test_train, k_test_test,
                                      diag_reg=diag_reg, solver=chosen, options=solver_options)
    dtype = _dtype(dtype)
    # a posterior needs only the Cholesky factor; the eigendecomposition (9x the flops)
    # is made only when that fails or the kernel may be ill-conditioned, for the warning
    spec = (_cholesky_factor(k_train_train, diag_reg, dtype, "k_train_train")
            or spectrum(k_train_train, diag_reg=diag_reg, dtype=dtype))
    y = _targets(y_train, spec.n, dtype)
    k_tx = _rows(k_test_train, "k_test_train", spec.n, dtype)
    mean = k_tx @ spec.solve(y)
    cov = None
    if k_test_test is not None:
        k_tt = _square(k_test_test, "k_test_test", dtype)
        z = spec.half_solve(k_tx.T)
        cov = k_tt - z.T @ z
    return Gaussian(mean, cov)


@dataclass(frozen=True)
class GPDynamics:
    """The infinite-width output distribution at training time ``t`` (eq. 14-16).

    Built by :func:`gradient_descent_mse_gp`. ``kind="ntk"``: all layers trained
    by gradient flow, the NTK-GP (eq. 14-15; eq. 16 at ``t = inf``).
    ``kind="nngp"``: only the readout layer trained, so the kernel of the flow
    is the NNGP ``K`` itself: mean ``K_tX K^{-1} (I - e^{-eta K t}) Y``, cov
    ``K_tt - K_tX K^{-1} (I - e^{-2 eta K t}) K_Xt`` (eq. 13 at ``t = inf``).
    """

    solver = "dense"  # which method (the iterative counterpart says "cg"/"lanczos")
    kind: str
    spec: Spectrum  # of Theta (ntk) or K (nngp), regularised
    nngp_train_train: jax.Array
    y_train: jax.Array
    eta: float
    # V^T K V in the eigenbasis of Theta (kind="ntk" covariances). Without it a row of a
    # covariance (one test point at one finite time) costs two products with an (n, n)
    # matrix, with it one; it costs 4 n^3 flops, the price of 2 n such rows, so it is
    # formed once the rows asked for on this handle pass 2 n (never more than twice the
    # cheaper choice made in hindsight) and kept, like the eigendecomposition.
    nngp_eigenbasis: jax.Array | None = None
    covariance_rows: int = field(default=0, compare=False)

    def eigenbasis_product(self) -> np.ndarray:
        """``V^T K V`` (``V`` the eigenvectors of the inverted kernel), formed once and kept.

        Returns:
            The ``(n, n)`` array, also stored as ``nngp_eigenbasis``.
        """
        if self.nngp_eigenbasis is None:
            v = np.asarray(self.spec.evecs)
            mkm = v.T @ (np.asarray(self.nngp_train_train) @ v)
            object.__setattr__(self, "nngp_eigenbasis", mkm)
        return self.nngp_eigenbasis

    def wants_eigenbasis_product(self, rows: int) -> bool:
        """Count ``rows`` more covariance rows on this handle; whether ``V^T K V`` pays now.

        Arguments:
            rows: test points times finite times of the call about to be made.

        Returns:
            True once ``V^T K V`` exists or the rows counted so far exceed ``2 n``.
        """
        total = self.covariance_rows + int(rows)
        object.__setattr__(self, "covariance_rows", total)
        return self.nngp_eigenbasis is not None or total > 2 * self.spec.n

    @float64
    def __call__(self, t, nngp_test_train, nngp_test_test=None, ntk_test_train=None):
        """Mean and covariance of the test outputs at times ``t``.

        One eigendecomposition of the train kernel (made when the handle was built)
        serves every call, time, test point and output; concrete arrays are computed in
        numpy, traced ones (inside a ``jax.jit``) in jax, with the same formulas.

        Arguments:
            t: times (continuous, any shape; ``inf`` allowed).
            nngp_test_train: ``K(x_test, X)`` ``(m, n)``.
            nngp_test_test: ``K(x_test, x_test)`` ``(m, m)`` or ``None`` (no covariance).
            ntk_test_train: ``Theta(x_test, X)`` ``(m, n)`` (``kind="ntk"`` only).

        Returns:
            :class:`Gaussian` with ``mean`` ``(*t.shape, m, k)`` and ``cov``
            ``(*t.shape, m, m)`` (or ``None``).
        """
        dtype = self.y_train.dtype
        n = self.spec.n
        k_tx = _rows(nngp_test_train, "nngp_test_train", n, dtype)
        if self.kind == "ntk":
            if ntk_test_train is None:
                raise InputError("ntk_test_train: expected an (m, n) array for kind='ntk', "
                                 "got None")
            th_tx = _rows(ntk_test_train, "ntk_test_train", n, dtype)
            if th_tx.shape != k_tx.shape:
                raise InputError(f"ntk_test_train: expected shape {k_tx.shape} like "
                                 f"nngp_test_train, got {th_tx.shape}")
        else:
            th_tx = k_tx
        tt, tshape = _times(t, dtype)
        k_tt = None
        if nngp_test_test is not None:
            k_tt = _square(nngp_test_test, "nngp_test_test", dtype)
            if k_tt.shape[0] != k_tx.shape[0]:
                raise InputError(f"nngp_test_test: expected ({k_tx.shape[0]}, "
                                 f"{k_tx.shape[0]}), got {k_tt.shape}")
        arrays = (tt, k_tx, th_tx, k_tt, self.y_train, self.nngp_train_train)
        if self.spec.concrete and not any(_is_traced(a) for a in arrays):
            mean, cov = self._moments_np(tt, k_tx, th_tx, k_tt)
        else:
            mean, cov = self._moments_jax(tt, k_tx, th_tx, k_tt)
        mean = mean.reshape(*tshape, *mean.shape[1:])
        return Gaussian(mean, None if cov is None else cov.reshape(*tshape, *cov.shape[1:]))

    def _moments_np(self, tt, k_tx, th_tx, k_tt):
        spec = self.spec
        v, y = np.asarray(spec.evecs), np.asarray(self.y_train)
        k_tx, th_tx, tt = np.asarray(k_tx), np.asarray(th_tx), np.asarray(tt)
        (m, n), k, nt = k_tx.shape, y.shape[1], tt.shape[0]
        inf = np.isinf(tt)
        fin = np.flatnonzero(~inf)
        _, h = _flow_factors(spec.evals, jnp.asarray(tt[fin]), self.eta)
        h = np.asarray(h)  # (finite times, n)
        p = th_tx @ v  # Theta_tX in the eigenbasis, (m, n)
        vy = v.T @ y
        mean = np.empty((nt, m, k), y.dtype)
        if fin.size:  # every finite time in one product: P (h_t * V^T Y)
            g = (h[:, :, None] * vy[None]).transpose(1, 0, 2).reshape(n, -1)
            mean[fin] = (p @ g).reshape(m, fin.size, k).transpose(1, 0, 2)
        w_inf = None
        if inf.any():  # Theta^{-1} Theta_Xt, (n, m); P is already V^T Theta_Xt
            w_inf = (np.asarray(spec.solve(th_tx.T)) if spec.chol is not None
                     else v @ (spec.inverse_weights()[:, None] * p.T))
            mean[inf] = w_inf.T @ y
        if k_tt is None:
            return mean, None
        k_tt = np.asarray(k_tt)
        cov = np.empty((nt, m, m), y.dtype)
        if self.kind == "nngp":
            _, h2 = _flow_factors(spec.evals, jnp.asarray(2 * tt[fin]), self.eta)
            for i, j in enumerate(fin):
                cov[j] = k_tt - (p * np.asarray(h2[i])) @ p.T
            if inf.any():  # P = K_tX V here
                z = (np.asarray(spec.half_solve(k_tx.T)) if spec.chol is not None
                     else spec.inverse_weights(0.5)[:, None] * p.T)
                cov[inf] = k_tt - z.T @ z
        else:
            kk = np.asarray(self.nngp_train_train)
            q = v.T @ k_tx.T  # V^T K_Xt, (n, m)
            mkm = (np.asarray(self.eigenbasis_product())
                   if fin.size and self.wants_eigenbasis_product(fin.size * m) else None)
            for block in _time_blocks(fin.size, m, n):
                a = (p[None] * h[block][:, None, :]).reshape(-1, n)  # rows (t, m)
                if mkm is None:  # A_t = P h_t V^T in the original basis: A_t K A_t^T
                    u = a @ v.T
                    z = u @ kk
                else:  # (P h_t) V^T K V (P h_t)^T
                    u, z = a, a @ mkm
                for r, i in enumerate(block):
                    rows = slice(r * m, (r + 1) * m)
                    cross = a[rows] @ q
                    cov[fin[i]] = k_tt + z[rows] @ u[rows].T - cross - cross.T
            if inf.any():
                cross = w_inf.T @ k_tx.T
                cov[inf] = k_tt + w_inf.T @ (kk @ w_inf) - cross - cross.T
        cov += cov.transpose(0, 2, 1)
        cov *= 0.5
        return mean, cov

    def _moments_jax(self, tt, k_tx, th_tx, k_tt):
        inf = jnp.isinf(tt)
        t0 = jnp.where(inf, 0, tt)
        v, spec = self.spec.evecs, self.spec
        _, h = _flow_factors(spec.evals, t0, self.eta)
        p = th_tx @ v  # (m, n) in the eigenbasis
        vy = v.T @ self.y_train
        mean = jnp.einsum("mj,tj,jk->tmk", p, h, vy)
        w_inf = spec.solve(th_tx.T)  # Theta^{-1} Theta_Xt, (n, m)
        mean = jnp.where(inf[:, None, None], (w_inf.T @ self.y_train)[None], mean)
        if k_tt is None:
            return mean, None
        if self.kind == "nngp":
            _, h2 = _flow_factors(spec.evals, 2 * t0, self.eta)
            cov = k_tt[None] - jnp.einsum("mj,tj,lj->tml", p, h2, p)
            z = spec.half_solve(k_tx.T)
            cov_inf = k_tt - z.T @ z
        else:
            kk = self.nngp_train_train
            mkm = self.nngp_eigenbasis
            q = v.T @ k_tx.T  # (n, m)
            a = p[None] * h[:, None, :]  # A_t in the eigenbasis: (t, m, n)
            cross = a @ q
            if mkm is None:  # A_t K A_t^T with A_t in the original basis
                u = a @ v.T
                quad = (u @ kk) @ jnp.swapaxes(u, 1, 2)
            else:
                quad = (a @ mkm) @ jnp.swapaxes(a, 1, 2)
            cov = k_tt[None] + quad - cross - jnp.swapaxes(cross, 1, 2)
            cross_inf = w_inf.T @ k_tx.T
            cov_inf = k_tt + w_inf.T @ kk @ w_inf - cross_inf - cross_inf.T
        cov = jnp.where(inf[:, None, None], cov_inf[None], cov)
        return mean, (cov + jnp.swapaxes(cov, 1, 2)) / 2


def _time_blocks(times: int, m: int, n: int, budget: int = 1 << 23):
    """Groups of time indices whose ``(times * m, n)`` work arrays hold ``budget`` entries
    (64 MB in float64), at least one time each: one large product per group."""
    per = max(1, budget // max(m * n, 1))
    return [np.arange(i, min(i + per, times)) for i in range(0, times, per)]


@float64
def gradient_descent_mse_gp(nngp_train_train, y_train, *, ntk_train_train=None,
                            kind: str = "ntk", learning_rate: float = 1.0,
                            diag_reg: float = 0.0, loss: str = "total",
                            dtype=None, solver: str = "auto",
                            solver_options=None) -> GPDynamics:
    """The infinite-width predictive distribution under MSE gradient flow (eq. 13-16).

    ``solver``: ``"auto"`` (dense when it fits, see ``docs/solvers.md``), ``"dense"``,
    ``"cg"`` or ``"lanczos"``; the iterative ones return an
    ``ntkdsl.solvers.IterativeGPDynamics`` (same call; kernels may be memory-mapped
    or zarr arrays) and take ``solver_options`` (``tol``, ``max_iter``, ``precond``,
    ``rank``). The result's ``.solver`` says which was used.

    Arguments:
        nngp_train_train: ``K(X, X)`` ``(n, n)``.
        y_train: ``(n, k)`` targets.
        ntk_train_train: ``Theta(X, X)`` ``(n, n)``, needed for ``kind="ntk"``.
        kind: ``"ntk"`` (all layers trained: NTK-GP) or ``"nngp"`` (readout only).
        learning_rate: ``eta``; loss: ``"total"`` or ``"mean"`` (rate divided by ``n k``).
        diag_reg: relative regulariser of the inverted kernel (``Theta`` or ``K``).
        dtype: default float64.

    Returns:
        A :class:`GPDynamics`; call it with ``(t, nngp_test_train, nngp_test_test,
        ntk_test_train)``.
    """
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    from .solvers.select import resolve_for

    chosen = resolve_for(solver, nngp_train_train)
    if chosen != "dense":
        from .solvers.gp import iterative_gradient_descent_mse_gp

        return iterative_gradient_descent_mse_gp(
            nngp_train_train, y_train, ntk_train_train=ntk_train_train, kind=kind,
            learning_rate=learning_rate, diag_reg=diag_reg, loss=loss, solver=chosen,
            options=solver_options)
    dtype = _dtype(dtype)
    kk = _square(nngp_train_train, "nngp_train_train", dtype)
    kk = _prepared(kk, 0.0, "nngp_train_train", getattr(nngp_train_train, "dtype", None))
    y = _targets(y_train, kk.shape[0], dtype)
    eta = effective_learning_rate(learning_rate, y.size, loss)
    if kind == "ntk":
        if ntk_train_train is None:
            raise InputError("ntk_train_train: expected an (n, n) array for kind='ntk', "
                             "got None")
        th = _square(ntk_train_train, "ntk_train_train", dtype)
        if th.shape != kk.shape:
            raise InputError(f"ntk_train_train: expected shape {kk.shape} like "
                             f"nngp_train_train, got {th.shape}")
        spec = spectrum(th, diag_reg=diag_reg, dtype=dtype, name="ntk_train_train",
                        source_dtype=getattr(ntk_train_train, "dtype", None), cholesky=False)
    else:
        spec = spectrum(kk, diag_reg=diag_reg, dtype=dtype, name="nngp_train_train",
                        source_dtype=getattr(nngp_train_train, "dtype", None), cholesky=False)
    return GPDynamics(kind, spec, kk, y, eta)
