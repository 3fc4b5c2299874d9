"""The GNN example (examples/graph_classification.py) runs, and the NTK-GP of gnn.ntk
beats the baselines that cannot see the graph's structure: the degree histogram on
graphs with the same degrees (graph level), each node's own features (node level)."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import graph_classification as example  # noqa: E402


def test_same_degrees_in_both_classes():
    import numpy as np

    for label in (0, 1):
        upper = np.triu(np.random.default_rng(1).random((12, 12)) < 0.3, 1)
        a0 = (upper | upper.T).sum(axis=1)
        a = example.random_graph(np.random.default_rng(1), label)
        assert np.array_equal(np.sort(a.sum(axis=1)), np.sort(a0))  # degrees kept
        assert np.array_equal(a, a.T) and not a.diagonal().any()


def test_graph_classification_beats_the_degree_histogram():
    r = example.graph_classification(n_train=40, n_test=40, seed=1)
    assert r["ntk_gp"] >= 0.7 and r["ntk_gp"] > r["baseline"] + 0.1, r


def test_node_classification_beats_own_features():
    r = example.node_classification(seed=2)
    assert r["node_gp"] > r["node_baseline"] + 0.1, r


@pytest.mark.slow
def test_main_prints_both(capsys):
    assert example.main(["--nodes"]) == 0
    out = capsys.readouterr().out
    assert "NTK-GP accuracy" in out and "NNGP accuracy" in out
