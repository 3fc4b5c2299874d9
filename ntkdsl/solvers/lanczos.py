"""Matrix functions ``f(A) B`` by Lanczos, for many training times from one Krylov basis.

For each column ``b`` of ``B``, ``k`` Lanczos steps (with full
reorthogonalisation) give an orthonormal basis ``Q_k`` of the Krylov space
``span{b, A b, ..., A^{k-1} b}`` and the tridiagonal ``T_k = Q_k^T A Q_k``;
then ``f(A) b ~ |b| Q_k f(T_k) e_1``. ``T_k = S diag(theta) S^T`` is
eigendecomposed once, and ``f(T_k) e_1 = S (f(theta) * S[0])`` costs ``O(k^2)``
per time, so every requested time reuses the same basis. ``f`` is any of the
per-eigenmode factors of :mod:`ntkdsl.predict` (gradient flow
``e^{-eta lambda t}`` and ``(1 - e^{-eta lambda t}) / lambda``, discrete GD,
heavy-ball momentum), applied to the Ritz values ``theta``.

**Error estimate.** After ``k`` steps the estimate is
``|y_k - y_{k-d}| / |y_k|`` with ``y_k = |b| f(T_k) e_1`` (zero-padded) and
``d = check_every`` (10): the change of the approximation over the last ``d``
steps, in the orthonormal basis, so it equals the change of ``f(A) b`` itself.
For the smooth functions here convergence is superlinear once ``k`` exceeds
about ``sqrt(eta t lambda_max)`` (Hochbruck & Lubich 1997), and the change over
``d`` steps then bounds the remaining error from above. The iteration stops
when the estimate is below ``tol`` for every column and time; the estimate
reached is reported, and exhausting ``max_iter`` raises
:class:`ConvergenceError` with it. A Krylov space that becomes invariant
(``beta_k ~ 0``) makes the result exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..diagnostics import InputError
from .errors import ConvergenceError, NonFiniteError, NotPositiveDefiniteError
from .operators import KernelOperator

DEFAULT_BASIS_BYTES = 1 * 2**30
GROUP_STEPS = 128


@dataclass(frozen=True)
class LanczosResult:
    """``s(A) B`` and ``h(A) B`` for every time: arrays ``(n_times, n, c)`` (or ``None``).

    ``estimate`` is the a-posteriori error estimate reached (relative, the worst
    column and time); ``iterations`` the most Lanczos steps any column used.
    """

    s: np.ndarray | None
    h: np.ndarray | None
    estimate: float
    iterations: int


def _tridiag_eig(alpha, beta, k):
    t = np.diag(alpha[:k]) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
    return np.linalg.eigh(t)


def _coefficients(alpha, beta, k, bnorm, times, factors, want_s, want_h, name):
    theta, vecs = _tridiag_eig(alpha, beta, k)
    if theta[0] < -1e-10 * max(abs(theta[-1]), 1e-300):
        raise NotPositiveDefiniteError(
            f"{name}: expected a positive semi-definite kernel, but Lanczos found the Ritz "
            f"value {theta[0]:.3g} (largest {theta[-1]:.3g})")
    theta = np.maximum(theta, 0)
    s, h = factors(theta, times)
    w = vecs[0] * bnorm
    cs = (vecs @ (s * w).T).T if want_s else None  # (times, k)
    ch = (vecs @ (h * w).T).T if want_h else None
    return cs, ch


def lanczos_functions(op: KernelOperator, b, times, factors: Callable, *,
                      want_s: bool = True, want_h: bool = True, tol: float = 1e-10,
                      max_iter: int = 1000, check_every: int = 10,
                      basis_bytes: int = DEFAULT_BASIS_BYTES) -> LanczosResult:
    """``s_t(A) B`` and ``h_t(A) B`` for all times ``t`` from one Lanczos basis per column.

    Arguments:
        op: symmetric positive semi-definite operator ``A`` (with its shift).
        b: ``(n, c)`` or ``(n,)`` starting vectors.
        times: 1-D array of times (``inf`` allowed if ``factors`` handles it).
        factors: ``(theta (k,), times (T,)) -> (s (T, k), h (T, k))``, the per-eigenvalue
            functions (see :func:`ntkdsl.solvers.gp.mode_factors`).
        want_s, want_h: which of the two actions to return.
        tol: target of the relative error estimate (module docs).
        max_iter: Lanczos steps allowed per column.
        check_every: steps between estimates (``d`` of the estimate).
        basis_bytes: memory for the stored bases of ``GROUP_STEPS`` (128) steps;
            columns are processed in groups that fit (a group whose columns need more
            steps grows its bases past it).

    Returns:
        A :class:`LanczosResult` with arrays ``(n_times, n, c)``.

    Raises:
        ConvergenceError: the estimate is still above ``tol`` after ``max_iter`` steps.
        NotPositiveDefiniteError: a negative Ritz value.
        NonFiniteError: NaN/inf in a product.
    """
    b = np.asarray(b, np.float64)
    vec = b.ndim == 1
    b = b[:, None] if vec else b
    if b.ndim != 2 or b.shape[0] != op.n:
        raise InputError(f"rhs: expected shape ({op.n}, c), got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise InputError("rhs: expected finite values, got NaN/inf")
    times = np.asarray(times, np.float64).reshape(-1)
    n, c = b.shape
    max_iter = int(min(max_iter, n))
    # sized for bases of GROUP_STEPS steps (they grow past it when a column needs more):
    # sizing for max_iter would solve the columns of a large n one at a time
    group = max(1, int(basis_bytes // (8 * n * (min(max_iter, GROUP_STEPS) + 1))))
    s_out = np.zeros((len(times), n, c)) if want_s else None
    h_out = np.zeros((len(times), n, c)) if want_h else None
    worst, most = 0.0, 0
    for j0 in range(0, c, group):
        j1 = min(c, j0 + group)
        s_blk, h_blk, est, its = _lanczos_group(op, b[:, j0:j1], times, factors, want_s,
                                                want_h, tol, max_iter, check_every)
        if want_s:
            s_out[:, :, j0:j1] = s_blk
        if want_h:
            h_out[:, :, j0:j1] = h_blk
        worst, most = max(worst, est), max(most, its)
    if vec:
        s_out = s_out[..., 0] if want_s else None
        h_out = h_out[..., 0] if want_h else None
    return LanczosResult(s_out, h_out, worst, most)


def _lanczos_group(op, b, times, factors, want_s, want_h, tol, max_iter, check_every):
    n, c = b.shape
    bnorm = np.linalg.norm(b, axis=0)
    q_basis = np.zeros((min(max_iter, 64) + 1, n, c))
    q_basis[0] = b / np.where(bnorm > 0, bnorm, 1)
    alpha = np.zeros((max_iter, c))
    beta = np.zeros((max_iter, c))
    size = np.where(bnorm > 0, 0, -1)  # steps per column; -1: zero column (result 0)
    done = bnorm == 0
    prev: list = [None] * c
    est = np.zeros(c)
    k = 0
    for k in range(1, max_iter + 1):
        q = q_basis[k - 1]
        w = op.matmat(q)
        if not np.all(np.isfinite(w)):
            raise NonFiniteError(f"Lanczos on {op.name}: NaN/inf after {k} products")
        a = np.sum(q * w, axis=0)
        alpha[k - 1] = a
        w -= a * q
        if k > 1:
            w -= beta[k - 2] * q_basis[k - 2]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            coef = np.einsum("knc,nc->kc", q_basis[:k], w)
            w -= np.einsum("knc,kc->nc", q_basis[:k], coef)
        bk = np.linalg.norm(w, axis=0)
        scale = np.maximum(np.abs(alpha[:k]).max(axis=0), 1e-300)
        live = ~done
        size[live] = k
        invariant = live & (bk <= 1e-13 * scale)
        done |= invariant
        est[invariant] = 0.0
        beta[k - 1] = np.where(done, 0.0, bk)
        if k + 1 > q_basis.shape[0] - 1 and k < max_iter:
            grown = np.zeros((min(2 * q_basis.shape[0], max_iter + 1), n, c))
            grown[:q_basis.shape[0]] = q_basis
            q_basis = grown
        q_basis[k] = np.where(done, 0.0, w / np.where(bk > 0, bk, 1))
        if k % check_every == 0 or k == max_iter or np.all(done):
            for j in np.flatnonzero(live):
                cs, ch = _coefficients(alpha[:, j], beta[:, j], k, bnorm[j], times, factors,
                                       want_s, want_h, op.name)
                cur = np.concatenate([x for x in (cs, ch) if x is not None], axis=0)
                if prev[j] is not None and not invariant[j]:
                    old = np.zeros_like(cur)
                    old[:, :prev[j].shape[1]] = prev[j]
                    norm = np.linalg.norm(cur, axis=1)
                    diff = np.linalg.norm(cur - old, axis=1)
                    est[j] = float(np.max(diff / np.where(norm > 0, norm, 1)))
                    if est[j] <= tol:
                        done[j] = True
                elif prev[j] is None and not invariant[j]:
                    est[j] = np.inf
                prev[j] = cur
            if np.all(done):
                break
    if not np.all(done):
        j = int(np.argmax(np.where(done, -np.inf, est)))
        raise ConvergenceError(
            f"Lanczos on {op.name} did not converge: error estimate {est[j]:.3g} (column {j} "
            f"of {c}) after {k} steps, tolerance {tol:.3g}; raise max_iter or pass diag_reg")
    s_blk = np.zeros((len(times), n, c)) if want_s else None
    h_blk = np.zeros((len(times), n, c)) if want_h else None
    for j in range(c):
        kj = int(size[j])
        if kj <= 0:
            continue
        cs, ch = _coefficients(alpha[:, j], beta[:, j], kj, bnorm[j], times, factors,
                               want_s, want_h, op.name)
        qj = q_basis[:kj, :, j]  # (k, n)
        if want_s:
            s_blk[:, :, j] = cs @ qj
        if want_h:
            h_blk[:, :, j] = ch @ qj
    return s_blk, h_blk, float(np.max(est, initial=0.0)), int(np.max(size, initial=0))
