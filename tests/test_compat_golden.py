"""ntkdsl.compat against neural-tangents 0.6.5: kernels, init/apply structure, and to_spec.

Every net of ``tests/compat_nets.py`` is built here with ``ntkdsl.compat.stax`` and
compared with the goldens ``tests/golden/make_golden_compat.py`` wrote by running
the same builder with the peer's ``stax`` (float64): kernels to 1e-6 relative to the
largest entry, the params' structure and shapes exactly, and ``apply_fn`` on the
peer's own params to 1e-6. The spec printed by ``to_spec`` compiles to the same
kernels bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from compat_nets import NETS, structure

import ntkdsl
from ntkdsl.compat import stax, to_spec

GOLDEN = Path(__file__).parent / "golden" / "compat"
PYTHON_ONLY = {"fc_python_elementwise"}


#: the nets every default run checks (one of each kind); the others run with -m slow
DEFAULT = {"fc_dense_relu", "fc_branches", "fc_python_elementwise", "fc_layernorm_dropout",
           "fc_standard", "cnn_conv_pool", "attention_softmax", "graph_aggregate"}
#: to_spec compiles every net a second time: two in the default run
SPEC_DEFAULT = {"fc_branches", "cnn_conv_pool"}


def _params(names, default=DEFAULT):
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _close(got, want, what: str, rtol: float = 1e-6) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(np.abs(want).max(), 1e-300)
    err = np.abs(got - want).max() / scale
    assert err <= rtol, f"{what}: max relative error {err:.3g}\n got {got}\nwant {want}"


def _load(name):
    return np.load(GOLDEN / f"{name}.npz")


def _patterns(g, options):
    """The peer's graph keywords for kernel_fn (x1-x2, x1-x1) and apply_fn."""
    if "graph" not in options:
        return {}, {}, {}
    p1, p2 = g["pattern1"], g["pattern2"]
    return {"pattern": (p1, p2)}, {"pattern": (p1, p1)}, {"pattern": p1}


def test_every_net_has_a_golden():
    missing = [n for n in NETS if not (GOLDEN / f"{n}.npz").exists()]
    assert not missing, f"run make_golden_compat.py for {missing}"


@pytest.mark.parametrize("name", _params(NETS))
def test_kernels_match_peer(name):
    g = _load(name)
    build, _, options = NETS[name]
    _, _, kernel_fn = build(stax)
    kw12, kw11, _ = _patterns(g, options)
    k12 = kernel_fn(g["x1"], g["x2"], **kw12)
    _close(k12.nngp, g["nngp_12"], f"{name} nngp_12")
    _close(k12.ntk, g["ntk_12"], f"{name} ntk_12")
    if "no_11" not in options:  # the peer's variances are NaN there
        for i in (1, 2):
            want = g[f"cov{i}"]
            if want.ndim == 2:  # the peer kept the whole batch (diagonal_batch=False)
                want = np.diagonal(want)
            _close(getattr(k12, f"cov{i}"), want, f"{name} cov{i}")
        nngp, ntk = kernel_fn(g["x1"], None, ("nngp", "ntk"), **kw11)
        _close(nngp, g["nngp_11"], f"{name} nngp_11")
        _close(ntk, g["ntk_11"], f"{name} ntk_11")


@pytest.mark.parametrize("name", _params(NETS))
def test_init_apply_match_peer(name):
    g = _load(name)
    build, shape, options = NETS[name]
    init_fn, apply_fn, _ = build(stax)
    kw_apply = _patterns(g, options)[2]
    if "random_apply" in options:  # the peer's dropout masks for the same key
        kw_apply["rng"] = jax.random.PRNGKey(3)
    out_shape, params = init_fn(jax.random.PRNGKey(0), (-1, *shape))
    assert tuple(out_shape) == tuple(g["out_shape"])
    assert structure(params) == str(g["structure"])
    leaves, treedef = jax.tree_util.tree_flatten(params)
    assert len(leaves) == int(g["n_leaves"])
    for i, leaf in enumerate(leaves):  # the same key draws the peer's very params
        np.testing.assert_array_equal(np.asarray(leaf), g[f"leaf_{i}"])
    peer_params = jax.tree_util.tree_unflatten(
        treedef, [g[f"leaf_{i}"] for i in range(len(leaves))])
    _close(apply_fn(peer_params, g["x1"], **kw_apply), g["apply"], f"{name} apply")


@pytest.mark.parametrize("name", _params((n for n in NETS if n not in PYTHON_ONLY),
                                         SPEC_DEFAULT))
def test_to_spec_gives_the_same_kernels_exactly(name):
    g = _load(name)
    build, shape, options = NETS[name]
    net = build(stax)
    text = to_spec(net, shape)
    model = ntkdsl.compile(text)
    kw12, kw11, _ = _patterns(g, options)
    for x2, kw in ((g["x2"], kw12), (None, kw11)):
        want = net[2](g["x1"], x2, **kw)
        adj = {} if not kw else {"adjacency1": kw["pattern"][0],
                                 "adjacency2": None if x2 is None else kw["pattern"][1]}
        got = model.kernel_fn(g["x1"], x2, **adj)
        np.testing.assert_array_equal(got.nngp, want.nngp)
        np.testing.assert_array_equal(got.ntk, want.ntk)
