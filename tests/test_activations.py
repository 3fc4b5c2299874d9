"""User-defined activations: ``activation NAME(x, P = DEFAULT, ...) = FORMULA``.

Exact closed forms where the formula is a polynomial or equals a built-in
(compared with the built-in's own expressions and functions), the quadrature
path against mpmath and the finite net's Monte Carlo kernels, located errors for
malformed formulas, finite gradients, and the whole command-line pipeline.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import sympy

import ntkdsl
from ntkdsl import SpecError
from ntkdsl.cli import main
from ntkdsl.compiler import kernels
from ntkdsl.compiler import symbolic as S
from ntkdsl.compiler.activations import FormulaWarning
from ntkdsl.compiler.frontend import parse
from ntkdsl.compiler.layers import BUILTINS, ABRelu, Erf, Relu, Sin
from ntkdsl.compiler.layers.formula import FormulaActivation, derivative, gaussian_moment
from ntkdsl.compiler.symbols import s11, s12, s22, x
from ntkdsl.empirical import monte_carlo_kernel


def _layers(src: str) -> list:
    net = parse(src, filename="t.ntk")
    return [la for la in net.body.children() if isinstance(la, FormulaActivation)]


def _one(defn: str, use: str) -> FormulaActivation:
    (layer,) = _layers(f"{defn}\nnet n {{ Dense(4); {use}; Dense(1) }}")
    return layer


def _cov(rng, n=6):
    a, c = rng.uniform(0.2, 4.0, n), rng.uniform(0.2, 4.0, n)
    b = rng.uniform(-0.95, 0.95, n) * np.sqrt(a * c)
    return a, b, c


# ---- the language ---------------------------------------------------------------------------
def test_activation_is_still_a_name_outside_the_top_level():
    net = parse("let activation = 3\nblock b(activation) { Dense(activation) }\n"
                "net n(activation = 2) { Dense(activation); b(activation); Relu }")
    assert [la.out for la in net.body.children()[:2]] == [2, 2]


def test_uses_by_keyword_position_default_and_as_a_value():
    src = ("let c = 2\nactivation swish(x, beta = 1) = x * sigmoid(beta * x)\n"
           "net n(act = swish(3)) { Dense(4); swish; Dense(4); swish(c); Dense(4); "
           "swish(beta = 0.5); Dense(4); act; Dense(1) }")
    got = [la.describe() for la in _layers(src)]
    assert got == ["swish(beta=1.0)", "swish(beta=2.0)", "swish(beta=0.5)", "swish(beta=3.0)"]


def test_imported_activation(tmp_path):
    (tmp_path / "lib.ntk").write_text("activation sq(x, a = 1) = a * x * x\n")
    (tmp_path / "m.ntk").write_text('import "lib.ntk"\nnet n { Dense(4); sq(a = 2); Dense(1) }\n')
    net = ntkdsl.compiler.frontend.load(tmp_path / "m.ntk")
    assert net.body.children()[1].describe() == "sq(a=2.0)"


def test_describe_and_formula_text():
    la = _one("activation elu(x, alpha = 1) = max(x, 0) + alpha * (exp(min(x, 0)) - 1)",
              "elu(alpha = 0.5)")
    assert la.describe() == "elu(alpha=0.5)"
    assert la.formula_text() == "elu(x, alpha) = max(x, 0) + alpha * (exp(min(x, 0)) - 1)"
    assert la.path().kind == "quadrature"
    assert hash(la) == hash(_one("activation elu(x, alpha = 1) = max(x, 0) + alpha * "
                                 "(exp(min(x, 0)) - 1)", "elu(0.5)"))


def test_derivative_is_the_derivative_of_the_formula():
    """The chain rule on the tree equals sympy's own derivative (at random points)."""
    cases = ["x * sigmoid(2 * x)", "softplus(x) - tanh(x) * cos(x)", "sqrt(1 + x**2) / (2 + x**2)",
             "log(1 + x**2) * erf(x)", "exp(-x**2 / 2) * sin(3 * x)", "2 ** (-(x**2))"]
    rng = np.random.default_rng(0)
    for text in cases:
        la = _one(f"activation f(x) = {text}", "f")
        want = sympy.diff(la.phi_formula(), x)
        got = derivative(la.formula, {})
        for v in rng.uniform(-3, 3, 5):
            assert abs(float(want.subs(x, v)) - float(got.subs(x, v))) < 1e-12, text


