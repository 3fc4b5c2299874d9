"""The sympy symbols every closed form is written in, defined once.

``s11, s22 > 0`` are the two inputs' variances, ``s12`` (real) their
covariance, ``s > 0`` a variance on the diagonal and ``x`` the pre-activation
of ``phi``. Every rule, check and printer uses these very objects, so
expressions built in different modules compare and substitute correctly.
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
