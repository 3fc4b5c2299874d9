"""Softplus: the worked example of docs/design.md, a nonlinearity added as one class.

Its kernels come from the generic quadrature of its printed phi; they are
checked against mpmath 2-D integrals, the symbolic checks of the registry,
and the Monte Carlo kernels of its finite net.
"""

from __future__ import annotations

import jax
import mpmath
import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler import symbolic as S
from ntkdsl.compiler.layers import BUILTINS
from ntkdsl.compiler.layers.pointwise import Softplus
from ntkdsl.empirical import monte_carlo_kernel


def _reference(beta: float, s11: float, s12: float, s22: float) -> tuple[float, float]:
    """T and Tdot by mpmath 2-D integration (30 digits) over the Cholesky factor."""
    phi = lambda x: mpmath.log1p(mpmath.exp(beta * x)) / beta  # noqa: E731
    dphi = lambda x: 1 / (1 + mpmath.exp(-beta * x))  # noqa: E731
    with mpmath.workdps(30):
        return (float(S.expect_pair(phi, phi, s11, s12, s22, dps=30)),
                float(S.expect_pair(dphi, dphi, s11, s12, s22, dps=30)))


def test_is_a_builtin_with_declared_facts():
    assert BUILTINS["Softplus"] is Softplus
    assert Softplus.float_args == ("beta",)
    with pytest.raises(ntkdsl.SpecError, match="beta"):
        ntkdsl.compile("net n { Dense(4); Softplus(beta = -1); Dense(1) }")


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("cov", [(1.0, 0.3, 0.8), (4.0, 3.9, 4.2), (9.5, -2.0, 2.0)])
def test_quadrature_matches_mpmath(beta, cov):
    layer = Softplus(beta=beta)
    with jax.enable_x64(True):
        t, td = layer.pair_fn()(*(np.float64(c) for c in cov))
    ref_t, ref_td = _reference(beta, *cov)
    assert abs(float(t) - ref_t) <= 1e-6 * abs(ref_t)
    assert abs(float(td) - ref_td) <= 1e-6 * abs(ref_td)


def test_symbolic_checks_hold():
    rep = S.check_layer(Softplus(beta=1.5), n_integration=1)
    assert rep.ok, "\n".join(r.line() for r in rep.failures)


def test_finite_net_converges_to_the_kernels():
    model = ntkdsl.compile("net n { Dense(512, W_std = 1.3, b_std = 0.2); Softplus; "
                           "Dense(1, W_std = 1.3) }")
    x = np.random.default_rng(0).normal(size=(5, 3))
    k = model.kernel_fn(x)
    mc = monte_carlo_kernel(model, jax.random.PRNGKey(1), 64, x, nngp_from="readout")
    for name in ("nngp", "ntk"):
        a, b = getattr(k, name), np.asarray(getattr(mc, name))
        assert np.max(np.abs(a - b)) < 0.05 * np.max(np.abs(a)), name


def test_phi_is_the_printed_formula_and_does_not_overflow():
    layer = Softplus(beta=2.0)
    with jax.enable_x64(True):
        got = np.asarray(layer.phi(np.array([-800.0, 0.0, 3.0, 800.0])))
    np.testing.assert_allclose(got, [0.0, np.log(2) / 2, np.log1p(np.exp(6)) / 2, 800.0],
                               rtol=1e-14, atol=1e-300)
