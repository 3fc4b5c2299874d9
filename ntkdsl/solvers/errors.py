"""Errors of the iterative solvers (all are :class:`ntkdsl.diagnostics.InputError`)."""

from __future__ import annotations

from ..diagnostics import InputError


class SolverError(InputError):
    """An iterative solve could not produce a trustworthy answer."""


class ConvergenceError(SolverError):
    """The iteration budget ran out before the tolerance; the message gives the residual."""


class NotPositiveDefiniteError(SolverError):
    """The kernel showed negative curvature (it is not positive semi-definite)."""


class NonFiniteError(SolverError):
    """A NaN or inf appeared in a product with the kernel."""
