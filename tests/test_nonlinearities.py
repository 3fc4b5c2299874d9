"""The v2 built-in nonlinearities: arguments, identities through whole nets, references
finer than the registry-wide checks, gradients at the edges, float32, Monte Carlo.

The registry-wide proofs (Price, diagonal, special cases, mpmath integration at 1e-10,
rewrites, no NaN in the pair functions) run in tests/test_symbolic.py over
``symbolic.example_layers()``; this file adds what those do not cover.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler import kernels
from ntkdsl.compiler import symbolic as S
from ntkdsl.compiler.layers import (
    BUILTINS,
    Abs,
    Cos,
    Exp,
    Gaussian,
    Hermite,
    Monomial,
    Polynomial,
    Rbf,
    RectifiedMonomial,
    Sigmoid,
    Sign,
    Tanh,
)
from ntkdsl.empirical import monte_carlo_kernel

#: one spec spelling of every new nonlinearity (with non-default arguments where it has any)
SPELLINGS = {
    "Abs": "Abs", "Sign": "Sign", "Cos": "Cos(a = 1.2, b = 0.8, c = 0.3)",
    "Exp": "Exp(a = 0.6, b = 0.5)", "Gaussian": "Gaussian(a = 1.4, b = -0.6)",
    "Rbf": "Rbf(gamma = 0.7)", "Monomial": "Monomial(3)", "RectifiedMonomial":
    "RectifiedMonomial(2)", "Polynomial": "Polynomial((0.3, -1, 0.5, 0.2))",
    "Hermite": "Hermite(3)", "Sigmoid": "Sigmoid",
}


def _x(n=4, d=5, seed=0):
    return np.array(jax.random.normal(jax.random.key(seed), (n, d)))


# ---- arguments ----------------------------------------------------------------------------

def test_every_new_layer_is_a_builtin():
    for name in SPELLINGS:
        assert name in BUILTINS, name
    assert Monomial.float_args == () and Polynomial.float_args == ()
    assert Exp.float_args == ("a", "b") and Rbf.float_args == ("gamma",)


@pytest.mark.parametrize("spec, arg, message", [
    ("Gaussian(b = 0.5)", "b = 0.5", "'b' must be < 0"),
    ("Gaussian(a = 1, b = 0)", "b = 0", "'b' must be < 0"),
    ("Monomial(-1)", "-1", "non-negative integer"),
    ("Monomial(1.5)", "1.5", "non-negative integer"),
    ("RectifiedMonomial(\"two\")", "\"two\"", "non-negative integer"),
    ("Hermite(-2)", "-2", "non-negative integer"),
    ("Polynomial(\"x\")", "\"x\"", "non-empty tuple of numbers"),
    ("Polynomial((1, \"a\"))", "(1, \"a\")", "non-empty tuple of numbers"),
    ("Rbf(gamma = -1)", "gamma = -1", "'gamma' must be >= 0"),
    ("Exp(a = \"s\")", "a = \"s\"", "must be a number"),
])
def test_bad_arguments_are_located(spec, arg, message):
    text = f"net n {{ Dense(4); {spec}; Dense(1) }}"
    with pytest.raises(ntkdsl.SpecError, match=message) as e:
        ntkdsl.compile(text)
    col = text.index(arg) + 1
    assert e.value.line == 1 and e.value.column == col, (e.value.column, col, str(e.value))


def test_argument_forms():
    assert Monomial(degree=2.0) == Monomial(degree=2)  # an integer-valued float is an integer
    assert isinstance(Monomial(degree=2.0).degree, int)
    assert Polynomial(coef=2).coef == (2,)
    m = ntkdsl.compile("net n { Dense(4); Monomial(4 / 2); Dense(4); Polynomial((1, 2.5)); "
                       "Dense(1) }")
    kinds = [la for la in m.net.body.children() if la.kernel_map]
    assert kinds == [Monomial(degree=2), Polynomial(coef=(1, 2.5))]


# ---- closed forms against finer references and each other through whole nets -------------

def _refined(layer, a, b, c, which):
    """2-D mpmath integral split at many cut points (features finer than expect_pair's)."""
    phi, dphi, kinks = S._mp_fns(layer)
    f = phi if which == "T" else dphi
    cuts = (*kinks, -4.0, -2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0, 4.0)
    return S.expect_pair(f, f, a, b, c, cuts, dps=20)


COVS = [(2.0, 1.1, 1.5), pytest.param((3.8, 3.2, 3.8), marks=pytest.mark.slow),
        pytest.param((1.0, -0.3, 0.5), marks=pytest.mark.slow)]


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("layer", [Gaussian(), Rbf()], ids=lambda la: la.describe())
def test_defaults_against_refined_integration(layer, cov):
    """Gaussian(b=-1) and Rbf(gamma=1), the defaults, at 1e-10 of a finer mpmath integral
    (at covariances where T is not tiny: the reference is ~1e-13 accurate in absolute terms
    on the unit scale of phi, so an Rbf entry of ~1e-6 cannot be checked relatively)."""
    a, b, c = cov
    for which in ("T", "Tdot"):
        ref = _refined(layer, a, b, c, which)
        got = S._closed(layer, which, a, b, c)
        assert abs(got - ref) <= 1e-10 * abs(ref), (which, a, b, c, got, ref)


def test_rbf_nngp_is_the_rbf_kernel_of_the_input():
    gamma = 0.7
    m = ntkdsl.compile(f"net n {{ Dense(16); Rbf(gamma = {gamma}); Dense(1) }}")
    x1, x2 = _x(), _x(3, seed=1)
    got = m.kernel_fn(x1, x2, "nngp")
    d2 = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1) / x1.shape[1]
    np.testing.assert_allclose(got, np.exp(-gamma * d2), rtol=1e-13, atol=0)


