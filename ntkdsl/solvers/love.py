"""Cheap predictive covariances for many test points from one Lanczos decomposition (LOVE).

Pleiss et al. 2018 ("Constant-time predictive distributions for Gaussian
processes"): instead of one solve per test point, run Lanczos once on the train
operator ``A`` (regularised ``Theta`` or ``K``) from a fixed random start,
``A Q_k ~ Q_k T_k``, and use ``f(A) ~ Q_k f(T_k) Q_k^T`` for every test point
(``f = h_t`` of the dynamics, or ``1/x`` at ``t = inf``). With
``T_k = S diag(theta) S^T`` and ``R = Q_k S`` (``n x k``) every covariance
term is a ``k``-dimensional product: ``K_xX f(A) K_Xx ~ (R^T K_Xx)^T f(theta)
(R^T K_Xx)``, and the NTK-GP's ``A_t K A_t^T`` uses the ``k x k`` matrix
``R^T K R`` (one block product of ``K`` with the basis, cached). Per test point
the cost is ``O(n k)`` instead of a solve.

One basis serves every time (``t = inf`` included: ``f = 1/theta`` on the
Ritz values), every test batch and every output. It is built once per train
kernel and **grown on demand**: a later call with new test points or a tighter
tolerance extends it (the ``Q^T K Q`` block only for the new vectors);
it lives on the :class:`LoveCache` of the dynamics object, so every call on the
same train set reuses it.

Cost and limits, measured: the Krylov space of one start vector must contain
every test column ``Theta_Xx`` up to the tolerance, so the basis needs about as
many vectors as the kernel has eigenvalues above ``tol`` times the largest: cheap
for kernels of fast spectral decay (smooth kernels, low-dimensional inputs), up
to ``n`` for the NTK of a ReLU net at ``tol = 1e-6`` (FC3 on 8-dimensional
inputs, ``n = 600``: the variances are within 10% only after ~500 vectors). A
preconditioned basis (of ``P^{-1/2} A P^{-1/2}``) was tried and is worse: its
spectrum is clustered, so one start vector's Krylov space holds only one
direction of the cluster.

**Error estimate.** Two, both relative to each test point's prior variance
``K(x_i, x_i)``, and both must be below ``tol``: (1) the *change* of every test
variance since the previous basis size (the basis grows geometrically, by half
its size, at least ``check_every`` vectors); (2) the *sampled error*: the
variances of ``samples`` (8) seeded random test points are computed by the
accurate block solves (CG at ``t = inf``, one Lanczos basis per column at finite
``t``) and compared. The change alone can stall on a plateau (measured: a change
of 1e-3 while the variances were still 30x too large), which is why the sampled
check is there; it is an estimate for the other test points, not a bound. An
invariant Krylov space makes the approximation exact. A budget of ``max_rank``
vectors exhausted raises :class:`ConvergenceError` with both estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConvergenceError, NonFiniteError, NotPositiveDefiniteError
from .operators import KernelOperator


@dataclass
class LanczosBasis:
    """A Lanczos decomposition ``B Q_k = Q_k T_k + beta_k q_{k+1} e_k^T``, grown on demand.

    ``B = A`` (or ``M A M`` for a symmetric ``M`` given as ``half``). The start
    vector is a seeded Gaussian (independent of any test point, so the basis
    serves all of them). Full reorthogonalisation (twice per step).
    """

    op: KernelOperator
    half: object = None  # a callable M on (n, c) blocks, or None
    seed: int = 0
    q: np.ndarray = field(init=False, repr=False)  # (capacity, n)
    alpha: list = field(init=False, default_factory=list)
    beta: list = field(init=False, default_factory=list)
    invariant: bool = field(init=False, default=False)

    def __post_init__(self):
        n = self.op.n
        q0 = np.random.default_rng(self.seed).standard_normal(n)
        self.q = np.zeros((16, n))
        self.q[0] = q0 / np.linalg.norm(q0)

    @property
    def k(self) -> int:
        return len(self.alpha)

    def _apply(self, v: np.ndarray) -> np.ndarray:
        if self.half is None:
            return self.op.matmat(v)
        return self.half(self.op.matmat(self.half(v[:, None])))[:, 0]

    def extend(self, k_new: int) -> None:
        """Run steps until the basis has ``min(k_new, n)`` vectors (or is invariant)."""
        n = self.op.n
        k_new = min(int(k_new), n)
        while self.k < k_new and not self.invariant:
            k = self.k
            if k + 1 >= self.q.shape[0]:
                grown = np.zeros((min(2 * self.q.shape[0], n + 1), n))
                grown[:self.q.shape[0]] = self.q
                self.q = grown
            qk = self.q[k]
            w = self._apply(qk)
            if not np.all(np.isfinite(w)):
                raise NonFiniteError(f"Lanczos on {self.op.name}: NaN/inf after {k + 1} steps")
            a = float(qk @ w)
            w -= a * qk
            if k:
                w -= self.beta[-1] * self.q[k - 1]
            basis = self.q[:k + 1]
            for _ in range(2):
                w -= basis.T @ (basis @ w)
            b = float(np.linalg.norm(w))
            self.alpha.append(a)
            scale = max(abs(x) for x in self.alpha)
            if b <= 1e-13 * max(scale, 1e-300) or k + 1 == n:
                self.beta.append(0.0)
                self.invariant = True
            else:
                self.beta.append(b)
                self.q[k + 1] = w / b

    def ritz(self, k: int | None = None):
        """``(theta, S)`` of ``T_k`` (ascending); raises on a negative Ritz value."""
        k = self.k if k is None else k
        from scipy.linalg import eigh_tridiagonal

        a, b = np.asarray(self.alpha[:k]), np.asarray(self.beta[:k - 1])
        theta, s = eigh_tridiagonal(a, b) if k > 1 else (a.copy(), np.ones((1, 1)))
        if theta[0] < -1e-10 * max(abs(theta[-1]), 1e-300):
            raise NotPositiveDefiniteError(
                f"{self.op.name}: expected a positive semi-definite kernel, but Lanczos found "
                f"the Ritz value {theta[0]:.3g} (largest {theta[-1]:.3g})")
        return np.maximum(theta, 0), s

    def vectors(self, k: int | None = None) -> np.ndarray:
        """``M Q_k`` as ``(n, k)`` (``Q_k`` without a preconditioner)."""
        k = self.k if k is None else k
        qk = self.q[:k].T
        return self.half(qk) if self.half is not None else qk


class LoveCache:
    """The Lanczos bases of one train system, shared by every call of a dynamics object.

    Arguments:
        system_op: the regularised operator ``A`` (``Theta + sigma I`` or ``K + sigma I``).
        nngp_op: the NNGP operator ``K`` (for the NTK-GP's ``A_t K A_t^T`` term), or
            ``None`` for the readout-only kind.
        precond: unused (kept for a preconditioned basis; see the module docs).
        tol, max_rank, check_every, samples: the error estimates' target, the basis
            budget, the smallest growth and the number of sampled test points.
    """

    def __init__(self, system_op: KernelOperator, nngp_op: KernelOperator | None,
                 precond=None, *, tol: float = 1e-6, max_rank: int = 1000,
                 check_every: int = 10, samples: int = 8) -> None:
        self.op, self.nngp_op, self._precond = system_op, nngp_op, precond
        self.tol, self.max_rank = float(tol), int(max_rank)
        self.samples = int(samples)
        self.check_every = int(check_every)
        self._bases: dict[bool, LanczosBasis] = {}
        self._kv: dict[bool, np.ndarray] = {}  # (M Q)^T K (M Q), grown with the basis

    def basis(self, preconditioned: bool = False) -> LanczosBasis:
        """The (cached) basis of ``A`` (``preconditioned`` is reserved and must be False)."""
        if preconditioned:
            raise NotImplementedError("a preconditioned LOVE basis (see the module docs)")
        if False not in self._bases:
            self._bases[False] = LanczosBasis(self.op)
        return self._bases[False]

    def _gram_k(self, pre: bool, mq: np.ndarray) -> np.ndarray:
        """``(M Q)^T K (M Q)`` for the first ``mq.shape[1]`` vectors, new columns only."""
        have = self._kv.get(pre, np.zeros((0, 0)))
        k0, k = have.shape[0], mq.shape[1]
        if k0 >= k:
            return have[:k, :k]
        kn = self.nngp_op.matmat(mq[:, k0:])  # (n, k - k0)
        g = np.zeros((k, k))
        g[:k0, :k0] = have
        cross = mq.T @ kn  # (k, k - k0)
        g[:, k0:] = cross
        g[k0:, :] = cross.T
        self._kv[pre] = g
        return g

    def _variances(self, pre, k, times, factors, kind, k_tx, th_tx, k_tt, full):
        """Covariances (or their diagonals) of all test points at all ``times`` with ``k`` steps."""
        b = self.basis(pre)
        theta, s = b.ritz(k)
        mq = b.vectors(k)
        r_th = s.T @ (mq.T @ th_tx.T)  # (k, m): R^T Theta_Xx
        r_k = r_th if kind == "nngp" else s.T @ (mq.T @ k_tx.T)
        if kind == "ntk":
            g = s.T @ self._gram_k(pre, mq) @ s
        out = []
        for t in times:
            if np.isinf(t):
                pos = theta > 0
                h = np.where(pos, 1 / np.where(pos, theta, 1), 0.0)
            else:
                tt = 2 * t if kind == "nngp" else t
                h = factors(theta, np.array([tt]))[1][0]
            if kind == "nngp":
                hz = h[:, None] * r_k
                out.append(k_tt - r_k.T @ hz if full else
                           np.diagonal(k_tt) - np.sum(r_k * hz, axis=0))
            else:
                c = h[:, None] * r_th  # (k, m): coefficients of A_t^T in R
                gc = g @ c
                if full:
                    cross = c.T @ r_k
                    out.append(k_tt + c.T @ gc - cross - cross.T)
                else:
                    out.append(np.diagonal(k_tt) + np.sum(c * gc, axis=0)
                               - 2 * np.sum(c * r_k, axis=0))
        return out

    def covariances(self, times, factors, kind, k_tx, th_tx, k_tt, info: dict, exact=None):
        """``{t: cov (m, m)}`` for every time, growing the basis until the estimates are met.

        Arguments:
            times: unique times (``inf`` allowed); factors: the dynamics' mode factors.
            kind: ``"ntk"`` or ``"nngp"``; k_tx, th_tx: ``(m, n)`` test-train kernels;
            k_tt: ``(m, m)`` test-test NNGP; info: the result's info dict (updated with
            ``love_rank``, ``love_change``, ``love_sample_error``, ``love_estimate``).
            exact: ``(idx, times) -> [var (len(idx),) per time]``, the variances of a few
                test points by the accurate block solves (the sampled check), or ``None``.

        Raises:
            ConvergenceError: ``max_rank`` steps without both estimates below ``tol``.
        """
        prior = np.maximum(np.abs(np.diagonal(k_tt)), 1e-300)
        m = prior.size
        ts = [float(t) for t in times]
        idx = np.sort(np.random.default_rng(1).choice(m, min(m, self.samples), replace=False))
        ref = exact(idx, ts) if exact is not None and idx.size else None
        b = self.basis(False)
        budget = min(self.max_rank, self.op.n)
        k_prev, prev = 0, None
        change = sample = np.inf
        k = max(b.k, min(budget, 2 * self.check_every))
        while True:
            b.extend(k)
            k = b.k
            cur = self._variances(False, k, ts, factors, kind, k_tx, th_tx, k_tt, False)
            if b.invariant:
                change = 0.0
            elif prev is not None and k > k_prev:
                change = max(float(np.max(np.abs(c - p) / prior)) for c, p in zip(cur, prev))
            sample = 0.0 if ref is None else max(
                float(np.max(np.abs(c[idx] - r) / prior[idx])) for c, r in zip(cur, ref))
            if max(change, sample) <= self.tol or (b.invariant and ref is None):
                break
            if k >= budget or b.invariant:
                raise ConvergenceError(
                    f"LOVE variances on {self.op.name} did not converge: change estimate "
                    f"{change:.3g}, sampled error {sample:.3g} (relative to the prior "
                    f"variance) with a basis of {k} Lanczos vectors, tolerance "
                    f"{self.tol:.3g}; raise love_rank, loosen love_tol, or use "
                    f"covariance='solve'")
            prev, k_prev = cur, k
            k = min(budget, k + max(self.check_every, k // 2))
        full = self._variances(False, k, ts, factors, kind, k_tx, th_tx, k_tt, True)
        info["love_rank"] = k
        info["love_change"] = change
        info["love_sample_error"] = sample
        info["love_samples"] = int(idx.size) if ref is not None else 0
        info["love_estimate"] = max(change, sample)
        return dict(zip(ts, full))