# ---- exact kernels ----------------------------------------------------------------------
def test_gaussian_moments_against_mpmath():
    a, b, c = 1.3, 0.4, 0.7
    for i, j in ((2, 2), (3, 1), (4, 2), (3, 3), (1, 2)):
        ref = S.expect_pair(lambda u, i=i: u**i, lambda v, j=j: v**j, a, b, c, ())
        got = float(gaussian_moment(i, j).subs({s11: a, s12: b, s22: c}))
        assert abs(got - float(ref)) <= 1e-12 * max(1.0, abs(float(ref))), (i, j)


def test_polynomial_formula_equals_polynomial():
    la = _one("activation p(x, a = 0.5) = a * x**3 - x + 0.25 + 0.125 * x**4", "p")
    assert la.path().kind == "polynomial" and la.closed_form
    rng = np.random.default_rng(1)
    a, b, c = _cov(rng)
    with jax.enable_x64(True):
        got = la.pair_fn()(a, b, c)
        if "Polynomial" in BUILTINS:
            ref = BUILTINS["Polynomial"](coef=(0.25, -1.0, 0.0, 0.5, 0.125)).pair_fn()(a, b, c)
        else:  # pragma: no cover - without the built-in: mpmath integration
            phi = la.phi_expr
            f = sympy.lambdify(x, phi(x), "mpmath")
            df = sympy.lambdify(x, la.dphi_expr(x), "mpmath")
            ref = (np.array([float(S.expect_pair(f, f, *p, ())) for p in zip(a, b, c)]),
                   np.array([float(S.expect_pair(df, df, *p, ())) for p in zip(a, b, c)]))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-12)
    # and against mpmath integration at one covariance, whatever the built-ins
    f = sympy.lambdify(x, la.phi_expr(x), "mpmath")
    ref = float(S.expect_pair(f, f, 1.1, 0.3, 0.9, ()))
    t = float(la.T_expr().subs({s11: 1.1, s12: 0.3, s22: 0.9}))
    assert abs(t - ref) <= 1e-12 * abs(ref)


def test_max_x_0_is_relu_exactly():
    la = _one("activation r(x) = max(x, 0)", "r")
    relu = Relu()
    assert la.path().delegate == relu
    assert la.T_expr() == relu.T_expr() and la.Tdot_expr() == relu.Tdot_expr()
    assert la.diag_expr() == relu.diag_expr() and la.phi_expr(x) == relu.phi_expr(x)
    assert la.pair_fn() is relu.pair_fn() and la.homogeneous
    spec = "net n {{ Dense(32, W_std = 1.4, b_std = 0.1); {0}; Dense(32); {0}; Dense(2) }}"
    m1 = ntkdsl.compile("activation r(x) = max(x, 0)\n" + spec.format("r"))
    m2 = ntkdsl.compile(spec.format("Relu"))
    xs = np.random.default_rng(2).normal(size=(5, 3))
    k1, k2 = m1.kernel_fn(xs), m2.kernel_fn(xs)
    assert np.array_equal(k1.nngp, k2.nngp) and np.array_equal(k1.ntk, k2.ntk)
    with jax.enable_x64(True):
        p = m1.init(jax.random.PRNGKey(0), xs.shape)
        assert np.array_equal(np.asarray(m1.apply(p, xs)), np.asarray(m2.apply(p, xs)))


