"""Iterative solvers (ntkdsl.solvers) against the dense eigendecomposition of ntkdsl.predict."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import ntkdsl
from ntkdsl import predict as P
from ntkdsl.diagnostics import InputError
from ntkdsl.solvers import (
    ArrayOperator,
    ConvergenceError,
    DenseOperator,
    MatrixFreeOperator,
    NotPositiveDefiniteError,
    cg_solve,
    iterative_gradient_descent_mse,
    iterative_gradient_descent_mse_gp,
    lanczos_functions,
    make_preconditioner,
    mode_factors,
    refine,
    regularized,
)
from ntkdsl.solvers.select import choose_solver

TIMES = np.array([0.1, 1.0, 10.0, np.inf])
SPECS = "examples/specs"


def _kernels(spec, net, n, m=20, flat=True):
    model = ntkdsl.compile_file(f"{SPECS}/{spec}.ntk", net=net)
    d = ntkdsl.load_digits(n, m, flat=flat)
    kt = model.kernel_fn(d.x_train, None, ("nngp", "ntk"))
    kx = model.kernel_fn(d.x_test, d.x_train, ("nngp", "ntk"))
    ktt = np.asarray(model.kernel_fn(d.x_test, None, "nngp"))
    return (np.asarray(kt.nngp), np.asarray(kt.ntk), np.asarray(kx.nngp), np.asarray(kx.ntk),
            ktt, d.y_train)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _compare(kernels, kind, solver, diag_reg, precond="cholesky"):
    K, T, kx, tx, ktt, y = kernels
    dense = P.gradient_descent_mse_gp(K, y, ntk_train_train=T, kind=kind, diag_reg=diag_reg,
                                      solver="dense")
    it = P.gradient_descent_mse_gp(K, y, ntk_train_train=T, kind=kind, diag_reg=diag_reg,
                                   solver=solver,
                                   solver_options={"precond": precond, "max_iter": 3000})
    assert it.solver == solver and dense.solver == "dense"
    g0, g = dense(TIMES, kx, ktt, tx), it(TIMES, kx, ktt, tx)
    assert g.solver == solver
    for i, t in enumerate(TIMES):
        assert _rel(g.mean[i], g0.mean[i]) < 1e-6, (t, "mean")
        assert _rel(g.cov[i], g0.cov[i]) < 1e-6, (t, "cov")
    return g


@pytest.fixture(scope="module")
def fc3_1000():
    return _kernels("fc_relu", "fc3", 1000)


def test_ntk_gp_cg_matches_dense_fc(fc3_1000):
    g = _compare(fc3_1000, "ntk", "cg", 1e-4)
    assert g.info["cg_residual"] <= 1e-10 and g.info["lanczos_estimate"] <= 1e-10


def test_nngp_lanczos_matches_dense_fc_unregularised(fc3_1000):
    # diag_reg = 0: the NNGP kernel's condition number is ~4e5
    _compare(fc3_1000, "nngp", "lanczos", 0.0)


def test_gp_inference_routes_and_matches(fc3_1000):
    K, _, kx, _, ktt, y = fc3_1000
    g0 = P.gp_inference(K, y, kx, ktt, diag_reg=1e-3, solver="dense")
    g = P.gp_inference(K, y, kx, ktt, diag_reg=1e-3, solver="cg",
                       solver_options={"precond": "nystrom"})
    assert g.solver == "cg" and "nystrom" in g.info["precond"]
    assert _rel(g.mean, g0.mean) < 1e-6 and _rel(g.cov, g0.cov) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("case", [("fc_relu", "fc3", True, 1e-4), ("fc_deep", "fc5", True, 0.0),
                                  ("digits_cnn", "cnn_flatten", False, 1e-4),
                                  ("digits_cnn", "cnn_flatten", False, 0.0)])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("solver", ["cg", "lanczos"])
def test_matches_dense_all_digits(case, kind, solver):
    # every digit the loader has: 1777 train + 20 test points
    spec, net, flat, reg = case
    _compare(_kernels(spec, net, 1777, flat=flat), kind, solver, reg)


def _rbf(n, seed=0, ell=1.0):
    x = np.random.default_rng(seed).standard_normal((n, 3))
    d2 = np.sum((x[:, None] - x[None]) ** 2, -1)
    return np.exp(-d2 / (2 * ell**2))


@pytest.mark.parametrize("method", ["cholesky", "nystrom", "none"])
def test_cg_residual_is_honest(method):
    k = _rbf(400)
    op = regularized(DenseOperator(k), 1e-3)
    b = np.random.default_rng(1).standard_normal((400, 3))
    pc = make_preconditioner(op.base, method, 50, shift=op.shift)
    r = cg_solve(op, b, precond=pc, tol=1e-9, max_iter=5000)
    a = k + op.shift * np.eye(400)
    true = np.linalg.norm(b - a @ r.x, axis=0) / np.linalg.norm(b, axis=0)
    # the reported residual is the recomputed one, up to rounding of a 1e-10 quantity
    np.testing.assert_allclose(r.residual, true, rtol=1e-3, atol=1e-14)
    assert np.all(true <= 1e-9)
    assert _rel(r.x, np.linalg.solve(a, b)) < 1e-4  # residual 1e-9 times cond ~1e5


def test_matrix_free_never_materialises_the_kernel():
    n = 1000
    model = ntkdsl.compile_file(f"{SPECS}/fc_relu.ntk", net="fc1")
    d = ntkdsl.load_digits(n, 10, flat=True)
    op = MatrixFreeOperator(model, d.x_train, "ntk", block_rows=40)
    op.diagonal()
    op.matmat(np.zeros((n, 1)))  # compile the tile functions outside the measurement
    b = d.y_train
    tracemalloc.start()
    r = cg_solve(regularized(op, 1e-2), b, tol=1e-8)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert op.stats.max_block_bytes <= 40 * n * 8 < n * n * 8 / 10
    assert peak < n * n * 8 / 3, peak  # numpy's allocations; K alone would be n^2 x 8
    k = np.asarray(model.kernel_fn(d.x_train, None, "ntk"))
    a = k + 1e-2 * np.trace(k) / n * np.eye(n)
    assert _rel(r.x, np.linalg.solve(a, b)) < 1e-6


def test_streamed_zarr_and_memmap_float32_with_refinement(tmp_path):
    zarr = pytest.importorskip("zarr")
    k = _rbf(500, ell=0.7)
    z = zarr.open_array(str(tmp_path / "k.zarr"), mode="w", shape=k.shape, chunks=(128, 128),
                        dtype="float32")
    z[:] = k.astype(np.float32)
    np.save(tmp_path / "k.npy", k.astype(np.float32))
    mm = np.load(tmp_path / "k.npy", mmap_mode="r")
    b = np.random.default_rng(2).standard_normal((500, 2))
    high = regularized(DenseOperator(k), 1e-2)
    exact = np.linalg.solve(k + high.shift * np.eye(500), b)
    for arr in (z, mm):
        op = ArrayOperator(arr, block_bytes=500 * 12 * 64)
        assert op.block_rows() == 64
        low = regularized(op, 1e-2)
        pc = make_preconditioner(op, "cholesky", 200, shift=low.shift)
        plain = cg_solve(low, b, precond=pc, tol=1e-10)
        assert 1e-9 < _rel(plain.x, exact) < 1e-2  # float32 storage: float32-level error
        ref = refine(low, high, b, precond=pc, tol=1e-11)
        assert np.max(np.linalg.norm(b - high.matmat(ref.x), axis=0)
                      / np.linalg.norm(b, axis=0)) <= 1e-11
        assert _rel(ref.x, exact) < 1e-6


@pytest.mark.parametrize("optimizer", ["flow", "gd", "momentum"])
def test_mse_dynamics_discrete_optimisers(optimizer):
    k = _rbf(300) * 3
    y = np.random.default_rng(3).standard_normal((300, 2))
    kx = _rbf(300, seed=4)[:20]
    lr = 0.5 * P.eta_critical(k)
    times = np.array([0.0, 1.0, 7.0, 50.0, np.inf])
    kw = dict(learning_rate=lr, diag_reg=1e-3, optimizer=optimizer, momentum=0.8)
    dense = P.gradient_descent_mse(k, y, **kw)
    it = iterative_gradient_descent_mse(k, y, solver="cg", **kw)
    f0, ft0 = dense(times, 0.1, 0.0, kx)
    f, ft = it(times, 0.1, 0.0, kx)
    np.testing.assert_allclose(f, np.asarray(f0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ft, np.asarray(ft0), rtol=1e-6, atol=1e-8)


def test_lanczos_many_times_one_basis():
    k = regularized(DenseOperator(_rbf(200)), 1e-2)
    a = k.base.k + k.shift * np.eye(200)
    lam, v = np.linalg.eigh(a)
    b = np.random.default_rng(5).standard_normal(200)
    times = np.array([0.01, 0.3, 2.0, np.inf])
    r = lanczos_functions(k, b, times, mode_factors("flow", 1.0), tol=1e-12)
    for i, t in enumerate(times):
        h = 1 / lam if np.isinf(t) else -np.expm1(-lam * t) / lam
        np.testing.assert_allclose(r.h[i], v @ (h * (v.T @ b)), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(r.s[i], v @ (np.exp(-lam * t) * (v.T @ b)), atol=1e-9)
    assert r.estimate <= 1e-12


def _indefinite(n=100):
    k = _rbf(n)
    lam, v = np.linalg.eigh(k)
    lam[:5] = -0.5  # negative eigenvalues of a symmetric matrix
    return (v * lam) @ v.T


def test_non_psd_kernel_fails_loudly():
    k = _indefinite()
    b = np.random.default_rng(6).standard_normal((100, 1))
    with pytest.raises(NotPositiveDefiniteError, match="negative curvature"):
        cg_solve(DenseOperator(k), b, tol=1e-10)
    with pytest.raises(NotPositiveDefiniteError, match="Ritz value"):
        lanczos_functions(DenseOperator(k), b, [1.0], mode_factors(), tol=1e-10)
    dyn = iterative_gradient_descent_mse_gp(k, b, kind="nngp", solver="cg")
    with pytest.raises(NotPositiveDefiniteError):
        dyn(np.inf, k[:3])


def test_nan_kernel_is_rejected(tmp_path):
    k = _rbf(50)
    k[3, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        DenseOperator(k)
    np.save(tmp_path / "k.npy", k)
    op = ArrayOperator(np.load(tmp_path / "k.npy", mmap_mode="r"))
    with pytest.raises(InputError, match="row 3, column 7"):
        cg_solve(op, np.ones(50))


def test_budget_exhausted_reports_residual():
    op = DenseOperator(_rbf(300, ell=2.0))
    with pytest.raises(ConvergenceError, match=r"relative residual \d"):
        cg_solve(op, np.ones(300), tol=1e-12, max_iter=5, max_restarts=0)
    with pytest.raises(ConvergenceError, match=r"error estimate"):
        lanczos_functions(op, np.ones(300), [1e6], mode_factors(), tol=1e-14, max_iter=20)


def test_dense_out_of_memory_names_the_iterative_solver(monkeypatch):
    """A forced dense solve whose eigendecomposition cannot allocate says so and what to
    use instead (a user error, exit 2 in the CLI), instead of numpy's bare MemoryError."""
    def no_memory(k):
        raise MemoryError("Unable to allocate 5.96 GiB")

    monkeypatch.setattr(P, "_eigh", no_memory)
    k = _rbf(50, ell=2.0)
    with pytest.raises(InputError, match=r"50-point kernel ran out of memory.*solver='cg'"):
        P.gradient_descent_mse_gp(k, np.ones((50, 1)), kind="nngp", solver="dense")


