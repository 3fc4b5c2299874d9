"""Iterative predictions of a compiled model: the train kernels tile by tile on disk.

:func:`iterative_model_predict_fn` is what ``Model.predict_fn`` / ``ntkdsl
predict`` use when the solver is ``"cg"`` or ``"lanczos"``: the train kernels
are computed by ``model.kernel_fn`` on blocks of rows (upper-triangle blocks,
mirrored) and written into memory-mapped ``.npy`` files in a temporary folder,
so memory stays bounded by one block whatever ``n`` is; the solvers then stream
them (:class:`ntkdsl.solvers.operators.ArrayOperator`). With float32 storage the
``t = inf`` solves are refined against a :class:`MatrixFreeOperator` (tiles
recomputed in float64), so they reach float64 residuals.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref

import numpy as np

from ..diagnostics import InputError
from .gp import iterative_gradient_descent_mse_gp
from .operators import MatrixFreeOperator, available_memory
from .tiles import prepared_rows, tile_side, upper_tiles

STORAGES = ("auto", "float32", "float64")


def storage_dtype(storage: str, n: int, n_kernels: int):
    """``"auto"``: float64 unless the kernels would take over a quarter of available memory.

    Arguments:
        storage: ``"auto"``, ``"float32"`` or ``"float64"``; n: points; n_kernels: 1 or 2.

    Returns:
        ``np.float32`` or ``np.float64``.
    """
    if storage not in STORAGES:
        raise InputError(f"storage: expected one of {', '.join(STORAGES)}, got {storage!r}")
    if storage != "auto":
        return np.dtype(storage).type
    return np.float64 if n_kernels * n * n * 8 <= available_memory() // 4 else np.float32


def train_kernels_to_disk(model, x_train, gets, folder, *, dtype=np.float64,
                          block_rows: int | None = None, progress: bool | None = None) -> dict:
    """Compute ``K(X, X)`` for each of ``gets`` into ``folder/<get>.npy``, band by band.

    Only the tiles ``(I, J >= I)`` are computed (:func:`.tiles.upper_tiles`); each band
    of rows is completed from the transposed column strip of the bands above and
    written as whole rows.

    Arguments:
        model: a compiled :class:`ntkdsl.Model`; x_train: ``(n, ...)`` inputs.
        gets: ``("nngp",)`` or ``("nngp", "ntk")``.
        folder: where the ``.npy`` files go.
        dtype: storage dtype (tiles are computed in float64 and cast).
        block_rows: tile side (default :func:`.tiles.tile_side`: a band of rows is at
            most about 512 MiB of float64 over all kernels).
        progress: a bar of row bands on stderr (``None``: when there are many).

    Returns:
        ``{get: read-only memory-mapped array}``.
    """
    from ..io import progress_bar

    rows = prepared_rows(model, x_train)
    n = rows.shape[0]
    b = block_rows or tile_side(n, len(gets))
    outs = {g: np.lib.format.open_memmap(f"{folder}/{g}.npy", mode="w+", dtype=dtype,
                                         shape=(n, n)) for g in gets}
    bands = -(-n // b)
    bar = progress_bar(bands, "train kernel bands",
                       progress if progress is not None else (None if bands >= 8 else False),
                       unit="band", leave=True)
    try:
        band = None
        for i0, i1, j0, j1, res in upper_tiles(model, rows, tuple(gets), b):
            if j0 == i0:
                band = {g: np.empty((i1 - i0, n - i0)) for g in gets}
            for g in gets:
                band[g][:, j0 - i0:j1 - i0] = res[g]
            if j1 < n:
                continue
            for g in gets:
                # rows i0:i1 are written whole and contiguously: their lower part is the
                # transpose of column strips written before (read back), because writing
                # the mirror as a column strip dirties a page of every later row per band
                # (measured: 200 GB written for a 12.8 GB pair of n = 40,000 kernels)
                outs[g][i0:i1, i0:] = band[g]
                if i0:
                    outs[g][i0:i1, :i0] = np.asarray(outs[g][:i0, i0:i1]).T
            bar.update(1)
    finally:
        bar.close()
    for g in gets:
        outs[g].flush()
        del outs[g]
    return {g: np.load(f"{folder}/{g}.npy", mmap_mode="r") for g in gets}


def iterative_model_predict_fn(model, x_train, y_train, *, kind: str = "ntk",
                               learning_rate: float = 1.0, diag_reg: float = 0.0,
                               loss: str = "total", compute_cov: bool = True,
                               solver: str = "cg", storage: str = "auto", options=None,
                               workdir: str | None = None):
    """``(x_test, t) -> SolvedGaussian`` by iterative solvers, kernels on disk.

    Arguments:
        model, x_train, y_train, kind, learning_rate, diag_reg, loss, compute_cov: as
            :func:`ntkdsl.model_predict.model_predict_fn`.
        solver: ``"cg"`` or ``"lanczos"``.
        storage: dtype of the stored train kernels (:func:`storage_dtype`).
        options: :class:`ntkdsl.solvers.SolverOptions` or a dict.
        workdir: folder for the temporary kernel files (default: the system's temp
            folder); they are removed when the returned function is garbage collected.

    Returns:
        ``predict(x_test, t)``; attributes ``dynamics``, ``solver``, ``storage``.
    """
    from ..compiler.inputs import check_inputs
    from .gp import SolverOptions

    options = SolverOptions.of(options)  # a bad option fails before the kernels are computed
    net = getattr(model, "net", model)
    x_train = np.asarray(check_inputs(net, x_train, None)[0], np.float64)
    n = x_train.shape[0]
    gets = ("nngp", "ntk") if kind == "ntk" else ("nngp",)
    dtype = storage_dtype(storage, n, len(gets))
    folder = tempfile.mkdtemp(prefix="ntkdsl-kernels-", dir=workdir)
    try:  # any failure before the handle exists removes the folder (nothing else would)
        arrays = train_kernels_to_disk(model, x_train, gets, folder, dtype=dtype)
        # float32 storage: t = inf solves refine against the kernel recomputed in float64
        high = (MatrixFreeOperator(model, x_train, "ntk" if kind == "ntk" else "nngp")
                if np.dtype(dtype) == np.float32 and options.refine == "auto" else None)
        dyn = iterative_gradient_descent_mse_gp(
            arrays["nngp"], y_train, ntk_train_train=arrays.get("ntk"), kind=kind,
            learning_rate=learning_rate, diag_reg=diag_reg, loss=loss, solver=solver,
            options=options, refine_with=high)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if high is not None and kind == "ntk":
        dyn.cov_nngp_op = MatrixFreeOperator(model, x_train, "nngp")

    def predict_fn(x_test, t):
        """Mean and covariance of the outputs on ``x_test`` at times ``t``."""
        import jax

        x_test = np.asarray(check_inputs(net, x_test, None)[0], np.float64)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise InputError(f"x_test: expected shape (m, {', '.join(map(str, x_train.shape[1:]))})"
                             f" like x_train, got {x_test.shape}")
        with jax.enable_x64(True):
            kx = model.kernel_fn(x_test, x_train, gets, dtype=np.float64, progress=False)
            k_tt = (np.asarray(model.kernel_fn(x_test, None, "nngp", dtype=np.float64,
                                               progress=False)) if compute_cov else None)
        return dyn(t, np.asarray(kx.nngp), k_tt,
                   np.asarray(kx.ntk) if kind == "ntk" else None)

    predict_fn.dynamics = dyn
    predict_fn.solver = solver
    predict_fn.storage = np.dtype(dtype).name
    predict_fn.kernel_folder = folder
    weakref.finalize(predict_fn, shutil.rmtree, folder, True)
    return predict_fn