def test_hermite_nngp_is_a_power_of_the_correlation():
    """On unit-variance pre-activations: T = rho^n (the orthogonality of He_n / sqrt(n!))."""
    x = _x(4, 6)
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(6)
    rho = x @ x.T / 6
    for n in (0, 2, 3, 4):
        m = ntkdsl.compile(f"net n {{ Dense(16); Hermite({n}); Dense(1) }}")
        k = m.kernel_fn(x, None, ("nngp", "ntk"))
        np.testing.assert_allclose(k.nngp, rho**n, rtol=1e-12, atol=1e-14)
        # Theta = Tdot * Theta_in + T, Theta_in = rho
        np.testing.assert_allclose(k.ntk, n * rho ** max(n - 1, 0) * rho * (n > 0) + rho**n,
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("left, right", [
    ("RectifiedMonomial(1)", "Relu"), ("Abs", "ABRelu(-1, 1)"),
    ("Cos(1.2, 0.7, 0.4)", "Sin(1.2, 0.7, 0.4 + 1.5707963267948966)"),
    ("Monomial(1)", "Identity"), ("Hermite(1)", "Identity"),
    ("Monomial(3)", "Polynomial((0, 0, 0, 1))"),
    ("Hermite(3)", "Polynomial((0, -3 / sqrt(6), 0, 1 / sqrt(6)))"),
])
def test_identities_through_a_net(left, right):
    def k(act):
        m = ntkdsl.compile(f"net n {{ Dense(8, W_std = 1.3, b_std = 0.2); {act}; "
                           f"Dense(1, b_std = 0.1) }}")
        return m.kernel_fn(_x(), _x(3, seed=2), ("nngp", "ntk"))
    a, b = k(left), k(right)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-12)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)


def test_sign_has_no_ntk_contribution():
    m = ntkdsl.compile("net n { Dense(8, b_std = 0.3); Sign; Dense(1) }")
    x = _x()
    k = m.kernel_fn(x, None, ("nngp", "ntk"))
    np.testing.assert_allclose(k.ntk, k.nngp, rtol=1e-14)  # only the readout's own term
    # the NNGP is (2/pi) asin of the pre-activation correlation
    q = x @ x.T / x.shape[1] + 0.09
    rho = q / np.sqrt(np.outer(np.diag(q), np.diag(q)))
    np.testing.assert_allclose(k.nngp, 2 / np.pi * np.arcsin(np.clip(rho, -1, 1)),
                               rtol=1e-12, atol=1e-14)