def test_auto_selection():
    assert choose_solver("auto", 500) == "dense"
    assert choose_solver("auto", 500, memory=10**6) == "cg"
    assert choose_solver("auto", 50_000) == "cg"
    assert choose_solver("lanczos", 10) == "lanczos"
    with pytest.raises(InputError, match="solver"):
        choose_solver("qr", 10)


@pytest.mark.parametrize("spec, net, shape", [("fc_relu", "fc3", (5,)),
                                              ("digits_cnn", "cnn_flatten", (8, 8, 1))])
def test_upper_tiles_give_the_kernel_on_disk_and_in_products(tmp_path, spec, net, shape):
    # ragged tiles (300 rows in tiles of 128): the on-disk tiler and the matrix-free
    # products both walk the upper triangle once and mirror it
    from ntkdsl.solvers.model import train_kernels_to_disk

    model = ntkdsl.compile_file(f"{SPECS}/{spec}.ntk", net=net)
    n = 300 if len(shape) == 1 else 90
    x = np.random.default_rng(0).standard_normal((n, *shape))
    k = model.kernel_fn(x, None, ("nngp", "ntk"), dtype=np.float64)
    b = 128 if len(shape) == 1 else 32
    disk = train_kernels_to_disk(model, x, ("nngp", "ntk"), str(tmp_path), block_rows=b)
    v = np.random.default_rng(1).standard_normal((n, 3))
    for g in ("nngp", "ntk"):
        ref = np.asarray(getattr(k, g))
        assert _rel(np.asarray(disk[g]), ref) < 1e-12
        assert np.array_equal(np.asarray(disk[g]), np.asarray(disk[g]).T)
        op = MatrixFreeOperator(model, x, g, block_rows=b)
        assert _rel(op.matmat(v), ref @ v) < 1e-12
        assert op.stats.max_block_bytes <= b * b * 8


def test_iterative_solvers_refuse_graph_nets_by_name():
    model = ntkdsl.compile_file(f"{SPECS}/gnn.ntk", net="gnn")
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    with pytest.raises(InputError, match="graph nets"):
        MatrixFreeOperator(model, x, "ntk")
