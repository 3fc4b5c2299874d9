"""Graph inputs: the adjacency travels with its input (kernels, tiles, repeated rows, the
finite net, the empirical NTK, predictions, node-level kernels, the CLI), the edge-list
file format round-trips, and every bad adjacency is an InputError naming the expected
and received shapes (exit 2 with one line in the CLI)."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

import ntkdsl
from ntkdsl import InputError
from ntkdsl.graphs import EdgeList, load_adjacency

jax.config.update("jax_enable_x64", True)

GNN = """
net gnn(width = 16) {
    Dense(width, W_std = 1.3, b_std = 0.2)
    Aggregate
    Relu
    Dense(width, W_std = 1.4)
    Aggregate(normalize = true)
    Relu
    GlobalSumPool
    Dense(1)
}
"""
NODE = """
net node(width = 16) {
    Dense(width, W_std = 1.3, b_std = 0.2)
    Aggregate
    Relu
    Dense(1, W_std = 1.2)
}
"""
NODES, C = 5, 3


def _graphs(n, seed, nodes=NODES):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, nodes, C))
    a = (rng.random((n, nodes, nodes)) < 0.5) * rng.uniform(0.5, 1.5, (n, nodes, nodes))
    return x, a


@pytest.fixture(scope="module")
def gnn():
    return ntkdsl.compile(GNN)


def test_adjacency_changes_the_kernel_and_the_kernel_is_symmetric(gnn):
    x, a = _graphs(4, 0)
    k = gnn.kernel_fn(x, adjacency1=a, get="nngp")
    k_other = gnn.kernel_fn(x, adjacency1=a[::-1], get="nngp")
    assert np.allclose(k, k.T, rtol=0, atol=1e-12 * np.abs(k).max())
    assert not np.allclose(k, k_other)


def test_tiles_and_repeated_rows_carry_the_adjacency(gnn):
    """Tiling, ragged tiles and the dedupe of repeated rows include the adjacency: two
    graphs with the same features but different edges are different inputs."""
    x, a = _graphs(5, 1)
    x[3] = x[1]  # same features, different graph
    x[4], a[4] = x[0], a[0]  # the same graph twice
    whole = gnn.kernel_fn(x, adjacency1=a)
    for b in (2, 3):  # 2: even tiles of the 5 rows plus a ragged one; 3: ragged
        tiled = gnn.kernel_fn(x, adjacency1=a, batch_size=b)
        for g in ("nngp", "ntk"):
            w, t = getattr(whole, g), getattr(tiled, g)
            assert np.abs(w - t).max() <= 1e-13 * np.abs(w).max(), (b, g)
    # separate computations of (x, a) and (x[:3], a[:3]) x (x[3:], a[3:]) agree
    cross = gnn.kernel_fn(x[:3], x[3:], adjacency1=a[:3], adjacency2=a[3:])
    assert np.allclose(cross.nngp, whole.nngp[:3, 3:], rtol=1e-13)
    assert whole.nngp[4, 4] == whole.nngp[0, 0] and whole.nngp[4, 2] == whole.nngp[0, 2]
    assert not np.isclose(whole.nngp[3, 3], whole.nngp[1, 1])


def test_finite_net_and_empirical_ntk(gnn):
    x, a = _graphs(3, 2)
    model = ntkdsl.compile(GNN, width=8)
    params = model.init(jax.random.key(0), (NODES, C))
    y = model.apply(params, x, adjacency=a)
    assert y.shape == (3, 1)
    # each graph's output depends on its own adjacency only, and jit / vmap work
    y0 = model.apply(params, x[:1], adjacency=a[:1])
    assert np.allclose(y[:1], y0)
    yj = jax.jit(lambda p, xx, aa: model.apply(p, xx, adjacency=aa))(params, x, a)
    assert np.allclose(y, yj)
    # the empirical NTK carries each input's adjacency
    e = model.empirical_ntk(params, x[:2], x[2:], adjacency1=a[:2], adjacency2=a[2:])
    e_all = model.empirical_ntk(params, x, adjacency1=a)
    assert e.shape == (2, 1) and np.allclose(e, e_all[:2, 2:])


def test_aggregate_apply_is_the_weighted_sum_and_mean():
    from ntkdsl.compiler.layers.graph import Aggregate, adjacency_scope

    x, a = _graphs(2, 3)
    a[0, :, 1] = 0.0  # node 1 of graph 0 has no predecessors
    with adjacency_scope(a):
        s = np.asarray(Aggregate().apply((), x))
        m = np.asarray(Aggregate(normalize=True).apply((), x))
    want = np.einsum("nij,nic->njc", a, x)
    deg = a.sum(axis=1)[..., None]
    assert np.allclose(s, want)
    assert np.allclose(m[0, 1], 0.0)
    ok = deg[..., 0] > 0
    assert np.allclose(m[ok], (want / np.where(deg == 0, 1, deg))[ok])


def test_predict_fn_with_train_and_test_adjacencies(gnn):
    x, a = _graphs(6, 4)
    y = np.random.default_rng(5).normal(size=(6, 1))
    fn = gnn.predict_fn(x[:4], y[:4], adjacency_train=a[:4], diag_reg=1e-4)
    out = fn(x[4:], np.inf, adjacency_test=a[4:])
    ktt = gnn.kernel_fn(x[:4], adjacency1=a[:4], get="ntk")
    kxt = gnn.kernel_fn(x[4:], x[:4], adjacency1=a[4:], adjacency2=a[:4], get="ntk")
    reg = 1e-4 * np.trace(ktt) / 4
    want = kxt @ np.linalg.solve(ktt + reg * np.eye(4), y[:4])
    assert np.allclose(np.asarray(out.mean), want, rtol=1e-8)
    with pytest.raises(InputError, match="adjacency_test"):
        fn(x[4:], np.inf)


def test_node_kernel_blocks_and_diagonal_mean():
    """node_kernel's diagonal blocks average to kernel_fn's entries; one graph alone gives
    the (nodes, nodes) kernel between its nodes, the same as its block in a batch."""
    model = ntkdsl.compile(NODE)
    x, a = _graphs(3, 6)
    nk = model.node_kernel_fn(x, a)
    k = model.kernel_fn(x, adjacency1=a)
    for g in ("nngp", "ntk"):
        blocks = getattr(nk, g).reshape(3, NODES, 3, NODES)
        diag_mean = np.einsum("apbp->ab", blocks) / NODES
        assert np.allclose(diag_mean, getattr(k, g), rtol=1e-10)
    one = model.node_kernel_fn(x[1], a[1], get="nngp")
    assert one.shape == (NODES, NODES)
    assert np.allclose(one, nk.nngp[NODES:2 * NODES, NODES:2 * NODES], rtol=1e-12)
    with pytest.raises(InputError, match="keeps the node axis"):
        ntkdsl.compile(GNN).node_kernel_fn(x, a)


# ---- edge lists ------------------------------------------------------------------------


def test_edge_list_round_trip(tmp_path):
    _, a = _graphs(3, 7)
    e = EdgeList.from_dense(a)
    path = tmp_path / "graphs.npz"
    e.save(path)
    back = load_adjacency(path)
    assert isinstance(back, EdgeList) and back.shape == (3, NODES, NODES)
    assert np.array_equal(back.to_dense(), a)
    # unweighted, repeated edges add, the graph count from the inputs
    e2 = EdgeList(graph=np.array([0, 0, 1]), src=np.array([0, 0, 2]), dst=np.array([1, 1, 0]),
                  nodes=3)
    d = e2.to_dense(graphs=4)
    assert d.shape == (4, 3, 3) and d[0, 0, 1] == 2 and d[1, 2, 0] == 1 and d.sum() == 3
    # saved without pickle: np.load(allow_pickle=False) reads every key
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"graph", "src", "dst", "nodes", "weight", "graphs"}


def test_edge_list_kernels_equal_dense(gnn):
    x, a = _graphs(3, 8)
    k = gnn.kernel_fn(x, adjacency1=a, get="ntk")
    e = EdgeList.from_dense(a)
    assert np.array_equal(gnn.kernel_fn(x, adjacency1=e, get="ntk"), k)


@pytest.mark.parametrize("kw, match", [
    (dict(graph=np.array([0.5]), src=np.array([0]), dst=np.array([0]), nodes=2), "integer"),
    (dict(graph=np.array([0]), src=np.array([2]), dst=np.array([0]), nodes=2), r"outside \[0, 2\)"),
    (dict(graph=np.array([0]), src=np.array([0]), dst=np.array([-1]), nodes=2), "outside"),
    (dict(graph=np.array([0, 1]), src=np.array([0]), dst=np.array([0]), nodes=2), "one entry"),
    (dict(graph=np.array([0]), src=np.array([0]), dst=np.array([0]), nodes=2,
          weight=np.array([np.nan])), "finite"),
    (dict(graph=np.array([3]), src=np.array([0]), dst=np.array([0]), nodes=2, graphs=2),
     "outside"),
    (dict(graph=np.array([0]), src=np.array([0]), dst=np.array([0]), nodes=0), "positive"),
])
def test_bad_edge_lists(kw, match):
    with pytest.raises(InputError, match=match):
        EdgeList(**kw)


def test_npz_that_is_not_an_edge_list(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(InputError, match="without graph, src, dst, nodes"):
        load_adjacency(p, "--adjacency1")


# ---- bad adjacencies -------------------------------------------------------------------


def _bad_cases():
    x, a = _graphs(4, 9)
    nan = a.copy()
    nan[1, 2, 3] = np.nan
    return x, [
        (a[:3], r"adjacency1 has shape \(3, 5, 5\), but x1 has shape \(4, 5, 3\): "
                r"expected \(4, 5, 5\)"),
        (a[:, :, :4], r"\(4, 5, 4\) \(not square\).*expected \(4, 5, 5\)"),
        (a[0], r"\(5, 5\) \(of rank 2\).*expected \(4, 5, 5\)"),
        (nan, r"adjacency1 must be finite, but adjacency1\[1, 2, 3\] = nan"),
        (np.zeros((4, 6, 6)), r"\(4, 6, 6\).*expected \(4, 5, 5\)"),
        (np.array(["a"] * 100).reshape(4, 5, 5), "real numeric"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_adjacency_is_an_input_error(gnn, case):
    x, cases = _bad_cases()
    adj, match = cases[case]
    with pytest.raises(InputError, match=match):
        gnn.kernel_fn(x, adjacency1=adj)


def test_missing_or_unexpected_adjacency(gnn):
    x, a = _graphs(4, 10)
    with pytest.raises(InputError, match=r"give adjacency1.*\(4, 5, 3\), of shape \(4, 5, 5\)"):
        gnn.kernel_fn(x)
    with pytest.raises(InputError, match=r"give adjacency2.*of shape \(2, 5, 5\)"):
        gnn.kernel_fn(x, x[:2], adjacency1=a)
    with pytest.raises(InputError, match="adjacency2 was given without x2"):
        gnn.kernel_fn(x, adjacency1=a, adjacency2=a)
    params = gnn.init(jax.random.key(0), (NODES, C))
    with pytest.raises(InputError, match=r"give adjacency.*\(4, 5, 5\)"):
        gnn.apply(params, x)
    with pytest.raises(InputError, match=r"expected \(4, 5, 5\)"):
        gnn.apply(params, x, adjacency=a[:2])
    fc = ntkdsl.compile("net fc { Dense(4); Relu; Dense(1) }")
    with pytest.raises(InputError, match=r"adjacency1 was given \(shape \(4, 5, 5\)\), but net "
                                         "'fc' has no Aggregate"):
        fc.kernel_fn(x[:, 0], adjacency1=a)
    pf = fc.init(jax.random.key(0), (C,))
    with pytest.raises(InputError, match="has no Aggregate"):
        fc.apply(pf, x[:, 0], adjacency=a)
    with pytest.raises(InputError, match=r"x1 has shape \(4, 3\), but net 'gnn' expects"):
        gnn.kernel_fn(x[:, 0], adjacency1=a)


def test_aggregate_needs_one_node_axis():
    m = ntkdsl.compile("net g { Dense(4); Aggregate; Relu; Flatten; Dense(1) }")
    with pytest.raises(InputError, match=r"\(2, 3, 3, 2\).*expected node features of shape "
                                         r"\(n, nodes, channels\)"):
        m.kernel_fn(np.ones((2, 3, 3, 2)), adjacency1=np.ones((2, 3, 3)))
    with pytest.raises(InputError, match=r"one node axis, but its input has shape \(3, 3, 4\)"):
        m.init(jax.random.key(0), (3, 3, 2))


def test_bad_normalize_argument_is_located():
    with pytest.raises(ntkdsl.SpecError, match="'normalize' must be true or false") as e:
        ntkdsl.compile("net g {\n  Dense(4)\n  Aggregate(normalize = 1)\n  Dense(1) }")
    assert e.value.line == 3


def test_store_refuses_graph_nets(tmp_path, gnn):
    from ntkdsl.engine import compute_kernel_store

    x, _ = _graphs(3, 11)
    with pytest.raises(InputError, match="kernel store does not support graph inputs"):
        compute_kernel_store(gnn, x, store=tmp_path / "k.zarr")


# ---- CLI -------------------------------------------------------------------------------


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ntkdsl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_kernel_and_predict_with_adjacencies(tmp_path, gnn):
    spec = tmp_path / "gnn.ntk"
    spec.write_text(GNN)
    x, a = _graphs(5, 12)
    y = np.random.default_rng(13).normal(size=(5, 1))
    for name, v in (("x1", x[:3]), ("x2", x[3:]), ("a1", a[:3]), ("y", y[:3])):
        np.save(tmp_path / f"{name}.npy", v)
    EdgeList.from_dense(a[3:]).save(tmp_path / "a2.npz")
    r = _cli("kernel", spec, "--x1", "x1.npy", "--x2", "x2.npy", "--adjacency1", "a1.npy",
             "--adjacency2", "a2.npz", "-o", "k.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "k.npz") as z:
        want = gnn.kernel_fn(x[:3], x[3:], adjacency1=a[:3], adjacency2=a[3:])
        assert np.allclose(z["ntk"], want.ntk, rtol=1e-12)
    r = _cli("predict", spec, "--x-train", "x1.npy", "--y-train", "y.npy", "--x-test",
             "x2.npy", "--adjacency-train", "a1.npy", "--adjacency-test", "a2.npz",
             "--diag-reg", "1e-3", "-o", "p.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fn = gnn.predict_fn(x[:3], y[:3], adjacency_train=a[:3], diag_reg=1e-3)
    with np.load(tmp_path / "p.npz") as z:
        assert np.allclose(z["mean"][0], fn(x[3:], np.inf, adjacency_test=a[3:]).mean)
    # errors: one line, exit 2, naming the flags and shapes
    r = _cli("kernel", spec, "--x1", "x1.npy", "-o", "k2.npz", cwd=tmp_path)
    assert r.returncode == 2 and "--adjacency1" in r.stderr and "(3, 5, 5)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    np.save(tmp_path / "bad.npy", a[:2])
    r = _cli("kernel", spec, "--x1", "x1.npy", "--adjacency1", "bad.npy", "-o", "k2.npz",
             cwd=tmp_path)
    assert r.returncode == 2 and "--adjacency1 has shape (2, 5, 5)" in r.stderr
    assert "expected (3, 5, 5)" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_kernel_adjacency_errors_in_process(tmp_path, capsys):
    """The same checks without a subprocess (fast): exit 2, one line."""
    from ntkdsl.cli import main

    spec = tmp_path / "gnn.ntk"
    spec.write_text(GNN)
    fc = tmp_path / "fc.ntk"
    fc.write_text("net fc { Dense(4); Relu; Dense(1) }")
    x, a = _graphs(3, 14)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "xf.npy", x[:, 0])
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "sq.npy", a[:, :, :4])
    cases = [
        ([spec, "--x1", tmp_path / "x.npy"], "give --adjacency1"),
        ([spec, "--x1", tmp_path / "x.npy", "--adjacency1", tmp_path / "sq.npy"],
         "--adjacency1 has shape (3, 5, 4) (not square)"),
        ([fc, "--x1", tmp_path / "xf.npy", "--adjacency1", tmp_path / "a.npy"],
         "--adjacency1 was given (shape (3, 5, 5)), but net 'fc' has no Aggregate"),
        ([spec, "--x1", tmp_path / "x.npy", "--adjacency1", tmp_path / "a.npy",
          "--adjacency2", tmp_path / "a.npy"], "--adjacency2 was given without --x2"),
    ]
    for args, text in cases:
        code = main(["kernel", *map(str, args), "-o", str(tmp_path / "k.npz")])
        err = capsys.readouterr().err
        assert code == 2 and text in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_aggregate_in_a_repeat_equals_the_unrolled_net():
    """``repeat`` (which the kernel function and the finite net may run as a loop) keeps
    each graph's adjacency: the same kernels and outputs as the net written out."""
    block = "Aggregate(normalize = true); Dense(8, W_std = 1.4, b_std = 0.1); Relu"
    head = "Dense(8, W_std = 1.4, b_std = 0.1); Relu"
    looped = ntkdsl.compile(f"net g {{ {head}; repeat 3 {{ {block} }}; GlobalSumPool; "
                            "Dense(1) }")
    unrolled = ntkdsl.compile(f"net g {{ {head}; {block}; {block}; {block}; GlobalSumPool; "
                              "Dense(1) }")
    x, a = _graphs(4, 15)
    k1, k2 = looped.kernel_fn(x, adjacency1=a), unrolled.kernel_fn(x, adjacency1=a)
    for g in ("nngp", "ntk"):
        w = getattr(k2, g)
        assert np.abs(getattr(k1, g) - w).max() <= 1e-12 * np.abs(w).max()
    params = looped.init(jax.random.key(1), (NODES, C))
    y = looped.apply(params, x, adjacency=a)
    yj = jax.jit(lambda p, xx, aa: looped.apply(p, xx, adjacency=aa))(params, x, a)
    assert y.shape == (4, 1) and np.allclose(y, yj)
    # each graph's output reads its own adjacency only
    assert np.allclose(looped.apply(params, x[2:3], adjacency=a[2:3]), y[2:3])


def test_padding_with_isolated_zero_nodes_changes_nothing_without_biases():
    """The documented way to mix graph sizes: isolated nodes of zero features stay 0 in a
    bias-free net whose nonlinearities vanish at 0, so a sum readout is unchanged."""
    m = ntkdsl.compile("net g { Dense(8, W_std = 1.4); Relu; Aggregate; Dense(8, W_std = 1.3); "
                       "Erf; Aggregate(normalize = true); Dense(8); Gelu; GlobalSumPool; "
                       "Dense(1) }")
    x, a = _graphs(3, 16)
    xp = np.concatenate([x, np.zeros((3, 2, C))], axis=1)
    ap = np.zeros((3, NODES + 2, NODES + 2))
    ap[:, :NODES, :NODES] = a
    k, kp = m.kernel_fn(x, adjacency1=a), m.kernel_fn(xp, adjacency1=ap)
    for g in ("nngp", "ntk"):
        w = getattr(k, g)
        assert np.abs(getattr(kp, g) - w).max() <= 1e-12 * np.abs(w).max()
