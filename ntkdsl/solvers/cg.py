"""Preconditioned conjugate gradients for ``(K + sigma I) X = B``, all columns in one pass.

The columns of ``B`` (the outputs of ``Y``, or the test points of a variance)
are solved together: every iteration makes one block product with the kernel
(one pass over it, whatever its storage), and each column keeps its own step
lengths, as in GPyTorch's batched CG. A column stops when its relative
residual ``|b - A x| / |b|`` is below ``tol``. When all have, the residual is
recomputed from scratch (``B - A X``, one more pass) and that honest value is
what is reported; if it is above ``tol`` (recurrence drift), CG restarts from
``X`` on the true residual. This is also how float32-stored kernels reach
float64 accuracy against a float64 operator (:func:`refine`).

Failures are loud: :class:`ConvergenceError` with the residual reached when the
iteration budget runs out, :class:`NotPositiveDefiniteError` when ``p^T A p <= 0``
(negative curvature), :class:`NonFiniteError` on NaN/inf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..diagnostics import InputError
from .errors import ConvergenceError, NonFiniteError, NotPositiveDefiniteError
from .operators import KernelOperator


@dataclass(frozen=True)
class CGResult:
    """A block CG solution.

    ``x`` ``(n, c)``; ``residual`` the honest relative residuals ``|b - A x| / |b|``
    per column (recomputed, not the recurrence); ``iterations`` the block products
    used; ``restarts`` how often the true residual restarted the iteration.
    """

    x: np.ndarray
    residual: np.ndarray
    iterations: int
    restarts: int

    @property
    def max_residual(self) -> float:
        return float(np.max(self.residual, initial=0.0))


def _columns(b) -> tuple[np.ndarray, bool]:
    b = np.asarray(b, np.float64)
    vec = b.ndim == 1
    b = b[:, None] if vec else b
    if b.ndim != 2:
        raise InputError(f"rhs: expected shape (n,) or (n, c), got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise InputError("rhs: expected finite values, got NaN/inf")
    return b, vec


def cg_solve(op: KernelOperator, b, *, precond: Callable | None = None, tol: float = 1e-10,
             max_iter: int | None = None, x0=None, max_restarts: int = 3) -> CGResult:
    """Solve ``A X = B`` by batched preconditioned CG (``A`` = ``op`` including its shift).

    Arguments:
        op: the operator ``A`` (symmetric positive definite).
        b: right-hand sides ``(n, c)`` or ``(n,)``.
        precond: ``v -> P^{-1} v`` on ``(n, c)`` blocks (``None``: no preconditioner).
        tol: relative residual each column must reach.
        max_iter: budget of block products (default ``max(100, min(n, 2000))``).
        x0: starting guess.
        max_restarts: restarts from the recomputed residual before giving up.

    Returns:
        A :class:`CGResult` (``x`` squeezed back to ``(n,)`` for a vector ``b``).

    Raises:
        ConvergenceError: the budget ran out; the message gives the residual reached.
        NotPositiveDefiniteError: negative curvature ``p^T A p <= 0``.
        NonFiniteError: NaN/inf in the iteration.
    """
    if not tol > 0:
        raise InputError(f"tol: expected a positive tolerance, got {tol}")
    b, vec = _columns(b)
    n, c = b.shape
    if n != op.n:
        raise InputError(f"rhs: expected {op.n} rows to match {op.name}, got {b.shape}")
    max_iter = int(max_iter or max(100, min(n, 2000)))
    bnorm = np.linalg.norm(b, axis=0)
    scale = np.where(bnorm > 0, bnorm, 1.0)
    x = np.zeros_like(b) if x0 is None else np.array(x0, np.float64).reshape(n, c)
    r = b - op.matmat(x) if x0 is not None else b.copy()
    used = 1 if x0 is not None else 0
    restarts = 0
    while True:
        x, used = _iterate(op, x, r, scale, precond, tol, max_iter, used)
        r = b - op.matmat(x)
        used += 1
        res = np.linalg.norm(r, axis=0) / scale
        _finite(res, op, used)
        if np.all(res <= tol):
            break
        if used >= max_iter or restarts >= max_restarts:
            j = int(np.argmax(res))
            raise ConvergenceError(
                f"CG on {op.name} did not converge: relative residual {res[j]:.3g} (column "
                f"{j} of {c}) after {used} products and {restarts} restarts, tolerance "
                f"{tol:.3g}; raise max_iter, use a preconditioner of higher rank, or "
                f"pass diag_reg")
        restarts += 1
    return CGResult(x[:, 0] if vec else x, res, used, restarts)


def _finite(a, op, it) -> None:
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"CG on {op.name}: NaN/inf after {it} products (the kernel or "
                             f"the preconditioner is not finite)")


def _iterate(op, x, r, scale, precond, tol, max_iter, used):
    z = precond(r) if precond is not None else r.copy()
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    active = np.linalg.norm(r, axis=0) / scale > tol
    while np.any(active) and used < max_iter:
        ap = op.matmat(p[:, active])
        used += 1
        _finite(ap, op, used)
        pa = p[:, active]
        pap = np.sum(pa * ap, axis=0)
        pnorm2 = np.sum(pa * pa, axis=0)
        if np.any(pap <= 0) and np.any(pnorm2[pap <= 0] > 0):
            j = int(np.flatnonzero(pap <= 0)[0])
            raise NotPositiveDefiniteError(
                f"{op.name}: expected a positive definite (regularised) kernel, but CG met "
                f"negative curvature p^T A p = {pap[j]:.3g} (|p|^2 = {pnorm2[j]:.3g}) at "
                f"iteration {used}; the kernel is not positive semi-definite, or pass diag_reg")
        alpha = rz[active] / pap
        x[:, active] += alpha * pa
        r[:, active] -= alpha * ap
        _finite(r, op, used)
        idx = np.flatnonzero(active)
        rel = np.linalg.norm(r[:, idx], axis=0) / scale[idx]
        zn = precond(r[:, idx]) if precond is not None else r[:, idx].copy()
        rz_new = np.sum(r[:, idx] * zn, axis=0)
        beta = rz_new / np.where(rz[idx] != 0, rz[idx], 1)
        p[:, idx] = zn + beta * p[:, idx]
        rz[idx] = rz_new
        active[idx] = rel > tol
    return x, used


def refine(op_low: KernelOperator, op_high: KernelOperator, b, *, precond=None,
           tol: float = 1e-10, inner_tol: float = 1e-6, max_steps: int = 20,
           max_iter: int | None = None) -> CGResult:
    """Mixed precision: CG on a cheap (e.g. float32-stored) operator, residuals in float64.

    Each step solves ``A_low d = r`` to ``inner_tol`` and updates ``x += d`` with
    ``r = b - A_high x`` computed by the accurate operator. It converges to the
    ``A_high`` solution when ``cond(A) * |A_low - A_high| / |A| < 1``.

    Arguments:
        op_low: the operator used for the CG iterations.
        op_high: the accurate operator (same matrix at higher precision, same shift).
        b, precond, max_iter: as :func:`cg_solve`.
        tol: relative residual against ``op_high`` to reach.
        inner_tol: tolerance of each inner solve.
        max_steps: refinement steps.

    Returns:
        A :class:`CGResult` whose ``residual`` is measured with ``op_high`` and whose
        ``restarts`` counts refinement steps.

    Raises:
        ConvergenceError: the refinement stalls above ``tol`` (the low-precision kernel
        is too far from the accurate one for this conditioning).
    """
    b, vec = _columns(b)
    scale = np.where(np.linalg.norm(b, axis=0) > 0, np.linalg.norm(b, axis=0), 1.0)
    x = np.zeros_like(b)
    r = b.copy()
    used = 0
    best = np.inf
    for step in range(max_steps + 1):
        res = np.linalg.norm(r, axis=0) / scale
        if np.all(res <= tol):
            return CGResult(x[:, 0] if vec else x, res, used, step)
        if step == max_steps or np.max(res) > 0.9 * best:
            raise ConvergenceError(
                f"iterative refinement on {op_high.name} stalled at relative residual "
                f"{np.max(res):.3g} after {step} steps (tolerance {tol:.3g}); the "
                f"low-precision kernel is too inexact for this conditioning: store it "
                f"in float64 or pass diag_reg")
        best = float(np.max(res))
        inner = cg_solve(op_low, r, precond=precond, tol=inner_tol, max_iter=max_iter)
        used += inner.iterations
        x += inner.x
        r = b - op_high.matmat(x)
        used += 1
    raise AssertionError("unreachable")
