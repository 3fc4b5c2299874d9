"""Aggregate against the peer's ``stax.Aggregate`` on random weighted graphs, through small
GNN stacks: graph-level (GlobalSumPool / GlobalAvgPool readouts) and node-level
(``node_kernel``'s full (nodes, nodes) blocks), with and without normalisation, for
(x1, x2) and (x1, None), float64 at 1e-6 of the largest entry.

The goldens in ``tests/golden/graph/`` are written by
``tests/golden/make_golden_graph.py`` with the peer's interpreter; this test runs in
the project's environment and never imports the peer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GOLDENS = sorted((Path(__file__).parent / "golden" / "graph").glob("*.npz"))
RTOL = 1e-6
#: compiled for ``-m slow`` only (each net is a few seconds of XLA compile); the default
#: run keeps a sum-aggregation graph-level net and a normalised node-level one
SLOW = {"gcn_mean_avg_pool", "gin_residual", "node_level_sum"}


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _close(got, want, what: str) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == np.float64, (what, got.shape, want.shape)
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err <= RTOL, f"{what}: {err:.2e} x max|peer|"


def test_goldens_cover_graphs() -> None:
    """Sum and mean aggregation, graph-level readouts by sum and mean, node-level nets."""
    gs = [_load(p) for p in GOLDENS]
    specs = [str(g["spec"]) for g in gs]
    assert any("Aggregate(normalize = true)" in s for s in specs)
    assert any("Aggregate\n" in s for s in specs)
    assert any("GlobalSumPool" in s for s in specs) and any("GlobalAvgPool" in s for s in specs)
    assert sum("node_nngp_12" in g for g in gs) >= 2
    assert any(np.any((g["adjacency1"] != 0) & (g["adjacency1"] != 1)) for g in gs)  # weighted


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW
                                  else p for p in GOLDENS], ids=[p.stem for p in GOLDENS])
def test_graph_golden(path: Path) -> None:
    """``kernel_fn`` (and ``node_kernel`` for node-level nets) match the peer."""
    import ntkdsl

    g = _load(path)
    model = ntkdsl.compile(str(g["spec"]), net=str(g["net"]))
    a1, a2 = g["adjacency1"], g["adjacency2"]
    for x2, adj2, suffix in ((g["x2"], a2, "12"), (None, None, "11")):
        k = model.kernel_fn(g["x1"], x2, ("nngp", "ntk"), adjacency1=a1, adjacency2=adj2)
        for name in ("nngp", "ntk"):
            _close(getattr(k, name), g[f"{name}_{suffix}"], f"{path.stem} {name}_{suffix}")
        if f"node_nngp_{suffix}" in g:
            nk = model.node_kernel_fn(g["x1"], a1, x2, adj2)
            nodes = g["x1"].shape[1]
            for name in ("nngp", "ntk"):
                want = g[f"node_{name}_{suffix}"]  # (n1, n2, nodes, nodes)
                want = want.transpose(0, 2, 1, 3).reshape(len(want) * nodes, -1)
                _close(getattr(nk, name), want, f"{path.stem} node {name}_{suffix}")


def test_golden_tiled_and_through_edge_lists() -> None:
    """The same kernels in tiles of 2 rows (each tile carries its adjacency rows) and with
    the adjacencies given as edge lists."""
    import ntkdsl
    from ntkdsl.graphs import EdgeList

    g = _load(GOLDENS[0])
    model = ntkdsl.compile(str(g["spec"]), net=str(g["net"]))
    e1, e2 = EdgeList.from_dense(g["adjacency1"]), EdgeList.from_dense(g["adjacency2"])
    k = model.kernel_fn(g["x1"], g["x2"], batch_size=2, adjacency1=e1, adjacency2=e2)
    k11 = model.kernel_fn(g["x1"], batch_size=3, adjacency1=g["adjacency1"])
    for name in ("nngp", "ntk"):
        _close(getattr(k, name), g[f"{name}_12"], f"tiled {name}_12")
        _close(getattr(k11, name), g[f"{name}_11"], f"tiled {name}_11")
