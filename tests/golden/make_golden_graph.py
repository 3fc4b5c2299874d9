"""Write the peer's golden kernels for graph aggregation (``Aggregate``).

Runs ONLY with the peer's interpreter (neural-tangents 0.6.5 on jax 0.4.23), like
``make_golden.py``, whose layer records and conventions it reuses::

    .peer-venv/bin/python tests/golden/make_golden_graph.py
    .peer-venv/bin/python tests/golden/make_golden_graph.py --only gcn_sum_pool

The goldens go to ``tests/golden/graph/NAME.npz`` and are checked by
``tests/test_graph_golden.py``. ``Aggregate`` maps onto the peer's
``stax.Aggregate()`` (dense pattern, aggregating over the node axis 1, channel last)
called with ``pattern=(A1, A2)``. The peer has no normalisation: for
``Aggregate(normalize = true)`` it is given the adjacency with each column divided by
its sum (a node's in-degree; a column of zeros stays zero), which is what the option
means (docs/language.md). A golden's nets therefore use one kind of Aggregate only.

Each ``NAME.npz`` holds what ``make_golden.py`` writes (``spec``, ``net``, ``covers``,
``peer``, ``x1`` (4, nodes, C), ``x2`` (3, nodes, C), ``nngp_12`` ... ``ntk_11``) plus
the adjacencies ``adjacency1`` (4, nodes, nodes), ``adjacency2`` (3, nodes, nodes) (random
graphs with weights, seeded by the name; one graph of ``x2`` repeats one of ``x1`` with
its features, one has a node without predecessors), and for node-level nets (no readout
over nodes) the peer's full kernels ``node_nngp_12`` (4, 3, nodes, nodes) etc.; their
``nngp_12`` is then the mean over nodes of the diagonal, which is what ``kernel_fn``
returns for an output with a node axis.
"""

from __future__ import annotations

import argparse
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_golden as mg  # noqa: E402
from make_golden import GAP, RELU, Act, Arch, Dense, Erf  # noqa: E402

OUT = HERE / "graph"
N1, N2 = mg.N1, mg.N2
GSP = mg.GSP


@dataclass(frozen=True)
class Aggregate:
    """``Aggregate`` / ``Aggregate(normalize = true)``; the normalisation is in the pattern."""

    normalize: bool = False

    def spec(self) -> str:
        return "Aggregate(normalize = true)" if self.normalize else "Aggregate"

    def peer(self, nd: int):
        from neural_tangents import stax
        return stax.Aggregate()


AGG, AGG_MEAN = Aggregate(), Aggregate(True)
GELU = Act("Gelu")


@dataclass(frozen=True)
class GraphArch:
    arch: Arch
    density: float = 0.4
    weighted: bool = False
    normalize: bool = False
    node_level: bool = False


ARCHS: tuple[GraphArch, ...] = (
    GraphArch(Arch("gcn_sum_pool", (6, 3),
                   (Dense(5, W_std=1.3, b_std=0.2), AGG, RELU, Dense(5, W_std=1.4), AGG,
                    Erf(), Dense(4, W_std=1.2, b_std=0.1), GSP, Dense(1)),
                   "Aggregate (sum) twice between Dense/Relu/Erf, GlobalSumPool readout"),
              density=0.4),
    GraphArch(Arch("gcn_mean_avg_pool", (7, 2),
                   (Dense(4, W_std=1.5), AGG_MEAN, RELU, Dense(4, W_std=1.3, b_std=0.1),
                    AGG_MEAN, GELU, Dense(3), GAP, Dense(1, b_std=0.1)),
                   "Aggregate(normalize = true) (mean over predecessors), weighted graphs, "
                   "GlobalAvgPool readout"),
              density=0.5, weighted=True, normalize=True),
    GraphArch(Arch("gin_residual", (5, 3),
                   (AGG, Dense(4, W_std=1.2), AGG, Dense(4, W_std=1.3, b_std=0.1),
                    mg.Residual((RELU, AGG, Dense(4, W_std=1.2)), None), RELU,
                    GSP, Dense(2, W_std=1.1)),
                   "Aggregate on the raw features and inside a Residual branch"),
              density=0.35),
    GraphArch(Arch("node_level_sum", (6, 2),
                   (Dense(5, W_std=1.3, b_std=0.2), AGG, RELU, Dense(5, W_std=1.4), AGG,
                    Erf(), Dense(1, W_std=1.2)),
                   "node-level kernels (no readout over nodes): full (nodes, nodes) blocks"),
              density=0.4, node_level=True),
    GraphArch(Arch("node_level_mean", (5, 3),
                   (Dense(4, W_std=1.4), AGG_MEAN, RELU, Dense(4, W_std=1.3, b_std=0.1),
                    AGG_MEAN, Dense(1)),
                   "node-level kernels with Aggregate(normalize = true), weighted"),
              density=0.5, weighted=True, normalize=True, node_level=True),
)