@pytest.mark.parametrize("defn, use, want", [
    ("activation f(x, a = 0.5, b = 2) = a * max(x, 0) + b * min(x, 0)", "f",
     ABRelu(a=2.0, b=0.5)),
    ("activation f(x) = 3 * max(x, 0) - 0.5 * max(-x, 0)", "f", ABRelu(a=0.5, b=3.0)),
    ("activation f(x, a = 1, b = 1, c = 0) = a * erf(b * x) + c", "f(2, 0.5, 1)",
     Erf(a=2.0, b=0.5, c=1.0)),
    ("activation f(x) = 1.5 * sin(x + 0.25)", "f", Sin(a=1.5, b=1.0, c=0.25)),
])
def test_formula_equal_to_a_builtin_delegates(defn, use, want):
    la = _one(defn, use)
    assert la.path().kind == "builtin" and la.path().delegate == want
    assert la.T_expr() == want.T_expr() and la.pair_fn() is want.pair_fn()
    rep = S.check_layer(la, n_integration=1)
    assert rep.ok, "\n".join(r.line() for r in rep.failures)


# ---- quadrature ---------------------------------------------------------------------------
def _swish_ref(s11_, s12_, s22_):
    phi = lambda u: u / (1 + mpmath.exp(-u))  # noqa: E731
    dphi = lambda u: 1 / (1 + mpmath.exp(-u)) + u * mpmath.exp(-u) / (1 + mpmath.exp(-u)) ** 2  # noqa: E731
    with mpmath.workdps(30):
        return (float(S.expect_pair(phi, phi, s11_, s12_, s22_, (), dps=30)),
                float(S.expect_pair(dphi, dphi, s11_, s12_, s22_, (), dps=30)))


@pytest.mark.parametrize("cov", [(1.0, 0.3, 0.8), (4.0, 3.9, 4.2), (9.5, -2.0, 2.0)])
def test_swish_quadrature_matches_mpmath(cov):
    la = _one("activation swish(x) = x * sigmoid(x)", "swish")
    assert la.path().kind == "quadrature" and not la.closed_form
    with jax.enable_x64(True):
        t, td = la.pair_fn()(*(np.float64(c) for c in cov))
    ref_t, ref_td = _swish_ref(*cov)
    assert abs(float(t) - ref_t) <= 1e-6 * abs(ref_t)
    assert abs(float(td) - ref_td) <= 1e-6 * abs(ref_td)


def test_swish_finite_net_converges_to_the_kernels():
    model = ntkdsl.compile("activation swish(x) = x * sigmoid(x)\n"
                           "net n { Dense(512, W_std = 1.3, b_std = 0.2); swish; "
                           "Dense(1, W_std = 1.3) }")
    xs = np.random.default_rng(0).normal(size=(5, 3))
    k = model.kernel_fn(xs)
    mc = monte_carlo_kernel(model, jax.random.PRNGKey(1), 64, xs, nngp_from="readout")
    for name in ("nngp", "ntk"):
        a, b = getattr(k, name), np.asarray(getattr(mc, name))
        assert np.max(np.abs(a - b)) < 0.05 * np.max(np.abs(a)), name


def test_sigmoid_and_softplus_do_not_overflow():
    la = _one("activation f(x) = softplus(x) + sigmoid(x)", "f")
    with jax.enable_x64(True):
        v, d = la.vals_fn()(jnp.array([-800.0, 0.0, 800.0]))
    np.testing.assert_allclose(np.asarray(v), [0.0, np.log(2) + 0.5, 801.0], rtol=1e-14)
    np.testing.assert_allclose(np.asarray(d), [0.0, 0.75, 1.0], rtol=1e-14, atol=1e-300)


# ---- gradients ----------------------------------------------------------------------------
# the quadrature path's gradient compiles slowly (tens of seconds on 2 cores): -m slow
FORMULAS = ["max(x, 0)", pytest.param("x * sigmoid(x)", marks=pytest.mark.slow), "x**2 - 1",
            "0.5 * erf(2 * x) + 0.1", "abs(x)"]


