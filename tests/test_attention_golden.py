"""``SelfAttention`` against the peer's ``stax.GlobalSelfAttention``, for (x1, x2) and
(x1, None), at float64 and 1e-6 of the largest entry.

The goldens in ``tests/golden/attention/`` are written by
``tests/golden/make_golden_attention.py`` with the peer's interpreter (every mechanism x
positional embedding under linear scaling, the identity mechanism under sqrt scaling,
sequences and images, stacks of attention layers, a transformer block); this test runs in
the project's environment and never imports the peer. ``golden/attention/finite/`` holds
the peer's finite layer (params and outputs), which ours reproduces given those params.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

GOLDENS = sorted((Path(__file__).parent / "golden" / "attention").glob("*.npz"))
RTOL = 1e-6


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_every_option_has_a_golden() -> None:
    """Each mechanism x positional option the peer computes, on sequences and images."""
    import ntkdsl
    from ntkdsl.compiler.layers import SelfAttention

    seen = set()
    for p in GOLDENS:
        g = _load(p)
        net = ntkdsl.compile(str(g["spec"]), net=str(g["net"])).net
        for layer in net.walk():
            if isinstance(layer, SelfAttention):
                seen.add((layer.mechanism, layer.positional, layer.linear_scaling,
                          g["x1"].ndim - 2))
    for mech in ("softmax", "identity", "abs", "relu"):
        for pos in ("none", "sum", "concat"):
            assert {(mech, pos, True, 1), (mech, pos, True, 2)} & seen, (mech, pos)
    for pos in ("none", "sum", "concat"):
        assert {("identity", pos, False, 1), ("identity", pos, False, 2)} & seen, pos
    assert {nd for *_, nd in seen} == {1, 2}  # (N, L, C) and (N, H, W, C)


#: the goldens run by default (each compiles kernel functions for seconds): softmax on a
#: sequence, sqrt-scaled identity with summed embeddings on an image, and three stacked
#: attention layers (softmax, relu with embeddings, sqrt identity); the other 15 run
#: under ``-m slow``
DEFAULT = {"seq_softmax_none", "img_sqrt_identity_sum", "img_two_layers"}


@pytest.mark.parametrize("path", [
    p if p.stem in DEFAULT else pytest.param(p, marks=pytest.mark.slow) for p in GOLDENS
], ids=[p.stem for p in GOLDENS])
def test_attention_golden(path: Path) -> None:
    """``kernel_fn`` matches the peer at 1e-6 of the largest entry."""
    import ntkdsl

    g = _load(path)
    model = ntkdsl.compile(str(g["spec"]), net=str(g["net"]))
    for x2, suffix in ((g["x2"], "12"), (None, "11")):
        k = model.kernel_fn(g["x1"], x2, ("nngp", "ntk"))
        for name in ("nngp", "ntk"):
            got, want = np.asarray(getattr(k, name)), g[f"{name}_{suffix}"]
            assert got.shape == want.shape and got.dtype == np.float64
            err = float(np.abs(got - want).max()) / float(np.abs(want).max())
            assert err <= RTOL, f"{path.stem} {name}_{suffix}: {err:.2e} x max|peer|"


FINITE = sorted((Path(__file__).parent / "golden" / "attention" / "finite").glob("*.npz"))


def test_finite_goldens_cover_both_scalings() -> None:
    specs = [str(_load(p)["spec"]) for p in FINITE]
    assert len(FINITE) >= 5 and any("linear_scaling = false" in s for s in specs)
    for mech in ("relu", "abs", "identity"):
        assert any(f'mechanism = "{mech}"' in s for s in specs), mech
    for pos in ("sum", "concat"):
        assert any(f'positional = "{pos}"' in s for s in specs), pos


#: finite goldens run by default: one per scaling (the rest under ``-m slow``)
FINITE_DEFAULT = {"softmax_sum_img", "sqrt_identity_concat_img"}


@pytest.mark.parametrize("path", [
    p if p.stem in FINITE_DEFAULT else pytest.param(p, marks=pytest.mark.slow) for p in FINITE
], ids=[p.stem for p in FINITE])
def test_finite_layer_matches_peer(path: Path) -> None:
    """The finite layer, given the peer's params, computes the peer's outputs."""
    import ntkdsl

    g = _load(path)
    model = ntkdsl.compile(str(g["spec"]), net=str(g["net"]))
    want_shapes = model.init(jax.random.key(0), g["x"].shape[1:])[0]
    params = {k[len("param_"):]: v for k, v in g.items() if k.startswith("param_")}
    assert {k: v.shape for k, v in params.items()} == {
        k: tuple(v.shape) for k, v in want_shapes.items()}
    y = np.asarray(model.apply((params,), g["x"]))
    np.testing.assert_allclose(y, g["y"], rtol=1e-10, atol=1e-12 * np.abs(g["y"]).max())
