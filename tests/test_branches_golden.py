"""The branch statements (Sum, Concat, Product) against the peer's FanInSum / FanInConcat /
FanInProd, in FC and CNN contexts, for (x1, x2) and (x1, None).

The goldens in ``tests/golden/branches/`` are written by
``tests/golden/make_golden_branches.py`` with the peer's interpreter; this test runs in
the project's environment and never imports the peer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GOLDENS = sorted((Path(__file__).parent / "golden" / "branches").glob("*.npz"))
RTOL = 1e-6


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_every_statement_has_goldens() -> None:
    """Each statement appears in an FC golden and in a CNN golden."""
    specs = {p.stem: str(_load(p)["spec"]) for p in GOLDENS}
    for kind in ("Sum", "Concat", "Product"):
        assert any(kind in s for n, s in specs.items() if n.startswith("fc_")), kind
        assert any(kind in s for n, s in specs.items() if n.startswith("conv")), kind


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_branch_golden(path: Path) -> None:
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