def _grad_of_entries(formula: str, x1: np.ndarray, entries) -> list:
    m = ntkdsl.compile(f"activation f(x) = {formula}\n"
                       "net n { Dense(8); f; Dense(8); f; Dense(1) }")
    fn = kernels.build_tile_fn(kernels.get_plan(m, (4,)), 3, 3, ("nngp", "ntk"))
    out = []
    for get in (0, 1):
        def entry_sum(a, get=get):
            k = fn(a, a)[get]
            return sum(k[i, j] for i, j in entries)
        out.append(jax.grad(entry_sum)(jnp.asarray(x1)))
    return out


@pytest.mark.parametrize("formula", FORMULAS)
def test_gradient_of_a_kernel_entry_is_finite_at_correlation_1(formula):
    x1 = np.random.default_rng(3).normal(size=(3, 4))
    for g in _grad_of_entries(formula, x1, [(0, 0), (1, 1), (1, 2)]):
        assert bool(jnp.all(jnp.isfinite(g))), (formula, g)


@pytest.mark.parametrize("formula", FORMULAS)
def test_gradient_of_a_kernel_entry_is_finite_at_zero_input(formula):
    x1 = np.random.default_rng(3).normal(size=(3, 4))
    x1[2] = 0.0
    for g in _grad_of_entries(formula, x1, [(2, 2), (2, 0)]):
        assert bool(jnp.all(jnp.isfinite(g))), (formula, g)


# ---- errors ------------------------------------------------------------------------------
A = "activation f(x, a = 1) = "

#: (source, line, column, message)
BAD = [
    (A + "x * y\nnet n { f }", 1, 30,
     "unknown name 'y' in a formula (it may use 'x', the activation's parameters, pi and "
     "constants)"),
    (A + "gelu(x)\nnet n { f }", 1, 26, "unknown function 'gelu' in a formula"),
    (A + "Relu(x)\nnet n { f }", 1, 26,
     "'Relu' is a layer, not a function of formulas (they are: sqrt, exp, log, abs, sign, "
     "sin, cos, tanh, erf, sigmoid, softplus, min, max)"),
    (A + 'x + "one"\nnet n { f }', 1, 30, 'a formula is a number, not a string: "one"'),
    (A + "x * (1, 2)\nnet n { f }", 1, 30, "a formula is a number, not a tuple"),
    ('activation f(x, a = "s") = a * x\nnet n { f }', 1, 21,
     "the default of 'a' in activation 'f' must be a number, got a string (\"s\")"),
    ('let s = "a"\n' + A + "x * s\nnet n { f }", 2, 30,
     "'s' is a string (\"a\"); a formula needs a number"),
    (A + "exp\nnet n { f }", 1, 26, "'exp' is a function; call it as exp(...)"),
    (A + "exp(x, 2)\nnet n { f }", 1, 26, "exp() takes exactly 1 argument, got 2"),
    (A + "max(x)\nnet n { f }", 1, 26, "max() in a formula takes two or more arguments, got 1"),
    (A + "sin(x = 1)\nnet n { f }", 1, 30, "sin() takes no keyword arguments"),
    ("activation f(x, a) = a * x\nnet n { Dense(2); f }", 2, 19,
     "activation 'f' is missing its argument 'a' (it has no default)"),
    (A + "a * x\nnet n { Dense(2); f(a = \"big\") }", 2, 21,
     "'a' of activation 'f' must be a number, got a string (\"big\")"),
    (A + "a * x\nnet n { Dense(2); f(b = 2) }", 2, 21, "activation 'f' has no argument 'b'"),
    ("activation Relu(x) = x\nnet n { Relu }", 1, 12,
     "'Relu' is a built-in layer; an activation cannot use that name"),
    ("activation f(x = 1) = x\nnet n { f }", 1, 18,
     "the first parameter of activation 'f' is its variable and takes no default "
     "(write f(x, ...))"),
    ("activation f() = 1\nnet n { f }", 1, 14, "unexpected ')'; expected a name"),
    ("activation f(x, x) = x\nnet n { f }", 1, 17, "parameter 'x' appears twice in activation 'f'"),
    ("activation f(x, exp = 1) = x\nnet n { f }", 1, 17,
     "'exp' is a function of formulas; a parameter of activation 'f' cannot use that name"),
    (A + "sqrt(x)\nnet n { f }", 1, 26,
     "the formula is not a real number at x = -8: sqrt of a negative number (-8)"),
    (A + "a / x\nnet n { f }", 1, 26,
     "the formula is not a real number at x = 0: division by zero"),
    (A + "log(x + a)\nnet n { Dense(2); f(a = 10) }", 1, 26,
     "the formula is not a real number at x = -8: log of a non-positive number (-7)"),
    (A + "exp(x**2)\nnet n { f }", 1, 26,
     "activation 'f' grows too fast for a Gaussian expectation: this exponential grows like "
     "exp(c x^2) or faster"),
    (A + "x * exp(0.5 * x**2 - x)\nnet n { f }", 1, 30,
     "activation 'f' grows too fast for a Gaussian expectation: this exponential grows like "
     "exp(c x^2) or faster"),
    (A + "2 ** (x**3)\nnet n { f }", 1, 26,
     "activation 'f' grows too fast for a Gaussian expectation: this exponential grows like "
     "exp(c x^2) or faster"),
    ("activation f(x) = x\nactivation f(x) = x * x\nnet n { f }", 2, 12,
     "'f' is already defined (line 1)"),
]


