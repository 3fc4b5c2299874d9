"""``ntkdsl predict`` end to end, in process."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdsl import predict as P
from ntkdsl.cli import main

SPEC = """
net mlp(width = 64, outputs = 2) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu()
    Dense(outputs, W_std = 1.5, b_std = 0.1)
}
"""


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    spec = tmp_path / "mlp.ntk"
    spec.write_text(SPEC)
    x, y, xt = rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), rng.normal(size=(4, 3))
    for name, a in (("x", x), ("y", y), ("xt", xt)):
        np.save(tmp_path / f"{name}.npy", a)
    return tmp_path, x, y, xt


def _args(d, *extra):
    return [str(d / "mlp.ntk"), "--x-train", str(d / "x.npy"), "--y-train", str(d / "y.npy"),
            "--x-test", str(d / "xt.npy"), "-o", str(d / "out.npz"), *extra]


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_predict_writes_the_gp_at_each_time(files, kind, capsys):
    d, x, y, xt = files
    rc = main(["predict", *_args(d, "--time", "0.5,5,inf", "--kind", kind,
                                 "--learning-rate", "0.7")])
    assert rc == 0, capsys.readouterr().err
    out = np.load(d / "out.npz")
    assert out["mean"].shape == (3, 4, 2) and out["cov"].shape == (3, 4, 4)
    np.testing.assert_array_equal(out["time"], [0.5, 5, np.inf])
    # against the library on kernels computed independently of the CLI's path
    import ntkdsl

    model = ntkdsl.compile(SPEC)
    k = model.kernel_fn(np.concatenate([x, xt]), None, ("nngp", "ntk"))
    nn, nt = np.asarray(k.nngp), np.asarray(k.ntk)
    gp = P.gradient_descent_mse_gp(nn[:8, :8], y, ntk_train_train=nt[:8, :8], kind=kind,
                                   learning_rate=0.7)
    ref = gp(np.array([0.5, 5, np.inf]), nn[8:, :8], nn[8:, 8:], nt[8:, :8])
    np.testing.assert_allclose(out["mean"], ref.mean, atol=1e-10)
    np.testing.assert_allclose(out["cov"], ref.cov, atol=1e-10)
    if kind == "nngp":  # t = inf: the Bayesian posterior (eq. 13)
        post = P.gp_inference(nn[:8, :8], y, nn[8:, :8], nn[8:, 8:])
        np.testing.assert_allclose(out["mean"][-1], post.mean, atol=1e-10)


def test_predict_set_and_mean_loss(files):
    d, *_ = files
    assert main(["predict", *_args(d, "--set", "width=8", "--loss", "mean",
                                   "--learning-rate", "16", "--time", "2")]) == 0
    a = np.load(d / "out.npz")["mean"]
    assert main(["predict", *_args(d, "--time", "2", "--learning-rate", "1")]) == 0
    np.testing.assert_allclose(a, np.load(d / "out.npz")["mean"], atol=1e-12)


@pytest.mark.parametrize("extra, match", [
    (["--time", "1,x"], "--time: expected comma-separated numbers"),
    (["--time", "-1"], "--time: expected times >= 0"),
    (["--diag-reg", "-1"], "--diag-reg"),
    (["--learning-rate", "0"], "--learning-rate"),
])
def test_predict_bad_options_exit_2_with_one_line(files, capsys, extra, match):
    d, *_ = files
    assert main(["predict", *_args(d, *extra)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err
    assert not (d / "out.npz").exists()


def test_predict_bad_arrays_exit_2(files, capsys):
    d, *_ = files
    np.save(d / "bad.npy", np.zeros((5, 2)))
    args = _args(d)
    args[args.index("--y-train") + 1] = str(d / "bad.npy")
    assert main(["predict", *args]) == 2
    assert "--y-train: expected shape (8, outputs)" in capsys.readouterr().err
    args = _args(d)
    args[args.index("--x-test") + 1] = str(d / "bad.npy")
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "(5, 2)" in err and "\n" not in err
    args[args.index("--x-test") + 1] = str(d / "missing.npy")
    assert main(["predict", *args]) == 2
    assert "no such file" in capsys.readouterr().err
