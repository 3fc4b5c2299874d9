"""The tiles of a tiled kernel computed by several threads (compiler/kernels.py: _tiled).

The results must not depend on how many threads computed them, and errors must
surface in the caller as they do with one thread.
"""

import threading

import numpy as np
import pytest

import ntkdsl
from ntkdsl.compiler import kernels
from ntkdsl.diagnostics import InputError

CONV = "net t { Conv(4, 3, padding=SAME, W_std=1.5, b_std=0.1); Relu; GlobalAvgPool; Dense(1) }"
FC = "net t { repeat 2 { Dense(16, W_std=1.5, b_std=0.1); Relu } Dense(1) }"


@pytest.mark.parametrize("spec, shape, x2", [(CONV, (4, 4, 1), False), (CONV, (4, 4, 1), True),
                                              (FC, (5,), False), (FC, (5,), True)])
def test_threads_give_the_single_thread_result(monkeypatch, spec, shape, x2):
    model = ntkdsl.compile(spec)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, *shape))
    xb = rng.standard_normal((30, *shape)) if x2 else None
    names = []
    real = kernels.tile_kernels

    def spy(*a, **k):
        names.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(kernels, "tile_kernels", spy)
    monkeypatch.setattr(kernels, "tile_threads", lambda: 2)
    k2 = model.kernel_fn(x, xb, batch_size=12)
    assert len(names) > 2 and all(n.startswith("ntkdsl-tile") for n in names)
    names.clear()
    monkeypatch.setattr(kernels, "tile_threads", lambda: 1)
    k1 = model.kernel_fn(x, xb, batch_size=12)
    assert names and not any(n.startswith("ntkdsl-tile") for n in names)
    for g in ("nngp", "ntk"):
        # the same tiles whoever computes them: the same bits
        np.testing.assert_array_equal(getattr(k2, g), getattr(k1, g))
    ref = model.kernel_fn(x, xb, batch_size=1000)  # one tile
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(k2, g), getattr(ref, g), rtol=1e-13, atol=1e-300)


def test_a_failing_tile_raises_in_the_caller_and_stops_the_rest(monkeypatch):
    model = ntkdsl.compile(CONV)
    x = np.random.default_rng(2).standard_normal((40, 4, 4, 1))
    monkeypatch.setattr(kernels, "tile_threads", lambda: 2)
    calls = []
    real = kernels.tile_kernels

    def failing(model, rows1, rows2, *a, **k):
        calls.append(1)
        res = real(model, rows1, rows2, *a, **k)
        if len(calls) == 2:
            res = {g: np.full_like(v, np.nan) for g, v in res.items()}
        return res

    monkeypatch.setattr(kernels, "tile_kernels", failing)
    with pytest.raises(InputError, match="non-finite entries"):
        model.kernel_fn(x, batch_size=5)  # 36 tiles
    assert len(calls) < 36  # the tiles not started were cancelled


@pytest.mark.parametrize("spec, shape", [(CONV, (4, 4, 1)), (FC, (5,))])
def test_threads_share_one_compiled_tile_function(monkeypatch, no_disk_cache, spec, shape):
    """A grid's tiles are one function, compiled once before the threads start (two
    threads asking the function cache at once would each build and compile their own)."""
    model = ntkdsl.compile(spec)  # a new net: nothing compiled for it yet
    rng = np.random.default_rng(3)
    monkeypatch.setattr(kernels, "tile_threads", lambda: 2)
    model.kernel_fn(rng.standard_normal((40, *shape)), rng.standard_normal((30, *shape)),
                    batch_size=10)
    # the tile function once, and for the fully connected net its Gram function
    assert no_disk_cache.stats().compiles == (1 if spec is CONV else 2)
