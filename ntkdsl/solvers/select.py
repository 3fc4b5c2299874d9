"""Choosing between the dense eigendecomposition and the iterative solvers.

``solver="auto"`` picks ``"dense"`` when the dense path fits: ``n <= DENSE_MAX_N``
and its working set, about ``DENSE_COPIES`` float64 ``n x n`` arrays (the
kernels, the symmetrised regularised copy, eigenvectors, Cholesky factor and
the products of the predictive equations), is under half the memory available
now. Otherwise it picks ``"cg"``. Inside ``jax.jit`` (traced inputs) it is
always ``"dense"``. ``"dense"``, ``"cg"`` and ``"lanczos"`` are taken as given.
"""

from __future__ import annotations

import jax

from ..diagnostics import InputError
from .operators import KernelOperator, available_memory

SOLVERS = ("auto", "dense", "cg", "lanczos")
DENSE_MAX_N = 10_000
DENSE_COPIES = 6


def dense_bytes(n: int) -> int:
    """The dense path's working set for an ``n``-point train kernel (the estimate above)."""
    return DENSE_COPIES * n * n * 8


def choose_solver(solver: str, n: int, *, traced: bool = False,
                  memory: int | None = None) -> str:
    """Resolve ``solver`` (``"auto"``, ``"dense"``, ``"cg"``, ``"lanczos"``) for ``n`` points.

    Arguments:
        solver: the user's choice.
        n: training-set size.
        traced: the inputs are JAX tracers (only the dense path can be jitted).
        memory: bytes available (default: measured now).

    Returns:
        ``"dense"``, ``"cg"`` or ``"lanczos"``.
    """
    if solver not in SOLVERS:
        raise InputError(f"solver: expected one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver != "auto":
        if traced and solver != "dense":
            raise InputError(f"solver={solver!r} cannot run inside jax.jit; use 'dense'")
        return solver
    if traced:
        return "dense"
    memory = available_memory() if memory is None else memory
    return "dense" if n <= DENSE_MAX_N and dense_bytes(n) <= memory // 2 else "cg"


def resolve_for(solver: str, k_train_train) -> str:
    """:func:`choose_solver` for a given train kernel (array, sliceable array or operator)."""
    if isinstance(k_train_train, KernelOperator):
        return "cg" if solver in ("auto", "dense") else choose_solver(solver, k_train_train.n)
    traced = isinstance(k_train_train, jax.core.Tracer)
    shape = getattr(k_train_train, "shape", None)
    if shape is None or len(shape) < 1:
        return choose_solver(solver, 0, traced=traced) if solver != "auto" else "dense"
    return choose_solver(solver, int(shape[0]), traced=traced)
