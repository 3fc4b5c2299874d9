"""Iterative solvers: predictions at training-set sizes whose kernel does not fit in memory.

See ``docs/solvers.md``. The pieces: kernel operators (:mod:`.operators`),
preconditioners (:mod:`.precond`), block CG (:mod:`.cg`), Lanczos matrix
functions (:mod:`.lanczos`), the predictive equations on top of them
(:mod:`.gp`) and the choice between dense and iterative (:mod:`.select`).
"""

from .cg import CGResult, cg_solve, refine
from .errors import ConvergenceError, NonFiniteError, NotPositiveDefiniteError, SolverError
from .gp import (
    IterativeGPDynamics,
    IterativeMSEDynamics,
    SolvedGaussian,
    SolverOptions,
    iterative_gp_inference,
    iterative_gradient_descent_mse,
    iterative_gradient_descent_mse_gp,
    mode_factors,
)
from .lanczos import LanczosResult, lanczos_functions
from .operators import (
    ArrayOperator,
    DenseOperator,
    KernelOperator,
    MatrixFreeOperator,
    as_operator,
    regularized,
)
from .precond import LowRankPreconditioner, make_preconditioner, nystrom, pivoted_cholesky

__all__ = [
    "ArrayOperator", "CGResult", "ConvergenceError", "DenseOperator", "IterativeGPDynamics",
    "IterativeMSEDynamics", "KernelOperator", "LanczosResult", "LowRankPreconditioner",
    "MatrixFreeOperator", "NonFiniteError", "NotPositiveDefiniteError", "SolvedGaussian",
    "SolverError", "SolverOptions", "as_operator", "cg_solve", "iterative_gp_inference",
    "iterative_gradient_descent_mse", "iterative_gradient_descent_mse_gp",
    "lanczos_functions", "make_preconditioner", "mode_factors", "nystrom",
    "pivoted_cholesky", "refine", "regularized",
]