@pytest.mark.parametrize("src, line, col, message", BAD)
def test_malformed_formula(src, line, col, message):
    with pytest.raises(SpecError) as info:
        parse(src, filename="t.ntk")
    err = info.value
    assert (err.line, err.column, err.message) == (line, col, message), str(err)


def test_enough_malformed_cases():
    assert len(BAD) >= 15


def test_error_notes():
    with pytest.raises(SpecError) as info:
        parse(A + "exp(x**2)\nnet n { f }", filename="t.ntk")
    assert "infinite" in str(info.value) and "with a = 1.0" in str(info.value)
    with pytest.raises(SpecError) as info:
        parse("activation f(x, beta = 1) = x * sigmoid(bta * x)\nnet n { f }",
              filename="t.ntk")
    assert "did you mean 'beta'?" in str(info.value)


def test_formula_without_x_is_a_located_warning():
    with pytest.warns(FormulaWarning, match=r"^t\.ntk:1:19: warning: the formula of activation "
                      r"'c' does not use its variable 'x'"):
        net = parse("activation c(x) = 2 * pi\nnet n { Dense(2); c; Dense(1) }",
                    filename="t.ntk")
    assert net.body.children()[1].path().kind == "polynomial"


# ---- the whole pipeline ---------------------------------------------------------------
SPEC = """
activation swish(x, beta = 1) = x * sigmoid(beta * x)
activation r(x) = max(x, 0)
activation quad(x) = x**2 / 2 - 0.5
net n(width = 16) {
    Input((3,))
    Dense(width, b_std = 0.1); swish(beta = 2)
    Dense(width); r
    Dense(width); quad
    Dense(2)
}
"""


