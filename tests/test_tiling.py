"""Tiling: ragged tiles, symmetric tiles once, results equal to the untiled ones exactly."""

from __future__ import annotations

import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler import kernels

RNG = np.random.default_rng(1)

NETS = {
    "fc": ("net fc { Dense(16, W_std=1.5, b_std=0.1); Relu; Dense(16, W_std=1.5); Erf; "
           "Dense(1) }", (7,)),
    "flatten": ("net fl { Conv(8, 3, W_std=1.4, b_std=0.1); Relu; Conv(8, 3); Relu; Flatten; "
                "Dense(1) }", (5, 4, 2)),
    "gap": ("net g { Conv(8, 3, W_std=1.4, b_std=0.1); Relu; AvgPool(2, padding=SAME); "
            "Conv(8, 3); Relu; GlobalAvgPool; Dense(1) }", (5, 4, 2)),
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("with_x2", [False, True])
def test_tiled_equals_untiled_with_ragged_tiles(name, with_x2):
    spec, shape = NETS[name]
    m = ntkdsl.compile(spec)
    x1 = RNG.standard_normal((11, *shape))
    x2 = RNG.standard_normal((7, *shape)) if with_x2 else None
    whole = m.kernel_fn(x1, x2)
    tiled = m.kernel_fn(x1, x2, batch_size=4, progress=False)  # 11 = 4 + 4 + 3
    for a, b in ((tiled.nngp, whole.nngp), (tiled.ntk, whole.ntk)):
        a, b = np.asarray(a), np.asarray(b)
        # equal to the last bits: XLA's vectorised and remainder loops may round
        # differently (FMA contraction), and where the split falls depends on the tile
        # shape. At correlation 1 the printed closed forms are exact (printer._as_det), so
        # this holds for full spatial covariances (GAP) too (it was 1e-8 before)
        tol = 1e-14
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max())


def test_symmetric_tiles_are_computed_once(monkeypatch):
    m = ntkdsl.compile(NETS["fc"][0])
    x = RNG.standard_normal((10, 7))
    calls = []
    real = kernels.build_tile_fn

    def counting(p, n1, n2, gets, chunk=None):
        fn = real(p, n1, n2, gets, chunk)

        def wrapped(*a):
            calls.append((n1, n2))
            return fn(*a)

        return wrapped

    monkeypatch.setattr(kernels, "build_tile_fn", counting)
    m.kernel_fn(x, batch_size=3, progress=False)  # 4 blocks: 4 diagonal + 6 off-diagonal
    assert calls.count((3, None)) == 4
    assert calls.count((3, 3)) == 6


def test_default_batch_size_tiles_when_memory_is_short():
    m = ntkdsl.compile(NETS["gap"][0])
    p = kernels.get_plan(m, NETS["gap"][1])
    assert kernels.default_batch_size(p, 100, 100, True, 8, memory=1 << 40) is None
    b = kernels.default_batch_size(p, 50000, 50000, True, 8, memory=1 << 32)
    assert b is not None and 1 <= b < 50000
    assert kernels.tile_bytes(p, b, b, False, 8) <= (1 << 32) // 4
    assert kernels.tile_bytes(p, b + 1, b + 1, False, 8) > (1 << 32) // 4


def test_progress_bar_on_many_tiles(capsys):
    m = ntkdsl.compile(NETS["fc"][0])
    x = RNG.standard_normal((9, 7))
    m.kernel_fn(x, get="nngp", batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "kernel tiles" in err and "15/15" in err


CHUNK_NETS = {
    **NETS,
    "residual": ("net r { Conv(8, 3, W_std=1.3); Residual { Relu; Conv(8, 3) } "
                 "AvgPool(2); Erf; Flatten; Dense(1) }", (4, 4, 2)),
    "pointwise_after_gap": ("net z { Conv(4, 2); GlobalAvgPool; Relu }", (3, 3, 2)),
}


@pytest.mark.parametrize("name", sorted(CHUNK_NETS))
@pytest.mark.parametrize("gets", [("nngp", "ntk"), ("nngp",)])
def test_chunked_pair_list_equals_one_chunk(name, gets):
    """Symmetric tiles in chunks of pairs (ragged last chunk, covariances computed once
    and replayed) give the same kernels as the whole pair list at once."""
    spec, shape = CHUNK_NETS[name]
    m = ntkdsl.compile(spec)
    x = RNG.standard_normal((9, *shape))  # 45 pairs
    p = kernels.get_plan(m, shape)
    whole = kernels.build_tile_fn(p, 9, None, gets, chunk=45)(x if len(shape) > 1 else
                                                              kernels.fc_inputs(x, None)[:2])
    for chunk in (1, 4, 7):
        fn = kernels.build_tile_fn(p, 9, None, gets, chunk=chunk)
        got = fn(x if len(shape) > 1 else kernels.fc_inputs(x, None)[:2])
        for a, b in zip(got, whole):
            a, b = np.asarray(a), np.asarray(b)
            assert a.shape == b.shape == (9, 9)
            np.testing.assert_array_equal(a, a.T)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-14 * max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("name", ["fc", "gap", "residual"])
def test_chunked_grid_equals_one_chunk(name):
    """A tile with x2 given, as a chunked list of all its pairs, equals one chunk."""
    spec, shape = CHUNK_NETS[name]
    m = ntkdsl.compile(spec)
    x1, x2 = RNG.standard_normal((5, *shape)), RNG.standard_normal((4, *shape))
    p = kernels.get_plan(m, shape)
    if len(shape) == 1:
        k0, v1, v2 = kernels.fc_inputs(x1, x2)
        args = ((k0, v1), v2)
    else:
        args = (x1, x2)
    gets = ("nngp", "ntk")
    whole = kernels.build_tile_fn(p, 5, 4, gets, chunk=20)(*args)
    got = kernels.build_tile_fn(p, 5, 4, gets, chunk=3)(*args)  # 20 = 6 * 3 + 2
    for a, b in zip(got, whole):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape == (5, 4)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14 * np.abs(b).max())


def test_tile_fn_takes_raw_fc_inputs():
    """build_tile_fn of a fully connected net also takes raw (n, features) arrays."""
    spec, shape = NETS["fc"]
    m = ntkdsl.compile(spec)
    x1, x2 = RNG.standard_normal((6, *shape)), RNG.standard_normal((3, *shape))
    p = kernels.get_plan(m, shape)
    for a, b in ((kernels.build_tile_fn(p, 6, 3, ("nngp", "ntk"))(x1, x2), m.kernel_fn(x1, x2)),
                 (kernels.build_tile_fn(p, 6, None, ("nngp", "ntk"))(x1), m.kernel_fn(x1))):
        # relative to the largest entry: an entry near 0 is a cancellation whose own
        # relative error can exceed 1e-13 for some draws of the module's RNG
        for got, want in ((a[0], b.nngp), (a[1], b.ntk)):
            np.testing.assert_allclose(got, want, rtol=1e-13,
                                       atol=1e-13 * float(np.max(np.abs(want))))
