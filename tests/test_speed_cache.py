"""The persistent compile cache (ntkdsl/compile_cache.py) and the computed pair lists.

Hits and compiles are counted (``compile_cache.stats()``), never timed. The
subprocess tests pin the code fingerprint, so that an edit of the package while
the test runs cannot make the second process miss.
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdsl import compile_cache as cc
from ntkdsl.compiler import kernels

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ntkdsl
    from ntkdsl import compile_cache as cc
    cc._fingerprint = "pinned-for-test"
    spec = "net t { Dense(16, W_std=1.5, b_std=0.1); Relu; Dense(16, W_std=1.5); Erf; Dense(1) }"
    x = np.random.default_rng(0).standard_normal((7, 5))
    k = ntkdsl.compile(spec).kernel_fn(x, x[:3])
    c = ntkdsl.compile("net u { Conv(4, 3, padding=SAME); Relu; GlobalAvgPool; Dense(1) }")
    kc = c.kernel_fn(np.random.default_rng(1).standard_normal((int(sys.argv[1]), 4, 4, 2)))
    s = cc.stats()
    print(json.dumps({"hits": s.hits, "compiles": s.compiles, "writes": s.writes,
                      "errors": s.errors,
                      "values": [k.nngp.tolist(), k.ntk.tolist(), kc.ntk.tolist()]}))
""")


def _env(cache):
    env = dict(os.environ, NTKDSL_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT),
               TF_CPP_MIN_LOG_LEVEL="3")
    return env


def _worker(cache, n=3):
    r = subprocess.run([sys.executable, "-c", WORKER, str(n)], capture_output=True, text=True,
                       env=_env(cache), cwd=ROOT, check=False, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def private_cache(tmp_path):
    """This process's cache in a fresh directory, restored afterwards."""
    d = tmp_path / "cache"
    cc.set_cache_dir(d)
    cc.reset_stats()
    yield d
    cc.set_cache_dir(None)


def test_second_process_loads_instead_of_compiling(tmp_path):
    first = _worker(tmp_path / "c")
    assert first["hits"] == 0 and first["compiles"] >= 2 and first["writes"] == first["compiles"]
    second = _worker(tmp_path / "c")
    assert second["compiles"] == 0 and second["errors"] == 0
    assert second["hits"] == first["compiles"]
    assert second["values"] == first["values"]  # bit for bit: the same executable
    off = _worker("off")
    assert off["hits"] == 0 and off["writes"] == 0 and off["compiles"] >= 2
    assert off["values"] == first["values"]


@pytest.mark.slow
def test_two_processes_writing_at_once(tmp_path):
    cache = tmp_path / "c"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(cache), cwd=ROOT)
             for n in (3, 3, 4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert all(o["errors"] == 0 for o in outs)
    assert outs[0]["values"] == outs[1]["values"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]  # no partial files
    again = _worker(cache, 4)
    assert again["compiles"] == 0 and again["errors"] == 0
    assert again["values"] == outs[2]["values"]


def _square_plus(key="square"):
    return cc.CachedFunction(lambda: jax.jit(lambda a, b: (a * a + b, jnp.sin(a))), (key,))


def _entries(d):
    return sorted(p for p in d.iterdir() if p.suffix == ".xla")


def test_entry_reused_and_identical_in_process(private_cache):
    a, b = np.linspace(0, 1, 5), np.ones(5)
    r1 = _square_plus()(a, b)
    assert cc.stats().compiles == 1 and cc.stats().writes == 1
    assert len(_entries(private_cache)) == 1
    r2 = _square_plus()(a, b)  # a new object: only the disk entry can serve it
    assert cc.stats().hits == 1 and cc.stats().compiles == 1
    for u, v in zip(r1, r2):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_array_equal(np.asarray(r1[0]), a * a + b)
    _square_plus()(np.ones(6), np.ones(6))  # another shape: another entry
    assert cc.stats().compiles == 2 and len(_entries(private_cache)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "wrong key"])
def test_corrupt_entry_is_ignored_and_rewritten(private_cache, damage):
    a = np.arange(4.0)
    want = np.asarray(_square_plus()(a, a)[0])
    (path,) = _entries(private_cache)
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
    elif damage == "empty":
        data = b""
    else:  # a whole entry, but of another key (a hash collision or a renamed file)
        other = _square_plus("other")
        other(a, a)
        data = _entries(private_cache)[0 if _entries(private_cache)[1] == path else 1].read_bytes()
    path.write_bytes(data)
    before = cc.stats()
    got = np.asarray(_square_plus()(a, a)[0])
    after = cc.stats()
    np.testing.assert_array_equal(got, want)
    assert after.errors == before.errors + 1 and after.compiles == before.compiles + 1
    assert _square_plus()(a, a) is not None and cc.stats().hits == before.hits + 1  # rewritten


