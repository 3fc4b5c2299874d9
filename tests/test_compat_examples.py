"""The peer's documented examples run through ntkdsl.compat give the peer's numbers.

Each script of ``tests/compat_examples/`` is the neural-tangents 0.6.5 documentation
(README quick start, predict, finite-width dynamics) with only its imports switched to
``ntkdsl.compat``; ``tests/golden/make_golden_compat.py --examples`` ran the identical
script with neural-tangents. The scripts draw their inputs with ``jax.random``, whose
default bits changed after jax 0.4 (``jax_threefry_partitionable``), so they run here
inside ``jax.threefry_partitionable(False)`` to draw the same inputs as the peer did.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

HERE = Path(__file__).parent
EXAMPLES = sorted((HERE / "compat_examples").glob("*.py"))
GOLDEN = HERE / "golden" / "compat"


def _run(path: Path) -> dict:
    env: dict = {"__name__": "__example__"}
    with jax.threefry_partitionable(False):
        exec(compile(path.read_text(), str(path), "exec"), env)
    return env["RESULTS"]


#: the richest script (every predict function, Monte Carlo) runs with -m slow
SLOW = {"predict_examples"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW
                                  else p for p in EXAMPLES], ids=[p.stem for p in EXAMPLES])
def test_example_gives_the_peers_numbers(path):
    text = path.read_text()
    assert "neural_tangents" not in text.replace("neural-tangents", "")
    want = np.load(GOLDEN / f"example_{path.stem}.npz")
    got = _run(path)
    assert sorted(got) == sorted(want.files)
    bad = []
    for key in want.files:
        g, w = np.asarray(got[key], np.float64), want[key]
        if g.shape != w.shape:
            bad.append(f"{key}: shape {g.shape} != {w.shape}")
            continue
        err = np.abs(g - w).max() / max(np.abs(w).max(), 1e-300)
        if not err <= 1e-6:
            bad.append(f"{key}: relative error {err:.3g}")
    assert not bad, "\n".join(bad)