def test_cli_pipeline(tmp_path, capsys):
    spec = tmp_path / "a.ntk"
    spec.write_text(SPEC + "activation k(x) = 3\n")
    rng = np.random.default_rng(0)
    for name, a in (("x", rng.normal(size=(6, 3))), ("y", rng.normal(size=(6, 2))),
                    ("xt", rng.normal(size=(3, 3)))):
        np.save(tmp_path / f"{name}.npy", a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormulaWarning)  # k ignores x: check prints it
        assert main(["check", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert "activation swish(x, beta=1.0) = x * sigmoid(beta * x)" in out
    assert "    swish(beta=2)" in out and "activation k(x) = 3" in out
    assert f"{spec}:12:19: warning: the formula of activation 'k' does not use" in err
    spec.write_text(SPEC)
    assert main(["explain", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "activation r(x) = max(x, 0)" in out and "closed form of the built-in Relu" in out
    assert "kernel: no closed form: quadrature" in out and "phi'(x) = x" in out
    assert "closed form: a polynomial of degree 2" in out
    assert main(["kernel", str(spec), "--x1", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "k.npz")]) == 0
    with np.load(tmp_path / "k.npz") as z:
        k = ntkdsl.compile(SPEC).kernel_fn(np.load(tmp_path / "x.npy"))
        np.testing.assert_allclose(z["ntk"], k.ntk, rtol=1e-12)


@pytest.mark.slow
def test_cli_explain_check_and_predict(tmp_path, capsys):
    spec = tmp_path / "a.ntk"
    spec.write_text(SPEC)
    rng = np.random.default_rng(0)
    for name, a in (("x", rng.normal(size=(6, 3))), ("y", rng.normal(size=(6, 2))),
                    ("xt", rng.normal(size=(3, 3)))):
        np.save(tmp_path / f"{name}.npy", a)
    assert main(["explain", "--check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "swish(beta=2.0): [integration]" in out
    assert "r: [special] T == Relu.T" in out
    assert main(["predict", str(spec), "--x-train", str(tmp_path / "x.npy"), "--y-train",
                 str(tmp_path / "y.npy"), "--x-test", str(tmp_path / "xt.npy"), "-o",
                 str(tmp_path / "p.npz"), "--time", "inf"]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "p.npz") as z:
        assert np.all(np.isfinite(z["mean"])) and np.all(np.isfinite(z["cov"]))


def test_finite_net_applies_the_formula():
    model = ntkdsl.compile("activation f(x, a = 0.5) = a * x**2 + sin(x)\n"
                           "net n { Dense(3); f(a = 0.25) }")
    xs = np.random.default_rng(4).normal(size=(2, 3))
    with jax.enable_x64(True):
        p = model.init(jax.random.PRNGKey(0), xs.shape)
        pre = ntkdsl.compile("net n { Dense(3) }").apply(p[:1], xs)
        out = np.asarray(model.apply(p, xs))
    pre = np.asarray(pre)
    np.testing.assert_allclose(out, 0.25 * pre**2 + np.sin(pre), rtol=1e-14)


# ---- the language guide shows what the tool does ------------------------------------------
GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text()


def test_documented_example_compiles_with_the_documented_paths():
    section = GUIDE[GUIDE.index("## User-defined activations"):]
    example = section.split("```")[1]
    net = parse(example, filename="doc.ntk")
    paths = {la.name: la.path().kind for la in net.body.children()
             if isinstance(la, FormulaActivation)}
    assert paths == {"swish": "quadrature", "elu": "quadrature", "leaky": "builtin",
                     "quad": "polynomial"}


@pytest.mark.parametrize("src", [
    "activation half(x) = sqrt(x)\nnet n { Dense(8); half; Dense(1) }\n",
    "activation bump(x, w = 1) = exp(w * x**2)\nnet n { Dense(8); bump; Dense(1) }\n",
])
def test_documented_errors_are_printed_as_shown(src):
    with pytest.raises(SpecError) as info:
        parse(src, filename="act.ntk")
    assert str(info.value) in GUIDE


@pytest.mark.parametrize("formula, want", [
    ("x * (1 + erf(x / sqrt(2))) / 2", "Gelu"), ("sigmoid(x)", "Sigmoid"), ("tanh(x)", "Tanh"),
    ("sign(x)", "Sign"), ("2 * exp(-0.5 * x**2)", "Gaussian(a=2, b=-0.5)"),
    ("cos(2 * x)", "Cos(a=1, b=2, c=0)"), ("exp(x)", "Exp(a=1, b=1)"),
])
def test_more_builtins_are_recognised(formula, want):
    la = _one(f"activation f(x) = {formula}", "f")
    assert la.path().kind == "builtin" and la.path().delegate.describe(short=True) == want
    assert la.closed_form == la.path().delegate.closed_form


def test_a_constant_that_is_not_decimal_takes_the_quadrature():
    la = _one("activation f(x) = sin(x + pi / 4)", "f")
    assert la.path().kind == "quadrature"