def test_entry_with_foreign_pickle_is_refused(private_cache, tmp_path):
    a = np.arange(3.0)
    _square_plus()(a, a)
    (path,) = _entries(private_cache)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    key = _square_plus()._key_text(cc.signature((a, a)))
    path.write_bytes(cc._encode(key, [0, 0], pickle.dumps(Evil())))
    got = np.asarray(_square_plus()(a, a)[0])
    np.testing.assert_array_equal(got, a * a + a)
    assert not marker.exists()
    assert cc.stats().errors == 1


def test_off_switch(tmp_path, monkeypatch):
    monkeypatch.setenv(cc.ENV_DIR, "off")
    assert cc.cache_dir() is None
    monkeypatch.setenv(cc.ENV_DIR, str(tmp_path / "e"))
    assert cc.cache_dir() == tmp_path / "e"
    cc.set_cache_dir(False)
    try:
        cc.reset_stats()
        _square_plus("off")(np.ones(2), np.ones(2))
        assert cc.stats().compiles == 1 and cc.stats().writes == 0
        assert not (tmp_path / "e").exists()
    finally:
        cc.set_cache_dir(None)
    monkeypatch.delenv(cc.ENV_DIR)
    assert cc.cache_dir() == cc.default_cache_dir()


def test_directory_writable_by_others_is_not_used(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    cc.set_cache_dir(d)
    try:
        cc.reset_stats()
        with pytest.warns(RuntimeWarning, match="writable by others"):
            _square_plus("unsafe")(np.ones(2), np.ones(2))
        assert cc.stats().writes == 0 and not _entries(d)
    finally:
        cc.set_cache_dir(None)


def test_prune_removes_least_recently_used(private_cache):
    for n in range(3):
        _square_plus()(np.ones(n + 1), np.ones(n + 1))
    entries = _entries(private_cache)
    for i, p in enumerate(entries):
        os.utime(p, (1000 + i, 1000 + i))
    keep = entries[-1]
    removed = cc.prune(private_cache, max_bytes=keep.stat().st_size)
    assert removed == 2 and _entries(private_cache) == [keep]


def test_jax_configuration_untouched(private_cache):
    before = jax.config.jax_compilation_cache_dir
    _square_plus()(np.ones(2), np.ones(2))
    assert jax.config.jax_compilation_cache_dir == before


def test_traced_calls_bypass_the_cache(private_cache):
    f = _square_plus()
    out = jax.jit(lambda a: f(a, a)[0])(np.ones(3))
    np.testing.assert_array_equal(np.asarray(out), 2 * np.ones(3))
    assert cc.stats().compiles == 0
    assert not private_cache.exists() or not _entries(private_cache)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 3000])
def test_computed_pair_list_is_the_upper_triangle(n):
    """The folded list holds every pair i <= j, and the mirror gather's position of each
    pair is a position holding that pair (the odd middle row's repeats are never read)."""
    rows, cols = np.triu_indices(n)
    m = kernels.symmetric_pairs(n)
    assert m - len(rows) == (n % 2) * (n + 1) // 2
    for x64 in (True, False):
        with jax.enable_x64(x64):
            q = jnp.arange(m, dtype=jnp.int32)
            r, c = (np.asarray(a) for a in jax.jit(lambda q: kernels._pair_of(q, n, None))(q))
            assert np.all(r <= c) and np.all(c < n)
            assert {*zip(r.tolist(), c.tolist())} == {*zip(rows.tolist(), cols.tolist())}
            pos = np.asarray(jax.jit(lambda a, b: kernels._pair_position(a, b, n))(
                jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32)))
            assert len(set(pos.tolist())) == len(rows) and pos.max() < m
            np.testing.assert_array_equal(r[pos], rows)
            np.testing.assert_array_equal(c[pos], cols)
    r, c = kernels._pair_of(jnp.arange(12), 3, 4)
    np.testing.assert_array_equal(np.asarray(r), np.repeat(np.arange(3), 4))
    np.testing.assert_array_equal(np.asarray(c), np.tile(np.arange(4), 3))
