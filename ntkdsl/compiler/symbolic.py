"""The sympy side of the compiler: the symbols of the closed forms, and their checks.

The symbols are defined here once: ``s11, s22 > 0`` (variances), ``s12`` real
(the covariance), ``s > 0`` (a variance on the diagonal) and ``x`` (the
pre-activation, for ``phi``).
"""

from __future__ import annotations

import sympy

s11 = sympy.Symbol("s11", positive=True)
s22 = sympy.Symbol("s22", positive=True)
s12 = sympy.Symbol("s12", real=True)
s = sympy.Symbol("s", positive=True)
x = sympy.Symbol("x", real=True)

#: the arguments of every pair function, in order
PAIR_ARGS = (s11, s12, s22)
