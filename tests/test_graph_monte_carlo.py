"""Monte Carlo of finite GNNs (Aggregate) against their analytic kernels.

The finite net ``model.apply(params, x, adjacency=A)`` is sampled over random inits;
the average readout kernel (the NNGP given one init's features, the last Dense's
weights integrated out exactly: ``W_std^2 g g^T / C + b_std^2``) tends to the analytic
NNGP, the average empirical NTK to the analytic NTK (finite-width bias O(1/width),
spread O(1/sqrt(width * n_samples))). Graph-level (GlobalSumPool / GlobalAvgPool
readouts, sum and mean aggregation) and node-level (``node_kernel``) nets; fixed seeds.
The default run is one net; ``-m slow`` runs the others and a width sweep.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler.network import apply

jax.config.update("jax_enable_x64", True)

GRAPH_SUM = """
net g(width = 256) {
    Dense(width, W_std = 1.3, b_std = 0.2)
    Aggregate
    Relu
    Dense(width, W_std = 1.4)
    Aggregate(normalize = true)
    Erf
    GlobalSumPool
    Dense(1, W_std = 1.2, b_std = 0.1)
}
"""
GRAPH_MEAN = """
net g(width = 256) {
    Aggregate(normalize = true)
    Dense(width, W_std = 1.5)
    Relu
    Dense(width, W_std = 1.3, b_std = 0.1)
    Residual { Relu; Aggregate; Dense(width, W_std = 1.2) }
    Relu
    GlobalAvgPool
    Dense(1, W_std = 1.1)
}
"""
NODE = """
net n(width = 256) {
    Dense(width, W_std = 1.3, b_std = 0.2)
    Aggregate
    Relu
    Dense(width, W_std = 1.4)
    Aggregate(normalize = true)
    Relu
    Dense(1, W_std = 1.2)
}
"""
NODES, C = 5, 3


def _graphs(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NODES, C)) / np.sqrt(2)
    a = (rng.random((n, NODES, NODES)) < 0.5) * rng.uniform(0.5, 1.0, (n, NODES, NODES))
    a[0, :, 1] = 0.0  # a node without predecessors
    return x, a


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def monte_carlo(model, x, a, n_samples, seed, node_level=False):
    """(nngp, ntk) averaged over ``n_samples`` inits (graph-level, or node-level blocks)."""
    shape = tuple(x.shape[1:])
    xj, aj = jnp.asarray(x), jnp.asarray(a)
    body = model.net.body
    features = replace(model.net, body=replace(body, layers=body.layers[:-1]))
    readout = body.layers[-1]  # a Dense

    def one(k):
        params = model.init(k, shape)
        g = apply(features, tuple(params)[:-1], xj, adjacency=aj)
        g = g.reshape(-1, g.shape[-1])  # node-level: every node of every graph is an input
        nngp = readout.W_std ** 2 * (g @ g.T) / g.shape[-1] + readout.b_std ** 2
        f = model.apply(params, xj, adjacency=aj)
        if node_level:  # (n, nodes, out)

            def per_node(p, xa):
                xx, aa = xa[..., :C], xa[..., C:]
                return model.apply(p, xx, adjacency=aa).reshape(-1, f.shape[-1])

            jac = jax.jacobian(per_node)(params, jnp.concatenate([xj, aj], -1))
            leaves = jax.tree_util.tree_leaves(jac)
            ntk = sum(jnp.einsum("ao...,bo...->ab", j, j) for j in leaves) / f.shape[-1]
        else:
            ntk = model.empirical_ntk(params, xj, adjacency1=aj)
        return nngp, ntk

    keys = jax.random.split(jax.random.key(seed), n_samples)
    nngp, ntk = jax.lax.map(one, keys)
    return np.asarray(nngp.mean(0)), np.asarray(ntk.mean(0))


CASES = {
    "graph_sum_mean_readout_sum": (GRAPH_SUM, 16),
    "graph_mean_residual_readout_avg": (GRAPH_MEAN, 16),
}
SLOW = {"graph_mean_residual_readout_avg"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c
                                  for c in sorted(CASES)])
def test_graph_level_monte_carlo(case):
    spec, n_samples = CASES[case]
    model = ntkdsl.compile(spec)
    x, a = _graphs(4, 0)
    exact = model.kernel_fn(x, adjacency1=a)
    nngp, ntk = monte_carlo(model, x, a, n_samples, seed=1)
    assert rel(nngp, exact.nngp) < 0.05 and rel(ntk, exact.ntk) < 0.05, (
        rel(nngp, exact.nngp), rel(ntk, exact.ntk))


@pytest.mark.slow
def test_node_level_monte_carlo():
    model = ntkdsl.compile(NODE)
    x, a = _graphs(2, 2)
    exact = model.node_kernel_fn(x, a)
    nngp, ntk = monte_carlo(model, x, a, 16, seed=3, node_level=True)
    assert rel(nngp, exact.nngp) < 0.05 and rel(ntk, exact.ntk) < 0.05, (
        rel(nngp, exact.nngp), rel(ntk, exact.ntk))


@pytest.mark.slow
def test_error_shrinks_with_width():
    """At fixed samples the spread dominates, ~1/sqrt(width): 32x wider, >2x smaller."""
    x, a = _graphs(4, 4)
    errs = []
    for width in (16, 512):
        model = ntkdsl.compile(GRAPH_SUM, width=width)
        exact = model.kernel_fn(x, adjacency1=a)
        nngp, ntk = monte_carlo(model, x, a, 16, seed=5)
        errs.append((rel(nngp, exact.nngp), rel(ntk, exact.ntk)))
    (n_small, t_small), (n_big, t_big) = errs
    assert t_big < t_small / 2 and n_big < n_small, errs
