"""SelfAttention through the compiler: tiling and chunking, layouts, the image/sequence
equivalence, rendering in check and explain, and the finite net's empirical NTK."""

from __future__ import annotations

import pickle

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler.analysis import plan
from ntkdsl.compiler.kernels import build_tile_fn

STACK = """net n {
    Conv(3, 2, b_std = 0.1)
    SelfAttention(4, heads = 2, mechanism = "MECH", positional = "POS", b_std = 0.2,
                  linear_scaling = LIN)
    Relu
    SelfAttention(3, mechanism = "relu")
    GlobalAvgPool
}"""


def _inputs(shape, n=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _stack(mech="softmax", pos="sum", lin="true") -> ntkdsl.Model:
    return ntkdsl.compile(STACK.replace("MECH", mech).replace("POS", pos).replace("LIN", lin))


@pytest.mark.parametrize(("mech", "pos", "lin"), [
    ("softmax", "sum", "true"),
    pytest.param("identity", "concat", "false", marks=pytest.mark.slow)])
def test_chunks_tiles_and_full_paths_agree(mech, pos, lin):
    """The pair list in chunks, tiles of x1 and x2, and the full-state path give one kernel."""
    m = _stack(mech, pos, lin)
    x = _inputs((3, 2), n=4)
    p = plan(m.net, (3, 2))
    with jax.enable_x64(True):
        one = build_tile_fn(p, 4, None, ("nngp", "ntk"))(x)
        many = build_tile_fn(p, 4, None, ("nngp", "ntk"), chunk=3)(x)
        full = build_tile_fn(plan(m.net, (3, 2), force_full=True), 4, None,
                             ("nngp", "ntk"))(x)
    for a, b, c in zip(one, many, full):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-11)
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-11)
    whole = m.kernel_fn(x, None, ("nngp", "ntk"))
    tiled = m.kernel_fn(x, None, ("nngp", "ntk"), batch_size=2)
    cross = m.kernel_fn(x[:3], x[1:], ("nngp", "ntk"), batch_size=2)
    for name in ("nngp", "ntk"):
        a = getattr(whole, name)
        np.testing.assert_allclose(getattr(tiled, name), a, rtol=1e-11)
        np.testing.assert_allclose(getattr(cross, name), a[:3, 1:], rtol=1e-11)
        np.testing.assert_allclose(np.asarray(one[0 if name == "nngp" else 1]), a,
                                   rtol=1e-11)


def test_an_image_is_its_flattened_sequence():
    """Attention over all positions: an (H, W, C) image and its (H W, C) sequence have the
    same kernels when nothing before or after the attention looks at the layout."""
    m = ntkdsl.compile('net n { Dense(4); SelfAttention(4, positional = "concat", '
                       'mechanism = "abs"); Relu; GlobalAvgPool; Dense(1) }')
    x = _inputs((2, 3, 2))
    img = m.kernel_fn(x, None, ("nngp", "ntk"))
    seq = m.kernel_fn(x.reshape(3, 6, 2), None, ("nngp", "ntk"))
    np.testing.assert_allclose(img.nngp, seq.nngp, rtol=1e-12)
    np.testing.assert_allclose(img.ntk, seq.ntk, rtol=1e-12)


def test_softmax_rows_are_averages():
    """With softmax weights and no bias, each output position is an average of the values:
    for a constant input sequence (all positions equal) the layer is the identity map on
    the kernel, scaled by ov2, whatever the weights."""
    m = ntkdsl.compile("net n { SelfAttention(4, W_std = 1.3, W_out_std = 0.7) }")
    x = np.repeat(_inputs((1, 3)), 5, axis=1)  # 5 equal positions
    k = m.kernel_fn(x, None, "nngp")
    want = (0.7 * 1.3) ** 2 * (x[:, 0] @ x[:, 0].T) / 3
    np.testing.assert_allclose(k, want, rtol=1e-12)


def test_check_and_explain_render_the_layer(capsys):
    from ntkdsl.cli.check import layer_text
    from ntkdsl.compiler.explain import explain

    m = _stack("identity", "concat", "false")
    texts = [layer_text(layer) for layer in m.net.walk() if layer.spec_name == "SelfAttention"]
    assert texts[0] == ('SelfAttention(4, heads=2, mechanism="identity", b_std=0.2, '
                        'positional="concat", linear_scaling=false)')
    assert texts[1] == 'SelfAttention(3, mechanism="relu")'
    text = explain(m.net)
    assert "1/sqrt(key_size) scaling, identity mechanism" in text
    assert "<(0.5 * K1 + 0.5 * I), K1>" in text
    assert "G1[p, q] = relu(1 * K" in text
    latex = explain(m.net, latex=True)
    assert "\\langle" in latex and "G^{(1)}_{pq}" in latex


def test_model_pickles_and_hashes():
    m = _stack()
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.net == m.net and hash(m2.net) == hash(m.net)
    x = _inputs((3, 2))
    np.testing.assert_array_equal(m2.kernel_fn(x, None, "nngp"), m.kernel_fn(x, None, "nngp"))


@pytest.mark.slow
def test_float32_kernels_are_close():
    m = _stack()
    x = _inputs((3, 2))
    k64 = m.kernel_fn(x, None, "ntk")
    k32 = m.kernel_fn(x, None, "ntk", dtype="float32")
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k32, k64, rtol=1e-4, atol=1e-5 * np.abs(k64).max())


@pytest.mark.slow
def test_empirical_ntk_of_the_finite_net_is_symmetric_psd():
    m = ntkdsl.compile('net n { Dense(16); SelfAttention(16, heads = 2, positional = "sum",'
                       ' b_std = 0.1); Relu; GlobalAvgPool; Dense(1) }')
    x = _inputs((4, 3))
    params = m.init(jax.random.key(0), x.shape[1:])
    k = np.asarray(m.empirical_ntk(params, x))
    np.testing.assert_allclose(k, k.T, rtol=1e-10)
    assert np.linalg.eigvalsh(k).min() > -1e-9 * np.abs(k).max()


def test_transformer_example_predicts_through_the_cli(tmp_path, capsys):
    """examples/specs/transformer.ntk through ntkdsl predict (check and kernel are in
    tests/test_examples_cli.py), at a small width."""
    from pathlib import Path

    from ntkdsl.cli import main

    spec = Path(__file__).resolve().parents[1] / "examples" / "specs" / "transformer.ntk"
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 6, 3)))
    np.save(tmp_path / "y.npy", rng.standard_normal((5, 1)))
    np.save(tmp_path / "t.npy", rng.standard_normal((2, 6, 3)))
    out = tmp_path / "p.npz"
    assert main(["predict", str(spec), "--set", "width=8", "--set", "depth=1",
                 "--x-train", str(tmp_path / "x.npy"), "--y-train", str(tmp_path / "y.npy"),
                 "--x-test", str(tmp_path / "t.npy"), "-o", str(out)]) == 0
    with np.load(out) as p:
        assert p["mean"].shape == (1, 2, 1) and np.all(np.isfinite(p["mean"]))
        assert np.all(np.linalg.eigvalsh(p["cov"][0]) > -1e-10)
    capsys.readouterr()