def test_sigmoid_is_a_shifted_scaled_tanh():
    """sigmoid(x) = (1 + tanh(x/2)) / 2, so T_sigmoid(s) = 1/4 + T_tanh(s/4) / 4 (both by
    quadrature, tanh odd so E[tanh] = 0) and Tdot_sigmoid(s) = Tdot_tanh(s/4) / 16."""
    a, b, c = np.array([1.0, 9.0, 4.0]), np.array([0.3, 8.9, -1.0]), np.array([0.8, 9.5, 2.0])
    t, td = Sigmoid().pair_fn()(a, b, c)
    tt, ttd = Tanh().pair_fn()(a / 4, b / 4, c / 4)
    np.testing.assert_allclose(t, 0.25 + tt / 4, rtol=1e-9)
    np.testing.assert_allclose(td, ttd / 16, rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("layer", [
    RectifiedMonomial(degree=3), RectifiedMonomial(degree=4), Monomial(degree=3),
    Monomial(degree=4), Hermite(degree=2), Hermite(degree=4), Hermite(degree=5),
    Polynomial(coef=(1.0, 0.0, -0.5, 0.0, 0.1)), Gaussian(), Rbf(), Abs(), Sign(), Exp(b=1.5),
], ids=lambda la: la.describe())
def test_higher_orders_pass_every_check(layer):
    """Orders and defaults beyond ``example_layers()``: the five checks (3 covariances)."""
    rep = S.check_layer(layer, which=("price", "diagonal", "special", "rewrite"))
    assert rep.ok, "\n".join(r.line() for r in rep.failures)
    if layer not in (Gaussian(), Rbf()):  # features finer than expect_pair's segments
        rep = S.check_layer(layer, which=("integration",), n_integration=3)
        assert rep.ok, "\n".join(r.line() for r in rep.failures)


def test_rectified_monomial_textbook_kernels():
    """J_0, J_1, J_2 of Cho & Saul (2009) as printed in the paper."""
    import sympy
    th = sympy.Symbol("theta")
    for n, J in ((0, sympy.pi - th), (1, sympy.sin(th) + (sympy.pi - th) * sympy.cos(th)),
                 (2, 3 * sympy.sin(th) * sympy.cos(th)
                  + (sympy.pi - th) * (1 + 2 * sympy.cos(th) ** 2))):
        for rho in (-0.7, 0.2, 0.95):
            a, c = 1.7, 0.6
            b = rho * np.sqrt(a * c)
            want = (a * c) ** (n / 2) * float(J.subs(th, np.arccos(rho))) / (2 * np.pi)
            got = float(RectifiedMonomial(degree=n).t_fn()(a, b, c))
            assert abs(got - want) <= 1e-13 * abs(want), (n, rho, got, want)


# ---- numerics: gradients at correlation 1 and zero input, float32 --------------------------

@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_gradient_of_a_kernel_entry_is_finite_at_the_edges(name):
    """d K(x1, x2)[i, j] / d x1 through the compiled tile function: finite where x2 = x1
    (correlation 1) and at an all-zero input (zero variance: the net has no bias)."""
    # two layers of it (one for a quadrature layer: its compile is the slow part)
    second = "" if name == "Sigmoid" else f"Dense(8); {SPELLINGS[name]}; "
    m = ntkdsl.compile(f"net n {{ Dense(8); {SPELLINGS[name]}; {second}Dense(1) }}")
    x1 = _x(3, 4)
    x1[2] = 0.0
    plan = kernels.get_plan(m, (4,))
    fn = kernels.build_tile_fn(plan, 3, 3, ("nngp", "ntk"))
    for get in (0, 1):
        def entry_sum(a, get=get):
            out = fn(a, a)[get]
            return out[0, 0] + out[1, 2] + out[2, 2] + out[2, 0]
        g = jax.grad(entry_sum)(jnp.asarray(x1))
        assert bool(jnp.all(jnp.isfinite(g))), (name, get, g)
        v = fn(jnp.asarray(x1), jnp.asarray(x1))[get]
        assert bool(jnp.all(jnp.isfinite(v))), (name, get, v)


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_float32_kernels(name):
    m = ntkdsl.compile(f"net n {{ Dense(8, b_std = 0.1); {SPELLINGS[name]}; Dense(1) }}")
    x = _x()
    k64 = m.kernel_fn(x, None, ("nngp", "ntk"))
    k32 = m.kernel_fn(x.astype(np.float32), None, ("nngp", "ntk"), dtype="float32")
    for a, b in ((k32.nngp, k64.nngp), (k32.ntk, k64.ntk)):
        assert a.dtype == np.float32
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), name


