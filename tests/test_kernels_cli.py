"""``ntkdsl kernel``: writes nngp/ntk atomically; bad arrays exit 2 with one line."""

from __future__ import annotations

import numpy as np

import ntkdsl
from ntkdsl.cli import main

SPEC = "net n { Conv(4, 3, W_std=1.4); Relu; Flatten; Dense(1) }\n"


def test_kernel_command_writes_npz(tmp_path):
    spec = tmp_path / "n.ntk"
    spec.write_text(SPEC)
    x = np.random.default_rng(0).standard_normal((5, 4, 4, 2))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "k.npz"
    rc = main(["kernel", str(spec), "--x1", str(tmp_path / "x.npy"), "--batch-size", "2",
               "--no-progress", "-o", str(out)])
    assert rc == 0
    with np.load(out) as z:
        assert sorted(z.files) == ["nngp", "ntk"]
        want = ntkdsl.compile(SPEC).kernel_fn(x)
        np.testing.assert_allclose(z["nngp"], want.nngp, rtol=1e-13)
        np.testing.assert_allclose(z["ntk"], want.ntk, rtol=1e-13)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_kernel_command_bad_array_exits_2(tmp_path, capsys):
    spec = tmp_path / "n.ntk"
    spec.write_text(SPEC)
    np.save(tmp_path / "x.npy", np.zeros((3, 4, 4, 2)))
    np.save(tmp_path / "y.npy", np.zeros((3, 4, 4, 5)))
    out = tmp_path / "k.npz"
    rc = main(["kernel", str(spec), "--x1", str(tmp_path / "x.npy"), "--x2",
               str(tmp_path / "y.npy"), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert "\n" not in err and "(3, 4, 4, 5)" in err and "(n2, 4, 4, 2)" in err
    rc = main(["kernel", str(spec), "--x1", str(tmp_path / "missing.npy"), "-o", str(out)])
    assert rc == 2 and "missing.npy" in capsys.readouterr().err
