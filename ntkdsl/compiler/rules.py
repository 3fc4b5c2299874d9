"""The paired NNGP/NTK update of each layer family, written once.

Each function below is the single definition of a family's rule, written with
plain arithmetic operators on whatever values it is given, so that several
interpreters read the same rule:

* the kernel compiler passes jax arrays (the covariance maps of
  ``covariance.py`` as ``A`` / ``M``);
* the closed form of a fully connected net passes sympy expressions;
* ``explain`` passes the terms of :mod:`.terms`, which print as text or LaTeX.

``bind(kind, value)`` names an intermediate result: the identity for the
arrays and sympy interpreters; ``explain`` prints the equation ``K3 = ...``
and continues with the symbol ``K3``. ``None`` for ``theta`` is a zero NTK (the
input's), which every interpreter treats alike: no term is added for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Value = Any  # a jax array, a sympy expression or an explain term
Bind = Callable[[str, Value], Value]


def _unbound(kind: str, value: Value) -> Value:
    return value


def _indicator(b2: Value) -> float:
    """``[b > 0]``; a traced b2 (differentiable kernels) comes from a default > 0."""
    try:
        return 1.0 if b2 else 0.0
    except TypeError:  # jax refuses bool() of a tracer
        return 1.0


def affine(k: Value, theta: Value | None, *, A: Callable[[Value], Value], w2: Value,
           b2: Value, fan_in: Value, standard: bool, want_ntk: bool = True,
           bind: Bind = _unbound) -> tuple[Value, Value | None]:
    """Dense and Conv (paper eq. 1; appendix F for the standard parameterisation).

    NTK parameterisation: ``K' = W^2 A(K) + b^2``, ``Theta' = K' + W^2 A(Theta)``.
    Standard: ``K'`` the same, ``Theta' = fan_in A(K) + W^2 A(Theta) + [b > 0]`` (what
    neural-tangents computes for ``parameterization='standard'``). ``A`` is the
    identity for Dense and the patch average for Conv.
    """
    a_k = A(k)
    k1 = bind("K", w2 * a_k + b2)
    if not want_ntk:
        return k1, None
    a_theta = 0.0 if theta is None else A(theta)
    if standard:
        theta1 = fan_in * a_k + w2 * a_theta + _indicator(b2)
    else:
        theta1 = k1 + w2 * a_theta
    return k1, bind("Theta", theta1)


def affine_variance(v: Value, *, A: Callable[[Value], Value], w2: Value, b2: Value) -> Value:
    """The per-input variances through an affine layer: the ``K'`` half of :func:`affine`."""
    return affine(v, None, A=A, w2=w2, b2=b2, fan_in=0, standard=False, want_ntk=False)[0]


def pointwise(k11: Value, k12: Value, k22: Value, theta: Value | None, *,
              pair: Callable[[Value, Value, Value], tuple[Value, Value | None]],
              bind: Bind = _unbound) -> tuple[Value, Value | None]:
    """A nonlinearity: ``K' = T(K11, K12, K22)``, ``Theta' = Tdot(K11, K12, K22) Theta``.

    ``pair(k11, k12, k22) -> (T, Tdot)`` is the layer's closed form (or quadrature);
    with ``theta`` zero the NTK stays zero and ``Tdot`` may be ``None``.
    """
    t, tdot = pair(k11, k12, k22)
    k1 = bind("K", t)
    if theta is None:
        return k1, None
    return k1, bind("Theta", tdot * theta)


def linear(k: Value, theta: Value | None, *, M: Callable[[Value], Value],
           bind: Bind = _unbound) -> tuple[Value, Value | None]:
    """Pooling, Flatten, any fixed linear map of the activations: the same map on K and Theta."""
    k1 = bind("K", M(k))
    return k1, None if theta is None else bind("Theta", M(theta))


def branch_sum(ks: list[Value], thetas: list[Value | None], *,
               bind: Bind = _unbound) -> tuple[Value, Value | None]:
    """A sum of independent Gaussian branches (Residual): the kernels add."""
    k = ks[0]
    for v in ks[1:]:
        k = k + v
    present = [t for t in thetas if t is not None]
    theta = None
    if present:
        theta = present[0]
        for v in present[1:]:
            theta = theta + v
    k1 = bind("K", k)
    return k1, None if theta is None else bind("Theta", theta)


def branch_concat(ks: list[Value], thetas: list[Value | None], *, weights: list[Value],
                  bind: Bind = _unbound) -> tuple[Value, Value | None]:
    """Branches concatenated on the channel axis, as the next affine layer reads them.

    ``K = sum_b w_b K_b`` with ``w_b = C_b / C`` (the channel-weighted mean), and
    the same for the NTK.
    """
    return branch_sum([w * k for w, k in zip(weights, ks)],
                      [None if t is None else w * t for w, t in zip(weights, thetas)],
                      bind=bind)


def branch_product(ks: list[Value], thetas: list[Value | None], *,
                   bind: Bind = _unbound) -> tuple[Value, Value | None]:
    """The elementwise product of independent zero-mean Gaussian branches.

    ``K = prod_b K_b``; ``Theta = sum_b Theta_b prod_{c != b} K_c`` (product rule).
    """
    k = ks[0]
    for v in ks[1:]:
        k = k * v
    theta = None
    for b, t in enumerate(thetas):
        if t is None:
            continue
        term = t
        for c, v in enumerate(ks):
            if c != b:
                term = term * v
        theta = term if theta is None else theta + term
    k1 = bind("K", k)
    return k1, None if theta is None else bind("Theta", theta)
