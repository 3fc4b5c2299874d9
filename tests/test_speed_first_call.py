"""What a first kernel call traces and compiles (compiler/kernels.py, compile_cache.py).

Counted, never timed: a fully connected chunked tile traces the net once; a tiled
symmetric kernel's two tile functions are compiled together (prepare_all) into the
executables the tiles then use, with no further compile and the same bits.
"""

import numpy as np
import pytest

import ntkdsl
from ntkdsl import compile_cache as cc
from ntkdsl.compiler import covariance as cv
from ntkdsl.compiler import kernels


def _count_net_traces(monkeypatch, p):
    """Count the runs of the whole net ``p`` (``cv.run`` on its top plan) while tracing."""
    calls = []
    run = cv.run

    def counting(plan, k):
        if plan is p:
            calls.append(k.rows.shape if k.rows is not None else None)
        return run(plan, k)

    monkeypatch.setattr(cv, "run", counting)
    return calls


@pytest.mark.parametrize("n2", [None, 5])
def test_chunked_fully_connected_tile_traces_the_net_once(monkeypatch, n2):
    model = ntkdsl.compile("net t { repeat 3 { Dense(8, W_std=1.5, b_std=0.1); Relu } Dense(1) }")
    p = kernels.get_plan(model, (3,))
    calls = _count_net_traces(monkeypatch, p)
    x = np.random.default_rng(0).standard_normal((11, 3))
    x2 = np.random.default_rng(1).standard_normal((5, 3))
    fn = kernels.build_tile_fn(p, 11, n2, ("nngp", "ntk"), chunk=7)  # several chunks
    k0, v1, v2 = kernels.fc_inputs(x, None if n2 is None else x2)
    args = ((k0, v1),) if n2 is None else ((k0, v1), v2)
    fn.lower(*args)
    assert len(calls) == 1
    # and the result is the unchunked one
    ref = kernels.build_tile_fn(p, 11, n2, ("nngp", "ntk"), chunk=10**6)
    for a, b in zip(fn(*args), ref(*args)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=0)


@pytest.mark.parametrize("spec, shape", [
    ("net t { Conv(3, 3, padding=SAME, W_std=1.5, b_std=0.1); Relu; GlobalAvgPool; Dense(1) }",
     (4, 4, 2)),
    ("net t { Dense(6, W_std=1.5, b_std=0.1); Erf; Dense(1) }", (3,)),
])
def test_symmetric_tiles_compiled_together_then_used(monkeypatch, no_disk_cache, spec, shape):
    x = np.random.default_rng(0).standard_normal((8, *shape))
    model = ntkdsl.compile(spec)
    fc = len(shape) == 1
    kernels._tile_fn_cached.cache_clear()
    # the Gram matrix's executables are per shape and process-wide: an earlier test in
    # this worker may have compiled this shape already
    monkeypatch.setattr(kernels._fc_gram, "_compiled", {})
    k = model.kernel_fn(x, batch_size=3)  # 3 row blocks: diagonal and off-diagonal tiles
    s = cc.stats()
    assert s.compiles == 2 + fc  # the two tile functions (+ the Gram matrix), nothing more
    # the same bits as compiling each function at its first tile
    monkeypatch.setattr(kernels, "_prepare_symmetric_tiles", lambda *a: None)
    kernels._tile_fn_cached.cache_clear()
    cc.reset_stats()
    ref = model.kernel_fn(x, batch_size=3)
    assert cc.stats().compiles == 2
    for g in ("nngp", "ntk"):
        assert np.array_equal(getattr(k, g), getattr(ref, g))


def test_prepare_all_keeps_the_callers_x64(no_disk_cache):
    """Each compile thread sees the caller's thread-local x64 setting, not the global one."""
    import jax
    import jax.numpy as jnp

    f = cc.CachedFunction(lambda: jax.jit(lambda a: a + jnp.arange(3.0)), ("x64-probe",))
    g = cc.CachedFunction(lambda: jax.jit(lambda a: a * 2), ("x64-probe-2",))
    spec = jax.ShapeDtypeStruct((3,), np.float32)
    for x64, dtype in ((False, np.float32), (True, np.float64)):
        cc.reset_stats()
        kernels._tile_fn_cached.cache_clear()
        with jax.enable_x64(x64):
            f._compiled.clear()
            g._compiled.clear()
            cc.prepare_all([(f, (spec,)), (g, (spec,))])
            assert cc.stats().compiles == 2
            out = f(np.ones(3, np.float32))  # the prepared executable, no new compile
        assert cc.stats().compiles == 2
        assert out.dtype == dtype


def test_automatic_tiles_split_the_rows_evenly(monkeypatch):
    """64 rows with at most 45 per tile: two blocks of 32 (not 45 + 19 padded to 45, which
    computed 4095 pairs for 2080)."""
    model = ntkdsl.compile("net t { Conv(2, 3, padding=SAME); Relu; GlobalAvgPool; Dense(1) }")
    x = np.random.default_rng(0).standard_normal((64, 3, 3, 1))
    monkeypatch.setattr(kernels, "responsive_batch_size", lambda *a, **k: 45)
    seen = []
    real = kernels._tiled

    def spy(model, p, a1, a2, b, *rest, **kw):
        seen.append(b)
        return real(model, p, a1, a2, b, *rest, **kw)

    monkeypatch.setattr(kernels, "_tiled", spy)
    k = model.kernel_fn(x)
    assert seen == [32]
    ref = model.kernel_fn(x, batch_size=64)  # one tile
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(k, g), getattr(ref, g), rtol=1e-14, atol=0)