def test_finite_phi_is_the_formula_and_safe():
    with jax.enable_x64(True):
        x = jnp.array([-800.0, -2.0, 0.0, 0.5, 800.0])
        with np.errstate(over="ignore"):  # the reference's exp(800) is inf: 1/(1+inf) = 0
            want = 1 / (1 + np.exp(-np.asarray(x)))
        np.testing.assert_allclose(Sigmoid().phi(x), want, rtol=1e-14)
        g = jax.vmap(jax.grad(lambda z: Sigmoid().phi(z)))(x)
        assert bool(jnp.all(jnp.isfinite(g)))
        np.testing.assert_allclose(Hermite(degree=3).phi(x[1:4]),
                                   (np.asarray(x[1:4]) ** 3 - 3 * np.asarray(x[1:4])) / np.sqrt(6),
                                   rtol=1e-14)
        np.testing.assert_allclose(RectifiedMonomial(degree=0).phi(x), [0, 0, 1, 1, 1])
        np.testing.assert_allclose(Sign().phi(x), [-1, -1, 0, 1, 1])
        np.testing.assert_allclose(Abs().phi(x), np.abs(np.asarray(x)))
        np.testing.assert_allclose(Cos(a=2.0, b=0.5, c=0.1).phi(x[1:4]),
                                   2 * np.cos(0.5 * np.asarray(x[1:4]) + 0.1), rtol=1e-14)


# ---- Monte Carlo: the finite nets converge to the kernels ---------------------------------

MC_NETS = {
    "abs_cos_exp": "Abs; Dense(512, W_std = 1.2); Cos(1.2, 0.8, 0.3); Dense(512); Exp(0.6, 0.5)",
    "gaussian_rbf_monomial": "Gaussian(1.4, -0.6); Dense(512, W_std = 1.5); Rbf(0.7); "
                             "Dense(512); Monomial(2)",
    "rectified_polynomial": "RectifiedMonomial(2); Dense(512, W_std = 1.2); "
                            "Polynomial((0.3, -1, 0.5)); Dense(512, W_std = 0.8); Sigmoid",
    "hermite_sign": "Hermite(3); Dense(512, W_std = 0.9, b_std = 0.2); Sign",
}


@pytest.mark.parametrize("case", sorted(MC_NETS))
def test_monte_carlo_matches_analytic(case):
    m = ntkdsl.compile(f"net n {{ Dense(512, b_std = 0.1); {MC_NETS[case]}; Dense(1) }}")
    x = _x(3, 5) / 1.2
    exact = m.kernel_fn(x, None, ("nngp", "ntk"))
    mc = monte_carlo_kernel(m, jax.random.key(1), 32, x, nngp_from="readout")
    for name in ("nngp", "ntk"):
        a, b = np.asarray(getattr(mc, name)), getattr(exact, name)
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert rel < 0.05, (case, name, rel)


@pytest.mark.slow
def test_reference_integral_is_mpmath():
    """The refined reference agrees with mpmath's adaptive rule (a check of the check)."""
    layer = Gaussian()
    with mpmath.workdps(20):
        phi = lambda t: mpmath.exp(-t * t)  # noqa: E731
        a, b, c = 2.0, 1.1, 1.5
        det = a * c - b * b
        dens = lambda u, v: mpmath.exp(-(c * u * u - 2 * b * u * v + a * v * v) / (2 * det)) / (  # noqa: E731
            2 * mpmath.pi * mpmath.sqrt(det))
        adaptive = mpmath.quad(lambda u, v: phi(u) * phi(v) * dens(u, v), [-12, 0, 12],
                               [-12, 0, 12])
    assert abs(_refined(layer, a, b, c, "T") - adaptive) < 1e-12
