"""Our analytic kernels against the peer's (neural-tangents 0.6.5) on the goldens.

Each ``tests/golden/NAME.npz`` holds a spec in our language, inputs ``x1`` (4, ...) and
``x2`` (3, ...), and the peer's NNGP and NTK for (x1, x2) and (x1, None); it was written
by ``tests/golden/make_golden.py`` with the peer's interpreter (see tests/golden/README.md).
Nothing here imports the peer. Every golden is its own test; a mismatch reports, per
kernel and per input pair, the largest error, where it is, and both values.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDENS = sorted(GOLDEN_DIR.glob("*.npz"))
#: tolerance relative to the largest entry of the peer's kernel
RTOL = 1e-6
#: goldens whose XLA compile takes longest and whose features the others also cover
#: (run them with ``pytest -m slow``): 2-D AvgPool paddings (also in conv1d_avgpool_tanh,
#: conv2d_standard, conv3d_circular_flatten), conv residuals (fc_residual), 2-D CIRCULAR
#: (1-D and 3-D goldens), deep conv (conv1d_mixed_deep), Myrtle.
SLOW = {"conv2d_avgpool_explicit", "conv2d_avgpool_default", "resnet_projection",
        "conv2d_circular", "resnet_identity", "myrtle5", "deep_conv_relu"}


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _compare(got, want: np.ndarray, what: str) -> str | None:
    """None when ``got`` matches ``want`` at RTOL of max|want|, else a one-line report."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, peer {want.shape}"
    if got.dtype != np.float64:
        return f"{what}: dtype {got.dtype}, expected float64 by default"
    scale = float(np.abs(want).max())
    err = np.abs(got - want)
    if np.isnan(err).any():
        return f"{what}: NaN at {np.argwhere(np.isnan(err)).tolist()[:4]}"
    worst = np.unravel_index(np.argmax(err), err.shape)
    rel = float(err[worst]) / scale
    if rel <= RTOL:
        return None
    return (f"{what}: max |ours - peer| = {err[worst]:.3e} = {rel:.2e} x max|peer| "
            f"({scale:.4g}) at {tuple(int(i) for i in worst)}: ours {got[worst]:.12g}, "
            f"peer {want[worst]:.12g}; {int((err > RTOL * scale).sum())}/{err.size} "
            f"entries off")


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else [])
    for p in GOLDENS
])
def test_golden(path: Path) -> None:
    """``kernel_fn`` matches the peer at 1e-6 of the largest entry, for both input pairs."""
    import ntkdsl

    g = _load(path)
    model = ntkdsl.compile(str(g["spec"]), net=str(g["net"]))
    problems = []
    for label, x2, suffix in (("(x1, x2)", g["x2"], "12"), ("(x1, None)", None, "11")):
        k = model.kernel_fn(g["x1"], x2, ("nngp", "ntk"))
        for name in ("nngp", "ntk"):
            p = _compare(getattr(k, name), g[f"{name}_{suffix}"], f"{name} {label}")
            if p:
                problems.append(p)
    assert not problems, f"{path.stem} ({g['covers']}):\n  " + "\n  ".join(problems)


#: built-ins the peer does not have, and the test that checks them against mpmath instead
NOT_IN_PEER = {"Softplus": "tests/test_softplus.py",
               # the peer has it, but its kernels are NaN at correlation 1
               "RectifiedMonomial": "tests/test_nonlinearities.py"}


def test_goldens_cover_the_language() -> None:
    """The goldens together exercise every layer, padding, parameterisation and rank."""
    from ntkdsl.compiler.layers import BUILTINS

    root = Path(__file__).resolve().parent.parent
    for name, test in NOT_IN_PEER.items():
        assert (root / test).exists() and name in (root / test).read_text(), (name, test)

    assert len(GOLDENS) >= 24, f"only {len(GOLDENS)} goldens in {GOLDEN_DIR}"
    assert SLOW <= {p.stem for p in GOLDENS}, "SLOW names a golden that does not exist"
    # the branch statements' goldens live in golden/branches (test_branches_golden.py),
    # Aggregate's in golden/graph (test_graph_golden.py), SelfAttention's in
    # golden/attention (test_attention_golden.py)
    goldens = [_load(p) for p in [*GOLDENS,
                                  *(p for d in ("branches", "graph", "attention")
                                    for p in sorted((GOLDEN_DIR / d).glob("*.npz")))]]
    specs = "\n".join(str(g["spec"]) for g in goldens)
    for name in BUILTINS:
        if name in NOT_IN_PEER:
            continue
        assert re.search(rf"\b{name}\b", specs), f"no golden uses {name}"
    for layer, default in (("Conv", "SAME"), ("AvgPool", "VALID")):
        lines = [ln for ln in specs.splitlines() if ln.strip().startswith(layer + "(")]
        pads = {m.group(1) if (m := re.search(r"padding = (\w+)", ln)) else default
                for ln in lines}
        assert pads == {"SAME", "VALID", "CIRCULAR"}, f"{layer} paddings covered: {pads}"
        assert any("padding" not in ln for ln in lines), f"no {layer} with default padding"
        assert any("strides" not in ln for ln in lines), f"no {layer} with default strides"
    assert re.search(r"Conv\(\w+, 2\b", specs), "no even Conv kernel"
    assert re.search(r"Conv\(\w+, \(\d+, \d+\)", specs), "no non-square Conv kernel"
    assert re.search(r"Residual \{[^}]*\}\s*shortcut", specs), "no projection shortcut"
    assert re.search(r"Residual \{[^}]*\}\s*\n", specs), "no identity shortcut"
    assert '"standard"' in specs and "ntk" in specs
    ranks = {g["x1"].ndim for g in goldens}
    assert ranks >= {2, 3, 4, 5}, f"input ranks covered: {sorted(ranks)}"
    for g in goldens:
        assert g["x1"].dtype == np.float64 and g["x1"].shape[0] == 4 and g["x2"].shape[0] == 3
