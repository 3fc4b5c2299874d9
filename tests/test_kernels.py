"""Analytic kernels: independent checks of the rules, the two spatial paths, dtypes, errors.

The expected values are computed here from the definitions with numpy (the
arc-cosine kernel, explicit sums over patches), not typed in.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import ntkdsl
from ntkdsl import InputError
from ntkdsl.compiler import kernels
from ntkdsl.compiler.analysis import plan

RNG = np.random.default_rng(0)


def _kernel(model, x1, x2=None, **kw):
    k = model.kernel_fn(x1, x2, ("nngp", "ntk"), **kw)
    return np.asarray(k.nngp), np.asarray(k.ntk)


# ---- independent references -------------------------------------------------------------


def _arccos_relu(s11, s12, s22):
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] (Cho & Saul), written directly."""
    norm = np.sqrt(s11 * s22)
    c = np.clip(s12 / norm, -1, 1)
    th = np.arccos(c)
    t = norm * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
    tdot = (np.pi - th) / (2 * np.pi)
    return t, tdot


def test_dense_relu_dense_matches_arccos_formula():
    w1, b1, w2, b2 = 1.7, 0.3, 0.9, 0.2
    m = ntkdsl.compile(f"net n {{ Dense(50, W_std={w1}, b_std={b1}); Relu; "
                       f"Dense(1, W_std={w2}, b_std={b2}) }}")
    x1, x2 = RNG.standard_normal((5, 6)), RNG.standard_normal((4, 6))
    nngp, ntk = _kernel(m, x1, x2)

    k12 = w1**2 * x1 @ x2.T / 6 + b1**2
    k11 = w1**2 * (x1 * x1).sum(1) / 6 + b1**2
    k22 = w1**2 * (x2 * x2).sum(1) / 6 + b1**2
    t, tdot = _arccos_relu(k11[:, None], k12, k22[None, :])
    want_nngp = w2**2 * t + b2**2
    want_ntk = want_nngp + w2**2 * tdot * k12  # the first layer's NTK equals its NNGP
    np.testing.assert_allclose(nngp, want_nngp, rtol=1e-12)
    np.testing.assert_allclose(ntk, want_ntk, rtol=1e-12)


