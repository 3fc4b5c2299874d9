"""Graph and node classification with the NTK of a GNN (``examples/specs/gnn.ntk``).

Graph level: a generated, seeded dataset of two classes of random graphs with the same
degrees, so that the degrees alone say nothing: Erdős–Rényi graphs rewired, every node
keeping its degree, so that high-degree nodes link to high-degree ones (class 1) or to
low-degree ones (class 0). Node features are a constant and the node's degree. The
NTK-GP of the ``gnn`` net (``Model.predict_fn`` with the train and test adjacencies,
``t = inf``) is compared with a baseline that sees each graph's degree histogram and
feature means (a ridge classifier on them).

Node level (``--nodes``): one stochastic block model graph whose nodes are labelled by
community; a GP with the kernel between its nodes (``Model.node_kernel_fn`` of the
``gnn_nodes`` net, no readout over nodes) is trained on a few labelled nodes and
predicts the others, against a baseline that sees each node's own features only.

Run: ``python examples/graph_classification.py`` (well under a minute on 2 CPU cores);
prints the accuracies and writes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import ntkdsl
from ntkdsl.predict import gp_inference

SPEC = Path(__file__).resolve().parent / "specs" / "gnn.ntk"
NODES = 12


def random_graph(rng: np.random.Generator, label: int, nodes: int = NODES,
                 swaps: int = 200) -> np.ndarray:
    """A symmetric 0/1 adjacency: an Erdős–Rényi graph rewired by degree-preserving edge
    swaps towards high-degree nodes linked to high-degree ones (label 1, assortative) or
    to low-degree ones (label 0, disassortative). Every node keeps its degree, so both
    classes have the same distribution of degree histograms."""
    upper = np.triu(rng.random((nodes, nodes)) < 0.3, 1)
    a = upper | upper.T
    deg = a.sum(axis=1)
    sign = 1 if label == 1 else -1
    for _ in range(swaps):
        edges = np.argwhere(np.triu(a, 1))
        if len(edges) < 2:
            break
        (u, v), (x, y) = edges[rng.choice(len(edges), 2, replace=False)]
        if len({u, v, x, y}) < 4 or a[u, y] or a[x, v]:
            continue
        # (u, v), (x, y) -> (u, y), (x, v): the degrees stay, their products change
        gain = deg[u] * deg[y] + deg[x] * deg[v] - deg[u] * deg[v] - deg[x] * deg[y]
        if sign * gain > 0:
            a[u, v] = a[v, u] = a[x, y] = a[y, x] = False
            a[u, y] = a[y, u] = a[x, v] = a[v, x] = True
    return a.astype(float)


def node_features(a: np.ndarray) -> np.ndarray:
    """(nodes, 4): a constant, the degree (scaled), its square, and a zero channel."""
    deg = a.sum(axis=-1) / 4.0
    return np.column_stack([np.ones(len(a)), deg, deg ** 2, np.zeros(len(a))])


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` graphs, half of each class: features (n, nodes, 4), adjacency (n, nodes, nodes)
    with self-loops (a node keeps its own features when it aggregates), labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    adj = np.stack([random_graph(rng, int(c)) for c in labels])
    x = np.stack([node_features(a) for a in adj])
    return x, adj + np.eye(NODES), labels


def histogram_features(x: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """The baseline's view of a graph: its degree histogram and its mean features."""
    deg = (adj.sum(axis=-1) - 1).astype(int)  # without the self-loop
    hist = np.stack([np.bincount(d, minlength=NODES) for d in deg]) / NODES
    return np.column_stack([hist, x.mean(axis=1), np.ones(len(x))])


def ridge_accuracy(f_train, y_train, f_test, y_test, reg: float = 1e-2) -> float:
    """Accuracy of a ridge classifier (least squares on +-1 targets) on fixed features."""
    t = 2.0 * y_train - 1.0
    w = np.linalg.solve(f_train.T @ f_train + reg * np.eye(f_train.shape[1]), f_train.T @ t)
    return float(np.mean((f_test @ w > 0) == (y_test == 1)))


def graph_classification(n_train: int = 80, n_test: int = 80, seed: int = 0) -> dict:
    """NTK-GP and baseline test accuracies on the generated graph dataset."""
    model = ntkdsl.compile_file(SPEC, net="gnn")
    x, adj, y = make_dataset(n_train + n_test, seed)
    tr, te = slice(0, n_train), slice(n_train, None)
    targets = (2.0 * y[tr] - 1.0)[:, None]
    predict = model.predict_fn(x[tr], targets, adjacency_train=adj[tr], diag_reg=1e-3,
                               compute_cov=False)
    mean = np.asarray(predict(x[te], np.inf, adjacency_test=adj[te]).mean)[..., 0]
    ntk_acc = float(np.mean((mean > 0) == (y[te] == 1)))
    base = ridge_accuracy(histogram_features(x[tr], adj[tr]), y[tr],
                          histogram_features(x[te], adj[te]), y[te])
    return {"ntk_gp": ntk_acc, "baseline": base, "n_train": n_train, "n_test": n_test}


def node_classification(nodes: int = 60, labelled: int = 12, seed: int = 0) -> dict:
    """Community labels of one SBM graph's nodes from a few labelled ones: NNGP posterior
    with the kernel between the nodes, and a baseline on each node's own features."""
    rng = np.random.default_rng(seed)
    community = (np.arange(nodes) >= nodes // 2).astype(int)
    same = community[:, None] == community[None, :]
    upper = np.triu(rng.random((nodes, nodes)) < np.where(same, 0.2, 0.02), 1)
    a = (upper | upper.T).astype(float) + np.eye(nodes)
    # a weak, noisy hint of the community in the features; the graph carries the rest
    x = np.column_stack([np.ones(nodes), 0.3 * (2 * community - 1) + rng.normal(size=nodes),
                         rng.normal(size=(nodes, 2))])
    order = rng.permutation(nodes)
    train, test = order[:labelled], order[labelled:]
    model = ntkdsl.compile_file(SPEC, net="gnn_nodes")
    k = model.node_kernel_fn(x, a, get="nngp")  # (nodes, nodes)
    t = (2.0 * community - 1.0)[:, None]
    post = gp_inference(k[np.ix_(train, train)], t[train], k[np.ix_(test, train)],
                        diag_reg=1e-2)
    gp_acc = float(np.mean((np.asarray(post.mean)[:, 0] > 0) == (community[test] == 1)))
    base = ridge_accuracy(x[train], community[train], x[test], community[test])
    return {"node_gp": gp_acc, "node_baseline": base, "labelled": labelled,
            "nodes": nodes}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the graph-level (and, with ``--nodes``, node-level) accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", action="store_true", help="also the node-level task")
    args = parser.parse_args(argv)
    r = graph_classification(seed=args.seed)
    print(f"graph classification ({r['n_train']} train / {r['n_test']} test graphs): "
          f"NTK-GP accuracy {r['ntk_gp']:.3f}, degree-histogram baseline {r['baseline']:.3f}")
    if args.nodes:
        r = node_classification(seed=args.seed)
        print(f"node classification ({r['labelled']} of {r['nodes']} nodes labelled): "
              f"NNGP accuracy {r['node_gp']:.3f}, own-features baseline "
              f"{r['node_baseline']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
