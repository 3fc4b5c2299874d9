"""Low-rank preconditioners for ``K + sigma I``: pivoted partial Cholesky and randomized Nystrom.

Both approximate ``K ~ L L^T`` with ``L`` of shape ``(n, r)`` and precondition
with ``P = L L^T + mu I``, applied by the Woodbury identity in ``O(n r)`` per
vector:

    P^{-1} v = (v - L (mu I_r + L^T L)^{-1} L^T v) / mu.

* **Pivoted partial Cholesky** (Harbrecht, Peters & Schneider 2012; GPyTorch):
  ``r`` greedy steps, each taking the row of the largest remaining diagonal
  entry of the Schur complement: ``r`` kernel rows and ``O(n r^2)`` work, no
  products with the whole kernel. ``mu = sigma + trace(K - L L^T) / n`` (the
  Schur complement replaced by its mean eigenvalue, so the preconditioner also
  works without a regulariser).
* **Randomized Nystrom** (Frangella, Tropp & Udell 2023): one block product
  ``K Omega`` with an orthonormal Gaussian ``Omega`` of ``r`` columns, then
  ``K ~ U diag(lam) U^T``; ``mu = sigma + lam_r`` (their choice, which makes
  the preconditioned spectrum lie in ``[1, ~(lam_r + sigma)/sigma]``).

Which converges faster on the NTK/NNGP kernels of the digits data is measured
in ``benchmarks/solvers_bench.py`` and recorded in ``docs/solvers.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..diagnostics import InputError
from .errors import NotPositiveDefiniteError
from .operators import KernelOperator

PRECONDITIONERS = ("cholesky", "nystrom", "none")


@dataclass(frozen=True)
class LowRankPreconditioner:
    """``P = L L^T + mu I`` applied through the Woodbury identity.

    ``factor`` is ``L`` ``(n, r)``; ``method`` names how it was built.
    """

    factor: np.ndarray
    mu: float
    method: str
    inner_chol: np.ndarray  # Cholesky factor of mu I_r + L^T L

    @property
    def rank(self) -> int:
        return self.factor.shape[1]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """``P^{-1} v`` for ``v`` of shape ``(n, c)``."""
        if self.rank == 0:
            return v / self.mu
        w = self.factor.T @ v
        w = _cho_solve(self.inner_chol, w)
        return (v - self.factor @ w) / self.mu


def _build(factor: np.ndarray, mu: float, method: str) -> LowRankPreconditioner:
    if not mu > 0:
        raise InputError(f"preconditioner: expected a positive shift, got {mu:.3g} "
                         f"(the kernel is zero?)")
    inner = mu * np.eye(factor.shape[1]) + factor.T @ factor
    return LowRankPreconditioner(factor, float(mu), method, np.linalg.cholesky(inner))


def _cho_solve(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(c.T, solve_triangular(c, b, lower=True), lower=False)


def pivoted_cholesky(op: KernelOperator, rank: int, *, shift: float = 0.0,
                     rtol: float = 1e-12) -> LowRankPreconditioner:
    """Greedy pivoted partial Cholesky ``K ~ L L^T`` of rank ``<= rank``.

    Arguments:
        op: the (unshifted) kernel operator.
        rank: the largest rank (stops early when the remaining trace is below
            ``rtol * trace(K)``).
        shift: the regulariser ``sigma`` of the system being solved.
        rtol: relative trace at which the factorisation is complete.

    Returns:
        A :class:`LowRankPreconditioner`.

    Raises:
        NotPositiveDefiniteError: a negative diagonal entry of ``K`` or of its Schur
            complement (the kernel is not positive semi-definite).
    """
    n = op.n
    d = op.diagonal().copy()
    if np.min(d) < 0:
        i = int(np.argmin(d))
        raise NotPositiveDefiniteError(f"{op.name}: expected a positive semi-definite kernel, "
                                       f"got diagonal entry {d[i]:.3g} at {i}")
    total = float(np.sum(d))
    rank = int(min(rank, n))
    factor = np.zeros((n, rank))
    m = 0
    for m in range(rank):
        i = int(np.argmax(d))
        if d[i] <= rtol * total:
            break
        row = op.rows([i])[0]
        col = (row - factor[:, :m] @ factor[i, :m]) / np.sqrt(d[i])
        factor[:, m] = col
        d -= col * col
        d[i] = 0.0
        if np.min(d) < -1e-8 * total / n:
            j = int(np.argmin(d))
            raise NotPositiveDefiniteError(
                f"{op.name}: expected a positive semi-definite kernel, got a Schur complement "
                f"diagonal of {d[j]:.3g} at {j} after {m + 1} pivots")
        np.maximum(d, 0, out=d)
    else:
        m = rank
    factor = factor[:, :m] if m < rank else factor
    mu = shift + float(np.sum(d)) / n
    if not mu > 0:
        mu = max(shift, 1e-14 * total / n)
    return _build(factor, mu, "cholesky")


def nystrom(op: KernelOperator, rank: int, *, shift: float = 0.0,
            seed: int = 0) -> LowRankPreconditioner:
    """Randomized Nystrom approximation ``K ~ U diag(lam) U^T`` of rank ``rank``.

    Arguments:
        op: the (unshifted) kernel operator (one block product of ``rank`` columns).
        rank: the sketch size.
        shift: the regulariser ``sigma`` of the system being solved.
        seed: the seed of the Gaussian sketch.

    Returns:
        A :class:`LowRankPreconditioner` (``L = U diag(sqrt(lam))``).
    """
    from scipy.linalg import solve_triangular

    n = op.n
    rank = int(min(rank, n))
    omega, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, rank)))
    y = op.matmat(omega) - (op.shift * omega if op.shift else 0)
    nu = np.finfo(np.float64).eps * np.linalg.norm(y)
    y += nu * omega
    core = omega.T @ y
    try:
        c = np.linalg.cholesky((core + core.T) / 2)
    except np.linalg.LinAlgError:
        raise NotPositiveDefiniteError(f"{op.name}: expected a positive semi-definite kernel, "
                                       f"but its Nystrom core is not positive definite") from None
    b = solve_triangular(c, y.T, lower=True).T
    u, sv, _ = np.linalg.svd(b, full_matrices=False)
    lam = np.maximum(sv**2 - nu, 0)
    mu = shift + float(lam[-1])
    if not mu > 0:
        mu = max(shift, 1e-14 * float(lam[0]))
    return _build(u * np.sqrt(lam), mu, "nystrom")


def make_preconditioner(op: KernelOperator, method: str = "cholesky", rank: int = 300, *,
                        shift: float = 0.0) -> LowRankPreconditioner | None:
    """Build the preconditioner ``method`` (``"cholesky"``, ``"nystrom"`` or ``"none"``).

    Arguments:
        op: the unshifted kernel operator; rank: its rank; shift: the system's ``sigma``.

    Returns:
        A :class:`LowRankPreconditioner`, or ``None`` for ``"none"``.
    """
    if method not in PRECONDITIONERS:
        raise InputError(f"precond: expected one of {', '.join(PRECONDITIONERS)}, "
                         f"got {method!r}")
    if method == "none" or rank <= 0:
        return None
    if method == "cholesky":
        return pivoted_cholesky(op, rank, shift=shift)
    return nystrom(op, rank, shift=shift)