def _pad_index(n, k, s, padding):
    """Input index of each (output position, filter offset), None for a padded zero."""
    if padding == "VALID":
        out, lo = (n - k) // s + 1, 0
    else:
        out = -(-n // s)
        lo = max((out - 1) * s + k - n, 0) // 2
    idx = np.empty((out, k), dtype=object)
    for i in range(out):
        for d in range(k):
            q = s * i + d - lo
            if padding == "CIRCULAR":
                q %= n
            idx[i, d] = q if 0 <= q < n else None
    return idx


def _conv_reference(x1, x2, ks, ss, padding, w, b):
    """NNGP after one Conv, full spatial (P1, P2 per pair), by the double sum over patches."""
    n1, *sp, c = x1.shape
    n2 = x2.shape[0]
    idx = [_pad_index(n, k, s, padding) for n, k, s in zip(sp, ks, ss)]
    outs = [len(i) for i in idx]
    k0 = np.einsum("apc,bqc->abpq", x1.reshape(n1, -1, c), x2.reshape(n2, -1, c)) / c
    k0 = k0.reshape(n1, n2, *sp, *sp)
    res = np.zeros((n1, n2, *outs, *outs))
    for pos in itertools.product(*(range(o) for o in outs)):
        for pos2 in itertools.product(*(range(o) for o in outs)):
            acc = np.zeros((n1, n2))
            for offs in itertools.product(*(range(k) for k in ks)):
                q1 = [idx[a][pos[a], offs[a]] for a in range(len(sp))]
                q2 = [idx[a][pos2[a], offs[a]] for a in range(len(sp))]
                if None in q1 or None in q2:
                    continue
                acc += k0[(slice(None), slice(None), *q1, *q2)]
            res[(slice(None), slice(None), *pos, *pos2)] = w**2 * acc / math.prod(ks) + b**2
    return res


@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR"])
@pytest.mark.parametrize(("ks", "ss"), [((3, 2), (1, 1)), ((2, 3), (2, 1))])
def test_conv_matches_explicit_patch_sum(padding, ks, ss):
    w, b = 1.3, 0.4
    x1, x2 = RNG.standard_normal((3, 5, 4, 2)), RNG.standard_normal((2, 5, 4, 2))
    ref = _conv_reference(x1, x2, ks, ss, padding, w, b)
    conv = (f"Conv(7, ({ks[0]}, {ks[1]}), strides=({ss[0]}, {ss[1]}), padding={padding}, "
            f"W_std={w}, b_std={b})")
    gap = ntkdsl.compile(f"net g {{ {conv}; GlobalAvgPool }}")
    flat = ntkdsl.compile(f"net f {{ {conv}; Flatten }}")
    n1, n2 = 3, 2
    full = ref.reshape(n1, n2, ref.shape[2] * ref.shape[3], -1)
    want_gap = full.mean(axis=(2, 3))
    want_flat = np.einsum("abpp->ab", full) / full.shape[2]
    np.testing.assert_allclose(gap.kernel_fn(x1, x2, "nngp"), want_gap, rtol=1e-12)
    np.testing.assert_allclose(flat.kernel_fn(x1, x2, "nngp"), want_flat, rtol=1e-12)
    # first layer: the NTK equals the NNGP
    np.testing.assert_allclose(gap.kernel_fn(x1, x2, "ntk"), want_gap, rtol=1e-12)


def test_avgpool_is_mean_over_windows():
    x = RNG.standard_normal((3, 4, 6, 2))
    m = ntkdsl.compile("net p { AvgPool((2, 3)); Flatten }")
    k0 = np.einsum("ahwc,bxyc->abhwxy", x, x) / 2
    pooled = np.zeros((3, 3, 2, 2))
    for i, j in itertools.product(range(2), range(2)):
        pooled[:, :, i, j] = k0[:, :, 2 * i:2 * i + 2, 3 * j:3 * j + 3,
                                2 * i:2 * i + 2, 3 * j:3 * j + 3].mean(axis=(2, 3, 4, 5))
    want = pooled.mean(axis=(2, 3))
    np.testing.assert_allclose(m.kernel_fn(x, None, "nngp"), want, rtol=1e-12)


# ---- the two spatial paths, dtypes, symmetry -----------------------------------------------

PATH_SPECS = {
    "flatten": "net f { Conv(8, 3, W_std=1.4, b_std=0.1); Relu; Conv(8, (2, 3), strides=2, "
               "padding=CIRCULAR, W_std=1.4); Erf; Flatten; Dense(1) }",
    "pool_then_flatten": "net p { Conv(8, 3, W_std=1.4); Relu; AvgPool(2); "
                         "Conv(8, 3, padding=VALID, W_std=1.4); Relu; Flatten; Dense(1) }",
    "residual": "net r { Conv(8, 3); Residual { Relu; Conv(8, 3) } shortcut { Conv(8, 1) } "
                "Relu; Flatten; Dense(1) }",
}


@pytest.mark.parametrize("name", sorted(PATH_SPECS))
def test_diagonal_path_equals_full_path(name):
    """The plan keeps only per-position variances where it can; the full path must agree."""
    m = ntkdsl.compile(PATH_SPECS[name])
    x1, x2 = RNG.standard_normal((4, 6, 6, 2)), RNG.standard_normal((3, 6, 6, 2))
    lean = plan(m.net, (6, 6, 2))
    assert not lean.children[-1].full_in  # the readout reads a diagonal state
    fast = _kernel(m, x1, x2)
    full_plan = plan(m.net, (6, 6, 2), force_full=True)
    fn = kernels.build_tile_fn(full_plan, 4, 3, ("nngp", "ntk"))
    slow = [np.asarray(a) for a in fn(x1, x2)]
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_float32_agrees_with_float64():
    m = ntkdsl.compile(PATH_SPECS["pool_then_flatten"])
    x = RNG.standard_normal((5, 6, 6, 2))
    k64 = m.kernel_fn(x, None, ("nngp", "ntk"))
    k32 = m.kernel_fn(x, None, ("nngp", "ntk"), dtype="float32")
    assert k64.nngp.dtype == np.float64 and k32.nngp.dtype == np.float32
    for a, b in ((k64.nngp, k32.nngp), (k64.ntk, k32.ntk)):
        a, b = np.asarray(a), np.asarray(b, dtype=np.float64)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_symmetric_equals_full_and_is_symmetric():
    m = ntkdsl.compile("net s { Dense(9, W_std=1.5, b_std=0.2); Relu; Dense(9); Erf; Dense(1) }")
    x = RNG.standard_normal((7, 5))
    sym, full = _kernel(m, x), _kernel(m, x, x)
    off = ~np.eye(7, dtype=bool)
    for a, b in zip(sym, full):
        np.testing.assert_array_equal(a, a.T)
        np.testing.assert_allclose(a[off], b[off], rtol=1e-13)
        # on the diagonal the symmetric path has correlation exactly 1; the general one
        # goes through arccos(1 - ulp), good to ~1e-8 only (the peer's behaviour too)
        np.testing.assert_allclose(np.diag(a), np.diag(b), rtol=1e-7)


def test_get_string_and_tuple():
    m = ntkdsl.compile("net s { Dense(3); Relu; Dense(1) }")
    x = RNG.standard_normal((3, 4))
    k = m.kernel_fn(x)
    assert isinstance(k, ntkdsl.Kernel) and k.nngp.shape == (3, 3) and k.ntk.shape == (3, 3)
    only = m.kernel_fn(x, get=("ntk",))
    assert only.nngp is None
    np.testing.assert_array_equal(m.kernel_fn(x, get="nngp"), k.nngp)


# ---- no NaN --------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["Relu", "Erf"])
def test_deep_nets_repeated_and_zero_rows_no_nan(act):
    m = ntkdsl.compile(f"net d {{ repeat 20 {{ Dense(8, W_std=1.4, b_std=0.05); {act} }} "
                       "Dense(1) }")
    x = RNG.standard_normal((5, 4))
    x[1] = x[0]  # repeated row: correlation exactly 1
    x[2] = 0.0  # zero row
    x[3] = 1e-8 * x[4]  # nearly zero, and parallel to another row
    nngp, ntk = _kernel(m, x)
    assert np.isfinite(nngp).all() and np.isfinite(ntk).all()
    np.testing.assert_allclose(nngp[1], nngp[0], rtol=1e-12)


def test_zero_rows_without_bias_no_nan():
    m = ntkdsl.compile("net z { Conv(4, 3); Relu; Conv(4, 3); Erf; GlobalAvgPool; Dense(1) }")
    x = np.zeros((3, 5, 5, 1))
    x[1] = RNG.standard_normal((5, 5, 1))
    nngp, ntk = _kernel(m, x)
    assert np.isfinite(nngp).all() and np.isfinite(ntk).all()


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "x1", "x2", "words"), [
    ("net f { Dense(3); Relu }", np.zeros((4, 3, 3)), None, ["x1", "(4, 3, 3)", "(n, features)"]),
    ("net c { Conv(3, (3, 3)); Flatten }", np.zeros((4, 5, 2)), None, ["(5, 2)", "kernel"]),
    ("net c { Conv(3, 3); Flatten }", np.zeros((4, 5)), None, ["x1", "(n, *spatial, channels)"]),
    ("net c { Conv(3, 3); Flatten }", np.zeros((4, 5, 5, 3)), np.zeros((2, 5, 5, 1)),
     ["x2", "(2, 5, 5, 1)", "(n2, 5, 5, 3)"]),
    ("net f { Dense(3) }", np.array([[1.0, np.nan]]), None, ["finite", "x1[0, 1]"]),
    ("net f { Dense(3) }", np.zeros((2, 3)), np.array([[np.inf, 0, 0]]), ["finite", "x2"]),
])
def test_bad_inputs_give_one_line_errors(spec, x1, x2, words):
    m = ntkdsl.compile(spec)
    with pytest.raises(InputError) as e:
        m.kernel_fn(x1, x2)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize(("kw", "word"), [
    ({"get": "kernel"}, "get"), ({"get": ()}, "get"), ({"dtype": "int8"}, "dtype"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_options(kw, word):
    m = ntkdsl.compile("net f { Dense(3) }")
    with pytest.raises(InputError, match=word):
        m.kernel_fn(np.zeros((2, 3)), **kw)