def _graphs(g: GraphArch, rng) -> tuple[np.ndarray, np.ndarray]:
    nodes = g.arch.in_shape[0]

    def batch(n):
        a = (rng.random((n, nodes, nodes)) < g.density).astype(float)
        if g.weighted:
            a *= rng.uniform(0.5, 2.0, a.shape)
        return a

    a1, a2 = batch(N1), batch(N2)
    a1[1, :, 2] = 0.0  # node 2 of graph 1 has no predecessors (normalised: stays 0)
    a2[0] = a1[2]  # with x2[0] = x1[2]: the same graph twice
    return a1, a2


def _normalized(a: np.ndarray) -> np.ndarray:
    deg = a.sum(axis=-2, keepdims=True)
    return a / np.where(deg == 0, 1.0, deg)


def make(g: GraphArch, versions: str) -> Path:
    """Compute the peer's kernels for one graph architecture and write ``NAME.npz``."""
    from neural_tangents import stax

    arch = g.arch
    _, _, kernel_fn = stax.serial(*(layer.peer(1) for layer in arch.layers))
    rng = np.random.default_rng(zlib.crc32(arch.name.encode()))
    x1 = rng.standard_normal((N1, *arch.in_shape))
    x2 = rng.standard_normal((N2, *arch.in_shape))
    x2[0] = x1[2]
    a1, a2 = _graphs(g, rng)
    p1, p2 = (_normalized(a) if g.normalize else a for a in (a1, a2))
    k12 = kernel_fn(x1, x2, ("nngp", "ntk"), pattern=(p1, p2))
    k11 = kernel_fn(x1, None, ("nngp", "ntk"), pattern=(p1, p1))
    arrays = {}
    for suffix, k in (("12", k12), ("11", k11)):
        for name in ("nngp", "ntk"):
            v = np.asarray(getattr(k, name), dtype=np.float64)
            if g.node_level:
                arrays[f"node_{name}_{suffix}"] = v
                v = np.einsum("abpp->ab", v) / v.shape[-1]
            arrays[f"{name}_{suffix}"] = v
    for k, v in arrays.items():
        want = (N1, N2) if k.endswith("12") else (N1, N1)
        if v.shape[:2] != want or not np.all(np.isfinite(v)):
            raise AssertionError(f"{arch.name}: peer {k} has shape {v.shape} or non-finite")
    path = OUT / f"{arch.name}.npz"
    np.savez_compressed(path, spec=np.str_(arch.spec_text()), net=np.str_(arch.name),
                        covers=np.str_(arch.covers), peer=np.str_(versions), x1=x1, x2=x2,
                        adjacency1=a1, adjacency2=a2, **arrays)
    return path


def check_peer_aggregate() -> None:
    """The peer's single-layer Aggregate NNGP equals the exact covariance A1^T K A2."""
    from neural_tangents import stax

    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 4, 3)), rng.standard_normal((3, 4, 3))
    a1, a2 = rng.random((2, 4, 4)), rng.random((3, 4, 4))
    _, _, kf = stax.serial(stax.Aggregate())
    got = np.asarray(kf(x1, x2, "nngp", pattern=(a1, a2)))
    k0 = np.einsum("aic,bjc->abij", x1, x2) / 3
    want = np.einsum("aip,abij,bjq->abpq", a1, k0, a2)
    err = np.abs(got - want).max() / np.abs(want).max()
    if err > 1e-12:
        raise AssertionError(f"peer Aggregate is not A1^T K A2: {err:.2e}")


def main(argv: list[str] | None = None) -> int:
    """Write the graph goldens (all, or ``--only`` some)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these goldens")
    args = parser.parse_args(argv)
    try:
        import jax
        import neural_tangents
    except ImportError:
        sys.exit("make_golden_graph.py needs the peer's interpreter: see its docstring")
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")
    versions = f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__}"
    check_peer_aggregate()
    OUT.mkdir(exist_ok=True)
    for g in ARCHS:
        if args.only and g.arch.name not in args.only:
            continue
        path = make(g, versions)
        print(f"wrote graph/{path.name} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
