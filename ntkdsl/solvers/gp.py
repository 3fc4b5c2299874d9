"""Iterative versions of the predictive equations of :mod:`ntkdsl.predict` (eq. 8-16).

The formulas are those of ``docs/maths.md`` with every product by
``h_t(Theta) = Theta^{-1} (I - e^{-eta Theta t})`` done on vectors:

* NTK-GP (eq. 14-16): ``C_t = h_t(Theta) [Y, Theta_Xx]`` in one block, then
  ``mean = Theta_xX C_t[:, :k]`` and, with ``A_t^T = C_t[:, k:]``,
  ``cov = K_xx + A_t K A_t^T - A_t K_Xx - K_xX A_t^T`` (one block product with ``K``).
* readout-only (``kind="nngp"``) and the NNGP posterior (eq. 13):
  ``mean = K_xX h_t(K) Y``, ``cov = K_xx - K_xX h_{2t}(K) K_Xx``.
* linearised MSE dynamics (eq. 8-11), discrete GD and momentum:
  ``f_t(X) = Y + s_t(Theta) r_0``, ``c_t = -h_t(Theta) r_0``.

``solver="cg"``: ``t = inf`` by preconditioned CG (:mod:`.cg`), finite ``t`` by
Lanczos (:mod:`.lanczos`). ``solver="lanczos"``: every time by Lanczos
(``t = inf`` as ``h = 1/theta`` on the Ritz values, which is unpreconditioned
CG in disguise). The regulariser is the dense path's:
``diag_reg * trace(Theta) / n`` on the inverted kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..diagnostics import InputError
from ..dynamics import KINDS, Gaussian, effective_learning_rate
from .cg import cg_solve, refine
from .lanczos import lanczos_functions
from .love import LoveCache
from .operators import KernelOperator, ShiftedOperator, as_operator, regularized
from .precond import make_preconditioner

ITERATIVE = ("cg", "lanczos")
COVARIANCES = ("solve", "love")


class SolvedGaussian(Gaussian):
    """A :class:`ntkdsl.predict.Gaussian` that also says how it was computed.

    Attributes (besides ``mean`` and ``cov``): ``solver`` (``"cg"`` / ``"lanczos"``)
    and ``info`` (a dict: residuals, error estimates, iterations, preconditioner).
    """


def _tag(mean, cov, solver: str, info: dict) -> SolvedGaussian:
    g = SolvedGaussian(mean, cov)
    g.solver = solver
    g.info = info
    return g


def mode_factors(optimizer: str = "flow", eta: float = 1.0, momentum: float = 0.0):
    """Per-eigenvalue ``(s, h)`` of the dynamics, for Lanczos: ``(theta, times) -> (s, h)``.

    Uses the closed forms of :mod:`ntkdsl.predict` (flow, GD, momentum) at finite
    times; ``t = inf`` gives ``s = 0`` and ``h = 1/theta`` (0 on exact null modes).

    Arguments:
        optimizer: ``"flow"``, ``"gd"`` or ``"momentum"``; eta: the effective rate;
        momentum: heavy-ball ``beta``.

    Returns:
        A function ``(theta (k,), times (T,)) -> (s (T, k), h (T, k))`` of numpy arrays.
    """
    import jax

    from ..dynamics import _mode_factors

    def factors(theta, times):
        times = np.asarray(times, np.float64)
        inf = np.isinf(times)
        with jax.enable_x64(True):
            s, h = _mode_factors(optimizer, jax.numpy.asarray(theta),
                                 jax.numpy.asarray(np.where(inf, 0.0, times)), eta, momentum)
        s, h = np.array(s, np.float64), np.array(h, np.float64)
        pos = theta > 0
        s[inf] = 0.0
        h[inf] = np.where(pos, 1 / np.where(pos, theta, 1), 0.0)
        return s, h

    return factors


@dataclass
class SolverOptions:
    """Tolerances and budgets of the iterative solvers.

    ``tol``: relative residual (CG) and error estimate (Lanczos);
    ``max_iter``: CG products / Lanczos steps; ``precond``: ``"cholesky"``,
    ``"nystrom"`` or ``"none"``; ``rank``: preconditioner rank;
    ``covariance``: ``"solve"`` (test covariances from block solves, one column per
    test point) or ``"love"`` (one Lanczos decomposition for all test points,
    :mod:`.love`); ``love_tol``, ``love_rank``, ``love_samples``: its error-estimate
    target, basis budget and the test points checked by accurate solves;
    ``refine``: ``"auto"`` (float32-stored kernels of a model are refined against
    a float64 matrix-free operator at ``t = inf``) or ``"off"``.
    """

    tol: float = 1e-10
    max_iter: int = 2000
    precond: str = "cholesky"
    rank: int = 300
    covariance: str = "solve"
    love_tol: float = 1e-6
    love_rank: int = 1000
    love_samples: int = 8
    refine: str = "auto"

    @classmethod
    def of(cls, options) -> SolverOptions:
        if isinstance(options, SolverOptions):
            return options
        options = dict(options or {})
        names = [f.name for f in fields(cls)]
        unknown = set(options) - set(names)
        if unknown:
            raise InputError(f"solver options: expected {', '.join(names)}, got "
                             f"{', '.join(sorted(unknown))}")
        out = cls(**options)
        if out.covariance not in COVARIANCES:
            raise InputError(f"solver options: covariance expected one of "
                             f"{', '.join(COVARIANCES)}, got {out.covariance!r}")
        if out.refine not in ("auto", "off"):
            raise InputError(f"solver options: refine expected auto or off, got {out.refine!r}")
        for name in ("tol", "love_tol"):
            value = getattr(out, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise InputError(f"solver options: {name} expected a number in (0, 1), "
                                 f"got {value!r}")
        for name in ("max_iter", "love_rank", "love_samples"):
            if not (isinstance(getattr(out, name), int) and getattr(out, name) > 0):
                raise InputError(f"solver options: {name} expected a positive integer, "
                                 f"got {getattr(out, name)!r}")
        return out


@dataclass
class _System:
    """A regularised operator with its (lazily built) preconditioner.

    ``high``: the same kernel through an accurate (float64) operator when ``base`` is
    stored in float32; ``t = inf`` solves then use iterative refinement (CG on
    ``base``, residuals with ``high``), and the shift is taken from ``high``'s trace
    so both see the same system.
    """

    base: KernelOperator
    diag_reg: float
    options: SolverOptions
    high: KernelOperator | None = None
    op: KernelOperator = field(init=False)
    op_high: KernelOperator | None = field(init=False, default=None)
    _precond: Any = field(init=False, default=False)

    def __post_init__(self):
        if self.high is None:
            self.op = regularized(self.base, self.diag_reg)
            return
        if self.high.n != self.base.n:
            raise InputError(f"refinement operator: expected {self.base.n} rows like "
                             f"{self.base.name}, got {self.high.n}")
        self.op_high = regularized(self.high, self.diag_reg)
        self.op = ShiftedOperator(self.base, self.op_high.shift)

    @property
    def precond(self):
        if self._precond is False:
            self._precond = make_preconditioner(self.base, self.options.precond,
                                                self.options.rank, shift=self.op.shift)
        return self._precond

    def apply(self, rhs, times, factors, solver, info, want_s=False, want_h=True):
        """``{t: (s_t(A) rhs, h_t(A) rhs)}`` for each time, by the chosen solver."""
        times = np.asarray(times, np.float64)
        out = {}
        lz = times if solver == "lanczos" else times[np.isfinite(times)]
        if lz.size:
            res = lanczos_functions(self.op, rhs, lz, factors, want_s=want_s, want_h=want_h,
                                    tol=self.options.tol, max_iter=self.options.max_iter)
            info["lanczos_estimate"] = max(info.get("lanczos_estimate", 0.0), res.estimate)
            info["lanczos_steps"] = max(info.get("lanczos_steps", 0), res.iterations)
            for i, t in enumerate(lz):
                out[float(t)] = (res.s[i] if want_s else None, res.h[i] if want_h else None)
        if solver == "cg" and np.any(np.isinf(times)):
            pc = self.precond
            if self.op_high is not None:
                r = refine(self.op, self.op_high, rhs, precond=pc, tol=self.options.tol,
                           max_iter=self.options.max_iter)
                info["refinement_steps"] = r.restarts
            else:
                r = cg_solve(self.op, rhs, precond=pc, tol=self.options.tol,
                             max_iter=self.options.max_iter)
            info["cg_residual"] = max(info.get("cg_residual", 0.0), r.max_residual)
            info["cg_iterations"] = info.get("cg_iterations", 0) + r.iterations
            info["precond"] = f"{pc.method} rank {pc.rank}" if pc is not None else "none"
            out[np.inf] = (np.zeros_like(rhs) if want_s else None, r.x)
        return out


def _as_2d(a, name, shape1=None) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or (shape1 is not None and a.shape[1] != shape1):
        raise InputError(f"{name}: expected shape (m, {shape1}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: expected finite values, got NaN/inf")
    return a


def _check_solver(solver: str) -> None:
    if solver not in ITERATIVE:
        raise InputError(f"solver: expected one of {', '.join(ITERATIVE)}, got {solver!r}")


class IterativeGPDynamics:
    """The iterative counterpart of :class:`ntkdsl.predict.GPDynamics` (same call).

    Built by :func:`iterative_gradient_descent_mse_gp`. ``solver`` says which
    method is used; each result is a :class:`SolvedGaussian` whose ``info`` holds the
    residuals and estimates reached.
    """

    def __init__(self, kind, system: _System, nngp_op: KernelOperator, y, eta, solver):
        self.kind, self.system, self.nngp_op = kind, system, nngp_op
        self.y_train, self.eta, self.solver = y, float(eta), solver
        self.factors = mode_factors("flow", self.eta)
        # the NTK-GP covariance's one product with K: through a float64 operator when
        # the stored K is float32 (set by the caller), the cancellation in
        # K_xx + A K A^T - 2 A K_Xx would otherwise show the storage rounding
        self.cov_nngp_op = nngp_op
        self._coef: dict[float, np.ndarray] = {}  # h_t(Theta) Y per time
        self._coef_info: dict = {}
        self._love: LoveCache | None = None

    @property
    def love(self) -> LoveCache:
        """The Lanczos bases of the cheap covariances (built on first use, then reused)."""
        if self._love is None:
            opts = self.system.options
            self._love = LoveCache(self.system.op,
                                   self.nngp_op if self.kind == "ntk" else None,
                                   tol=opts.love_tol, max_rank=opts.love_rank,
                                   samples=opts.love_samples)
        return self._love

    def _exact_variances(self, idx, times, k_tx, th_tx, k_tt) -> list:
        """Variances of the test points ``idx`` by the accurate block solves (LOVE's check)."""
        prior = np.diagonal(k_tt)[idx]
        times = np.asarray(times, np.float64)
        info: dict = {}
        if self.kind == "nngp":
            t2 = np.where(np.isinf(times), np.inf, 2 * times)
            acts = self.system.apply(k_tx[idx].T, np.unique(t2), self.factors, self.solver,
                                     info)
            return [prior - np.sum(k_tx[idx].T * acts[float(t)][1], axis=0) for t in t2]
        acts = self.system.apply(th_tx[idx].T, np.unique(times), self.factors, self.solver,
                                 info)
        a = np.concatenate([acts[float(t)][1] for t in times], axis=1)
        ka = self.cov_nngp_op.matmat(a)
        s = len(idx)
        out = []
        for i in range(len(times)):
            ai, kai = a[:, i * s:(i + 1) * s], ka[:, i * s:(i + 1) * s]
            out.append(prior + np.sum(ai * kai, axis=0) - 2 * np.sum(ai * k_tx[idx].T, axis=0))
        return out

    def _mean_coefficients(self, times, info: dict) -> dict:
        """``{t: h_t(Theta) Y}``, solving only for times not seen by an earlier call."""
        missing = [t for t in times if float(t) not in self._coef]
        if missing:
            acts = self.system.apply(self.y_train, np.asarray(missing), self.factors,
                                     self.solver, self._coef_info)
            for t in missing:
                self._coef[float(t)] = acts[float(t)][1]
        info.update({key: v for key, v in self._coef_info.items() if key != "solver"})
        return {float(t): self._coef[float(t)] for t in times}

    def __call__(self, t, nngp_test_train, nngp_test_test=None, ntk_test_train=None):
        """Mean and covariance at times ``t`` (as :meth:`ntkdsl.predict.GPDynamics.__call__`).

        Returns:
            :class:`SolvedGaussian` with ``mean`` ``(*t.shape, m, k)`` and ``cov``
            ``(*t.shape, m, m)`` or ``None``.
        """
        n, k = self.y_train.shape
        t_arr = np.asarray(t, np.float64)
        tt = t_arr.reshape(-1)
        if np.any(np.isnan(tt)) or np.any(tt < 0):
            raise InputError(f"t: expected times >= 0 (inf allowed), got {t_arr}")
        k_tx = _as_2d(nngp_test_train, "nngp_test_train", n)
        if self.kind == "ntk":
            if ntk_test_train is None:
                raise InputError("ntk_test_train: expected an (m, n) array for kind='ntk', "
                                 "got None")
            th_tx = _as_2d(ntk_test_train, "ntk_test_train", n)
            if th_tx.shape != k_tx.shape:
                raise InputError(f"ntk_test_train: expected shape {k_tx.shape} like "
                                 f"nngp_test_train, got {th_tx.shape}")
        else:
            th_tx = k_tx
        m = k_tx.shape[0]
        want_cov = nngp_test_test is not None
        if want_cov:
            k_tt = _as_2d(nngp_test_test, "nngp_test_test", m)
            if k_tt.shape != (m, m):
                raise InputError(f"nngp_test_test: expected ({m}, {m}), got {k_tt.shape}")
        info: dict = {"solver": self.solver}
        uniq = np.unique(tt)
        love = want_cov and self.system.options.covariance == "love"
        if not want_cov or love:
            # the mean needs only h_t(Theta) Y: cached per time across calls
            coef = self._mean_coefficients(uniq, info)
            means = [th_tx @ coef[float(ti)] for ti in tt]
            covs = []
            if love:
                info["covariance"] = "love"
                got = self.love.covariances(
                    uniq, self.factors, self.kind, k_tx, th_tx, k_tt, info,
                    exact=lambda idx, ts: self._exact_variances(idx, ts, k_tx, th_tx, k_tt))
                covs = [(got[float(ti)] + got[float(ti)].T) / 2 for ti in tt]
            mean = np.stack(means).reshape(*t_arr.shape, m, k)
            cov = np.stack(covs).reshape(*t_arr.shape, m, m) if want_cov else None
            return _tag(mean, cov, self.solver, info)
        if self.kind == "nngp":
            # mean needs h_t, the covariance h_{2t}: one basis serves both
            times = np.unique(np.concatenate([uniq, 2 * uniq]))
        else:
            times = uniq
        rhs = np.concatenate([self.y_train, th_tx.T], axis=1)
        acts = self.system.apply(rhs, times, self.factors, self.solver, info)
        ka = {}
        if self.kind == "ntk":
            # K A_t^T for every time in one product: one pass over K (a recomputation of
            # it for a matrix-free K), not one per time
            prod = self.cov_nngp_op.matmat(
                np.concatenate([acts[float(t)][1][:, k:] for t in uniq], axis=1))
            ka = {float(t): prod[:, i * m:(i + 1) * m] for i, t in enumerate(uniq)}
        means, covs = [], []
        for ti in tt:
            h = acts[float(ti)][1]
            means.append(th_tx @ h[:, :k])
            if self.kind == "nngp":
                cov = k_tt - k_tx @ acts[float(2 * ti)][1][:, k:]
            else:
                at = h[:, k:]  # A_t^T, (n, m)
                cross = k_tx @ at
                cov = k_tt + at.T @ ka[float(ti)] - cross - cross.T
            covs.append((cov + cov.T) / 2)
        mean = np.stack(means).reshape(*t_arr.shape, m, k)
        cov = np.stack(covs).reshape(*t_arr.shape, m, m) if want_cov else None
        return _tag(mean, cov, self.solver, info)


def iterative_gradient_descent_mse_gp(nngp_train_train, y_train, *, ntk_train_train=None,
                                      kind: str = "ntk", learning_rate: float = 1.0,
                                      diag_reg: float = 0.0, loss: str = "total",
                                      solver: str = "cg", options=None,
                                      refine_with=None) -> IterativeGPDynamics:
    """:func:`ntkdsl.predict.gradient_descent_mse_gp` by iterative solvers.

    Arguments:
        nngp_train_train, ntk_train_train: the train kernels: in-memory matrices, any
            2-D row-sliceable arrays (memory-mapped ``.npy``, zarr) or
            :class:`KernelOperator` s (e.g. matrix-free).
        y_train: ``(n, k)`` targets.
        kind, learning_rate, diag_reg, loss: as :func:`ntkdsl.predict.gradient_descent_mse_gp`.
        solver: ``"cg"`` or ``"lanczos"`` (module docs).
        options: a :class:`SolverOptions` or a dict of its fields.
        refine_with: the inverted kernel (``Theta``, or ``K`` for ``kind="nngp"``)
            through an accurate float64 operator when the given one is stored in
            float32 (e.g. a :class:`MatrixFreeOperator`): ``t = inf`` solves then refine
            to float64 residuals (:func:`ntkdsl.solvers.refine`).

    Returns:
        An :class:`IterativeGPDynamics`, called like :class:`ntkdsl.predict.GPDynamics`.
    """
    _check_solver(solver)
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    opts = SolverOptions.of(options)
    kk = as_operator(nngp_train_train, "nngp_train_train")
    y = _as_2d(y_train, "y_train")
    if y.shape[0] != kk.n:
        raise InputError(f"y_train: expected shape ({kk.n}, outputs) to match the train "
                         f"kernel, got {y.shape}")
    eta = effective_learning_rate(learning_rate, y.size, loss)
    if kind == "ntk":
        if ntk_train_train is None:
            raise InputError("ntk_train_train: expected an (n, n) array for kind='ntk', "
                             "got None")
        th = as_operator(ntk_train_train, "ntk_train_train")
        if th.n != kk.n:
            raise InputError(f"ntk_train_train: expected shape ({kk.n}, {kk.n}) like "
                             f"nngp_train_train, got ({th.n}, {th.n})")
    else:
        th = kk
    high = None if refine_with is None else as_operator(refine_with, f"{th.name} (float64)")
    return IterativeGPDynamics(kind, _System(th, diag_reg, opts, high), kk, y, eta, solver)


def iterative_gp_inference(k_train_train, y_train, k_test_train, k_test_test=None, *,
                           diag_reg: float = 0.0, solver: str = "cg",
                           options=None) -> SolvedGaussian:
    """:func:`ntkdsl.predict.gp_inference` (the NNGP posterior, eq. 13) by iterative solvers.

    Arguments:
        k_train_train: the train kernel (matrix, sliceable array or operator);
        y_train ``(n, k)``; k_test_train ``(m, n)``; k_test_test ``(m, m)`` or ``None``.
        diag_reg: relative regulariser; solver: ``"cg"`` or ``"lanczos"``;
        options: :class:`SolverOptions` or a dict.

    Returns:
        :class:`SolvedGaussian` ``(mean (m, k), cov (m, m) or None)``.
    """
    dyn = iterative_gradient_descent_mse_gp(k_train_train, y_train, kind="nngp",
                                            diag_reg=diag_reg, solver=solver, options=options)
    return dyn(np.inf, k_test_train, k_test_test)


class IterativeMSEDynamics:
    """Linearised MSE training (eq. 8-11; flow, discrete GD, momentum) by Lanczos and CG.

    Built by :func:`iterative_gradient_descent_mse`; called like
    :class:`ntkdsl.predict.MSEDynamics`: ``dyn(t, fx_train_0, fx_test_0, k_test_train)``.
    """

    def __init__(self, system: _System, y, eta, optimizer, momentum, solver):
        self.system, self.y_train, self.eta = system, y, float(eta)
        self.optimizer, self.momentum, self.solver = optimizer, float(momentum), solver
        self.factors = mode_factors(optimizer, self.eta, self.momentum)

    def residual_coefficients(self, t, fx_train_0=0.0):
        """``(fx_train_t, c_t)`` as :meth:`ntkdsl.predict.MSEDynamics.residual_coefficients`."""
        t_arr = np.asarray(t, np.float64)
        tt = t_arr.reshape(-1)
        if np.any(np.isnan(tt)) or np.any(tt < 0):
            raise InputError(f"t: expected times >= 0 (inf allowed), got {t_arr}")
        if self.optimizer != "flow":
            fin = tt[np.isfinite(tt)]
            if np.any(fin != np.round(fin)):
                raise InputError(f"t: expected whole numbers of steps for "
                                 f"optimizer={self.optimizer!r}, got {t_arr}")
        r0 = np.broadcast_to(np.asarray(fx_train_0, np.float64), self.y_train.shape) \
            - self.y_train
        self.info = {"solver": self.solver}
        acts = self.system.apply(r0, np.unique(tt), self.factors, self.solver, self.info,
                                 want_s=True, want_h=True)
        fx = np.stack([self.y_train + acts[float(ti)][0] for ti in tt])
        c = np.stack([-acts[float(ti)][1] for ti in tt])
        shape = t_arr.shape + self.y_train.shape
        return fx.reshape(shape), c.reshape(shape)

    def __call__(self, t, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        """Train (and test) outputs at times ``t`` (eq. 9-11).

        Returns:
            ``(fx_train_t, fx_test_t)``; ``fx_test_t`` is ``None`` without ``k_test_train``.
        """
        fx, c = self.residual_coefficients(t, fx_train_0)
        if k_test_train is None:
            return fx, None
        k_tx = _as_2d(k_test_train, "k_test_train", self.y_train.shape[0])
        f0 = np.broadcast_to(np.asarray(0.0 if fx_test_0 is None else fx_test_0, np.float64),
                             (k_tx.shape[0], self.y_train.shape[1]))
        return fx, f0 + np.einsum("mn,...nk->...mk", k_tx, c)


def iterative_gradient_descent_mse(k_train_train, y_train, *, learning_rate: float = 1.0,
                                   diag_reg: float = 0.0, loss: str = "total",
                                   optimizer: str = "flow", momentum: float = 0.9,
                                   solver: str = "cg", options=None) -> IterativeMSEDynamics:
    """:func:`ntkdsl.predict.gradient_descent_mse` (per-output kernel) by iterative solvers.

    Arguments:
        k_train_train: ``(n, n)`` kernel (matrix, sliceable array or operator).
        y_train, learning_rate, diag_reg, loss, optimizer, momentum: as the dense function.
        solver: ``"cg"`` or ``"lanczos"``; options: :class:`SolverOptions` or a dict.

    Returns:
        An :class:`IterativeMSEDynamics`.
    """
    _check_solver(solver)
    if optimizer not in ("flow", "gd", "momentum"):
        raise InputError(f"optimizer: expected one of flow, gd, momentum, got {optimizer!r}")
    beta = float(momentum) if optimizer == "momentum" else 0.0
    if not 0 <= beta < 1:
        raise InputError(f"momentum: expected a number in [0, 1), got {momentum}")
    op = as_operator(k_train_train, "k_train_train")
    y = _as_2d(y_train, "y_train")
    if y.shape[0] != op.n:
        raise InputError(f"y_train: expected shape ({op.n}, outputs), got {y.shape}")
    eta = effective_learning_rate(learning_rate, y.size, loss)
    return IterativeMSEDynamics(_System(op, diag_reg, SolverOptions.of(options)), y, eta,
                                optimizer, beta, solver)
