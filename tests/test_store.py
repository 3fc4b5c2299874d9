"""The kernel store: round trips against the in-memory kernels, identity checks, bad stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ntkdsl
from ntkdsl.diagnostics import InputError
from ntkdsl.engine import compute_kernel_store
from ntkdsl.store import hash_array, open_kernel, read_done

FC = """
net fc(width = 64, depth = 2) {
    repeat depth { Dense(width, W_std = 1.5, b_std = 0.1)  Erf }
    Dense(1, W_std = 1.5, b_std = 0.1)
}
"""

CNN = """
net cnn(width = 8) {
    Conv(width, 3, padding = SAME, W_std = 1.4, b_std = 0.1)
    Relu
    Flatten
    Dense(1, W_std = 1, b_std = 0.1)
}
"""


def _model(src: str, **overrides):
    return ntkdsl.compile(src, **overrides)


@pytest.fixture(scope="module")
def fc():
    return _model(FC)


@pytest.fixture(scope="module")
def xs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((37, 6)), rng.standard_normal((21, 6))


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_symmetric_round_trip_bit_identical_with_same_tiles(tmp_path, fc, xs):
    x1, _ = xs
    np.save(tmp_path / "x1.npy", x1)
    ref = fc.kernel_fn(x1, None, dtype="float64", batch_size=8)
    ks = compute_kernel_store(fc, tmp_path / "x1.npy", None, tmp_path / "k.zarr",
                              tile_size=8)
    # the store computes the upper triangle and presents the whole matrix
    assert ks.symmetric and len(ks.all_tiles()) == 5 * 6 // 2
    for g in ("nngp", "ntk"):
        got = np.asarray(getattr(ks, g)[...])
        want = np.asarray(getattr(ref, g))
        assert np.array_equal(got, want), g
        assert np.array_equal(got, got.T)
    # untiled in-memory kernel: equal to 1e-12 (the tiles see other row blocks' grams)
    whole = fc.kernel_fn(x1, None, dtype="float64")
    _close(ks.ntk[...], whole.ntk)
    _close(ks.nngp[...], whole.nngp)


def test_grid_round_trip_and_lazy_slices(tmp_path, fc, xs):
    x1, x2 = xs
    ks = compute_kernel_store(fc, x1, x2, tmp_path / "k.zarr", tile_size=8, get="ntk")
    assert ks.nngp is None and ks.keys() == ["ntk"]
    # fully connected grid tiles: the in-memory path slices one gram of all rows, a
    # store tile computes its block's gram, so they agree to rounding, not bit for bit
    ref = np.asarray(fc.kernel_fn(x1, x2, get="ntk", dtype="float64"))
    full = np.asarray(ks.ntk[...])
    _close(full, ref)
    # slicing reads part of the array, like numpy
    assert np.array_equal(np.asarray(ks.ntk[3:11, 17:]), full[3:11, 17:])
    assert np.array_equal(ks.as_dask("ntk")[:5].compute(), full[:5])
    # in-memory inputs are copied into the store so workers can read their rows
    assert (tmp_path / "k.zarr" / "inputs" / "x2").is_dir()


def test_zarr_input_and_float32(tmp_path, fc, xs):
    import zarr

    x1, _ = xs
    z = zarr.open_array(str(tmp_path / "x1.zarr"), mode="w", shape=x1.shape, chunks=(5, 6),
                        dtype="float64")
    z[...] = x1
    ks = compute_kernel_store(fc, tmp_path / "x1.zarr", None, tmp_path / "k.zarr",
                              tile_size=16, dtype="float32")
    ref = fc.kernel_fn(x1, None, dtype="float32", batch_size=16)
    assert ks.ntk.dtype == np.float32
    _close(ks.ntk[...], ref.ntk, rtol=1e-6)


def test_cnn_round_trip(tmp_path):
    m = _model(CNN)
    x = np.random.default_rng(1).standard_normal((13, 4, 4, 1))
    ks = compute_kernel_store(m, x, None, tmp_path / "k.zarr", tile_size=8)
    ref = m.kernel_fn(x, None, dtype="float64", batch_size=8)
    assert np.array_equal(np.asarray(ks.ntk[...]), np.asarray(ref.ntk))
    assert np.array_equal(np.asarray(ks.nngp[...]), np.asarray(ref.nngp))


def test_metadata_records_the_job(tmp_path, fc, xs):
    x1, _ = xs
    compute_kernel_store(fc, x1, None, tmp_path / "k.zarr", tile_size=8,
                         spec_text=FC, overrides={"width": "64"})
    md = open_kernel(tmp_path / "k.zarr").metadata
    assert md["spec_text"] == FC and md["net_name"] == "fc"
    assert md["overrides"] == {"width": "64"}
    assert md["x1"]["hash"] == hash_array(x1) and md["x2"] is None
    assert (md["dtype"], md["tile"], md["get"]) == ("float64", 8, ["nngp", "ntk"])
    assert md["ntkdsl_version"] == ntkdsl.__version__ and md["complete"] is True


def test_hash_sees_every_value_and_the_shape():
    a = np.arange(24.0).reshape(6, 4)
    b = a.copy()
    b[5, 3] += 1e-12
    assert hash_array(a) != hash_array(b)
    assert hash_array(a) != hash_array(a.reshape(4, 6))
    assert hash_array(a) == hash_array(a.copy())
    with pytest.raises(InputError, match="row 2"):
        hash_array(np.where(np.arange(6)[:, None] == 2, np.nan, a))


def test_rerun_is_a_no_op_and_a_different_job_is_refused(tmp_path, fc, xs):
    x1, x2 = xs
    path = tmp_path / "k.zarr"
    ks = compute_kernel_store(fc, x1, None, path, tile_size=8)
    before = np.asarray(ks.ntk[...])
    lines = []
    compute_kernel_store(fc, x1, None, path, tile_size=8, log=lines.append)
    assert "computing 0" in lines[0]
    cases = [
        (dict(model=fc, x1=x1 + 1e-9, tile_size=8), "x1 (inputs)"),
        (dict(model=fc, x1=x1, tile_size=4), "tile size"),
        (dict(model=fc, x1=x1, tile_size=8, dtype="float32"), "dtype"),
        (dict(model=fc, x1=x1, tile_size=8, get="ntk"), "get"),
        (dict(model=_model(FC, width=32), x1=x1, tile_size=8), "net parameters"),
        (dict(model=_model(FC.replace("Erf", "Relu")), x1=x1, tile_size=8), "layer graph"),
        (dict(model=fc, x1=x1, x2=x2, tile_size=8), "x2"),
    ]
    for kw, what in cases:
        model = kw.pop("model")
        with pytest.raises(InputError, match="holds a different job") as e:
            compute_kernel_store(model, kw.pop("x1"), kw.pop("x2", None), path, **kw)
        assert what in str(e.value)
    assert np.array_equal(np.asarray(open_kernel(path).ntk[...]), before)
    # --overwrite replaces it
    ks = compute_kernel_store(fc, x1, None, path, tile_size=4, overwrite=True)
    assert ks.metadata["tile"] == 4
    np.testing.assert_allclose(np.asarray(ks.ntk[...]), before, rtol=1e-12)


def test_unfinished_store_refused_unless_partial(tmp_path, fc, xs):
    x1, _ = xs
    path = tmp_path / "k.zarr"
    compute_kernel_store(fc, x1, None, path, tile_size=8)
    os.unlink(path / "done" / "1.3")
    with pytest.raises(InputError, match="unfinished: 1 of 15 tiles missing"):
        open_kernel(path)
    ks = open_kernel(path, partial=True)
    assert ks.missing_tiles() == [(1, 3)]
    lines = []
    compute_kernel_store(fc, x1, None, path, tile_size=8, log=lines.append)
    assert "14 already done, computing 1" in lines[0]
    assert read_done(path) == set(ks.all_tiles())


# -- the CLI: exit 2, a clear message, the existing store intact ---------------------------------


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ntkdsl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_cli_store_errors_keep_the_store(tmp_path, xs):
    x1, _ = xs
    (tmp_path / "fc.ntk").write_text(FC)
    (tmp_path / "other.ntk").write_text(FC.replace("Erf", "Relu"))
    np.save(tmp_path / "x.npy", x1)
    r = _cli("kernel", "fc.ntk", "--x1", "x.npy", "--store", "k.zarr", "--batch-size", "8",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote k.zarr: nngp (37, 37), ntk (37, 37)" in r.stdout
    snap = _snapshot(tmp_path / "k.zarr")

    def refused(*args, message):
        r = _cli("kernel", *args, cwd=tmp_path)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert _snapshot(tmp_path / "k.zarr") == snap

    refused("fc.ntk", "--x1", "x.npy", "--store", "k.zarr", "--batch-size", "4",
            message="tile size differs")
    refused("fc.ntk", "--x1", "x.npy", "--store", "k.zarr", "--batch-size", "8",
            "--set", "width=16", message="net parameters (overrides)")
    refused("other.ntk", "--x1", "x.npy", "--store", "k.zarr", "--batch-size", "8",
            message="layer graph (spec) differs")
    refused("fc.ntk", "--x1", "x.npy", "--workers", "2", message="--workers needs --store")
    refused("fc.ntk", "--x1", "x.npy", "--store", "k.zarr", "-o", "k.npz",
            message="not both")

    # an unwritable path: nothing created
    (tmp_path / "plain").write_text("a file")
    r = _cli("kernel", "fc.ntk", "--x1", "x.npy", "--store", "plain/k.zarr", cwd=tmp_path)
    assert r.returncode == 2 and "plain is not a directory" in r.stderr

    # a directory that is not a store is never replaced, even with --overwrite
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):
        r = _cli("kernel", "fc.ntk", "--x1", "x.npy", "--store", "notes", *extra,
                 cwd=tmp_path)
        assert r.returncode == 2 and "not" in r.stderr and "kernel store" in r.stderr
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"

    # a corrupt store: a clear error, nothing changed
    meta = tmp_path / "k.zarr" / "zarr.json"
    good = meta.read_bytes()
    meta.write_bytes(good[: len(good) // 2])
    snap = _snapshot(tmp_path / "k.zarr")
    refused("fc.ntk", "--x1", "x.npy", "--store", "k.zarr", "--batch-size", "8",
            message="corrupt kernel store")
    meta.write_bytes(good)

    # a zarr group that is not an ntkdsl store
    import zarr

    zarr.open_group(str(tmp_path / "z.zarr"), mode="w", attributes={"other": 1})
    r = _cli("kernel", "fc.ntk", "--x1", "x.npy", "--store", "z.zarr", cwd=tmp_path)
    assert r.returncode == 2 and "not an ntkdsl kernel store" in r.stderr
    assert json.loads((tmp_path / "z.zarr" / "zarr.json").read_text())["attributes"] == {
        "other": 1}


def test_predict_reads_stores_like_npz(tmp_path, fc):
    rng = np.random.default_rng(5)
    xtr, xte = rng.standard_normal((20, 6)), rng.standard_normal((7, 6))
    y = rng.standard_normal((20, 2))
    np.save(tmp_path / "y.npy", y)
    compute_kernel_store(fc, xtr, None, tmp_path / "k.zarr", tile_size=8)
    compute_kernel_store(fc, xte, xtr, tmp_path / "kt.zarr", tile_size=8)
    k = open_kernel(tmp_path / "k.zarr")
    kt = open_kernel(tmp_path / "kt.zarr")
    np.savez(tmp_path / "k.npz", nngp=np.asarray(k.nngp[...]), ntk=np.asarray(k.ntk[...]))
    np.savez(tmp_path / "kt.npz", nngp=np.asarray(kt.nngp[...]), ntk=np.asarray(kt.ntk[...]))
    outs = {}
    for kind in ("zarr", "npz"):
        r = _cli("predict", "--k-train-train", f"k.{kind}", "--k-test-train", f"kt.{kind}",
                 "--y-train", "y.npy", "--time", "1,inf", "--diag-reg", "1e-6",
                 "-o", f"out_{kind}.npz", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        with np.load(tmp_path / f"out_{kind}.npz") as f:
            outs[kind] = f["mean"]
    assert outs["zarr"].shape == (2, 7, 2) and np.all(np.isfinite(outs["zarr"]))
    assert np.array_equal(outs["zarr"], outs["npz"])
