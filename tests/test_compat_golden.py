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


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if "slow" in NETS[n][2] else n
            for n in names]


def _close(got, want, what: str, rtol: float = 1e-6) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(np.abs(want).max(), 1e-300)
    err = np.abs(got - want).max() / scale
    assert err <= rtol, f"{what}: max relative error {err:.3g}\n got {got}\nwant {want}"


def _load(name):
    return np.load(GOLDEN / f"{name}.npz")


def test_every_net_has_a_golden():
    missing = [n for n in NETS if not (GOLDEN / f"{n}.npz").exists()]
    assert not missing, f"run make_golden_compat.py for {missing}"


@pytest.mark.parametrize("name", _params(NETS))
def test_kernels_match_peer(name):
    g = _load(name)
    build, _, options = NETS[name]
    _, _, kernel_fn = build(stax)
    k12 = kernel_fn(g["x1"], g["x2"])
    _close(k12.nngp, g["nngp_12"], f"{name} nngp_12")
    _close(k12.ntk, g["ntk_12"], f"{name} ntk_12")
    if "no_11" not in options:  # the peer's variances are NaN there
        for i in (1, 2):
            want = g[f"cov{i}"]
            if want.ndim == 2:  # the peer kept the whole batch (diagonal_batch=False)
                want = np.diagonal(want)
            _close(getattr(k12, f"cov{i}"), want, f"{name} cov{i}")
        nngp, ntk = kernel_fn(g["x1"], None, ("nngp", "ntk"))
        _close(nngp, g["nngp_11"], f"{name} nngp_11")
        _close(ntk, g["ntk_11"], f"{name} ntk_11")


@pytest.mark.parametrize("name", _params(NETS))
def test_init_apply_match_peer(name):
    g = _load(name)
    build, shape, _ = NETS[name]
    init_fn, apply_fn, _ = build(stax)
    out_shape, params = init_fn(jax.random.PRNGKey(0), (-1, *shape))
    assert tuple(out_shape) == tuple(g["out_shape"])
    assert structure(params) == str(g["structure"])
    leaves, treedef = jax.tree_util.tree_flatten(params)
    assert len(leaves) == int(g["n_leaves"])
    for i, leaf in enumerate(leaves):  # the same key draws the peer's very params
        np.testing.assert_array_equal(np.asarray(leaf), g[f"leaf_{i}"])
    peer_params = jax.tree_util.tree_unflatten(
        treedef, [g[f"leaf_{i}"] for i in range(len(leaves))])
    y = apply_fn(peer_params, g["x1"])
    if "apply" in g:
        _close(y, g["apply"], f"{name} apply")
    else:  # dropout: masks are random; the shape still matches
        assert y.shape == (g["x1"].shape[0], *tuple(g["out_shape"])[1:])


@pytest.mark.parametrize("name", _params(n for n in NETS if n not in PYTHON_ONLY))
def test_to_spec_gives_the_same_kernels_exactly(name):
    g = _load(name)
    build, shape, _ = NETS[name]
    net = build(stax)
    text = to_spec(net, shape)
    model = ntkdsl.compile(text)
    for x2 in (g["x2"], None):
        want = net[2](g["x1"], x2)
        got = model.kernel_fn(g["x1"], x2)
        np.testing.assert_array_equal(got.nngp, want.nngp)
        np.testing.assert_array_equal(got.ntk, want.ntk)
