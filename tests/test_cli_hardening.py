"""The command line under bad paths, bad files, signals and inconsistent options."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ntkdsl
from ntkdsl import io
from ntkdsl.cli import main

SPEC = """
net mlp(width = 64, outputs = 2) {
    Dense(width, W_std = 1.5, b_std = 0.1)
    Relu()
    Dense(outputs, W_std = 1.5, b_std = 0.1)
}
"""
CONV = "net c { Conv(4, 3, W_std = 1.4)\n Relu()\n Flatten()\n Dense(1) }\n"


@pytest.fixture
def d(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "mlp.ntk").write_text(SPEC)
    (tmp_path / "c.ntk").write_text(CONV)
    np.save(tmp_path / "x.npy", rng.normal(size=(8, 3)))
    np.save(tmp_path / "y.npy", rng.normal(size=(8, 2)))
    np.save(tmp_path / "xt.npy", rng.normal(size=(4, 3)))
    np.save(tmp_path / "img.npy", rng.normal(size=(3, 5, 5, 2)))
    return tmp_path


def _kernel(d, *extra, out="k.npz", x="x.npy"):
    return ["kernel", str(d / "mlp.ntk"), "--x1", str(d / x), "-o", str(d / out), *extra]


def _predict(d, *extra, out="p.npz"):
    return ["predict", str(d / "mlp.ntk"), "--x-train", str(d / "x.npy"), "--y-train",
            str(d / "y.npy"), "--x-test", str(d / "xt.npy"), "-o", str(d / out), *extra]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# -- -o policy ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [_kernel, _predict])
@pytest.mark.parametrize("where, match", [
    ("folder", "-o: .*folder is a folder"),
    ("/proc/self/out.npz", "-o: cannot write under /proc"),
    ("afile/out.npz", "-o: .*afile is a file, not a folder"),
])
def test_bad_output_paths_exit_2_naming_o(d, capsys, command, where, match):
    (d / "folder").mkdir()
    (d / "afile").write_bytes(b"keep")
    args = command(d)
    args[args.index("-o") + 1] = where if where.startswith("/") else str(d / where)
    assert main(args) == 2
    import re

    assert re.search(match, _one_line(capsys))
    assert (d / "afile").read_bytes() == b"keep"


@pytest.mark.parametrize("command", [_kernel, _predict])
def test_every_command_creates_missing_parent_folders(d, command):
    assert main(command(d, out="new/sub/out.npz")) == 0
    assert (d / "new" / "sub" / "out.npz").is_file()


def test_outputs_get_normal_permissions_and_devices_survive(d):
    assert main(_kernel(d)) == 0
    plain = d / "plain"
    plain.write_bytes(b"")
    assert stat.S_IMODE(os.stat(d / "k.npz").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    if os.access("/dev/null", os.W_OK):
        args = _kernel(d)
        args[args.index("-o") + 1] = "/dev/null"
        assert main(args) == 0
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# -- input files ----------------------------------------------------------------------------

def test_zero_byte_and_lying_npy_inputs_exit_2(d, capsys):
    (d / "empty.npy").write_bytes(b"")
    assert main(_kernel(d, x="empty.npy")) == 2
    assert "--x1: " in _one_line(capsys)
    with open(d / "big.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 64)})
        f.write(b"\0" * 100)
    assert main(_kernel(d, x="big.npy")) == 2
    assert "--x1: " in (err := _one_line(capsys)) and "claims shape (1000000000000, 64)" in err


def test_values_that_overflow_in_the_cast_are_named(d, capsys):
    x = np.ones((3, 3))
    x[2, 1] = 1e39
    np.save(d / "huge.npy", x)
    assert main(_kernel(d, "--dtype", "float32", x="huge.npy")) == 2
    assert "--x1: 1 entry overflow to inf in float32 (at (2, 1))" in _one_line(capsys)
    x[2, 1] = 1e-50
    np.save(d / "tiny.npy", x)
    assert main(_kernel(d, "--dtype", "float32", x="tiny.npy")) == 2
    assert "underflow to 0 in float32" in _one_line(capsys)


@pytest.mark.parametrize("flag, spec, bad", [
    ("--x1", "mlp.ntk", "img.npy"), ("--x2", "mlp.ntk", "img.npy"),
    ("--x-train", "mlp.ntk", "img.npy"), ("--x-test", "mlp.ntk", "img.npy"),
    ("--x-test", "mlp.ntk", "x4.npy"),
])
def test_a_wrong_shape_is_reported_under_its_own_option(d, capsys, flag, spec, bad):
    np.save(d / "x4.npy", np.ones((4, 4)))
    if flag in ("--x1", "--x2"):
        args = _kernel(d) + (["--x2", str(d / "x.npy")] if flag == "--x2" else [])
    else:
        args = _predict(d)
    if flag == "--x2" and "--x2" in args:
        args[args.index("--x2") + 1] = str(d / bad)
    else:
        args[args.index(flag) + 1] = str(d / bad)
    assert main(args) == 2
    err = _one_line(capsys)
    assert err.startswith(f"{flag} "), err
    assert "x1" not in err.replace("--x1", "") and "x2" not in err.replace("--x2", "")


# -- options --------------------------------------------------------------------------------

def test_kernel_prints_what_it_wrote(d, capsys):
    assert main(_kernel(d, "--get", "ntk")) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"wrote {d / 'k.npz'}: ntk (8, 8) (float64, net 'mlp')"


def test_predict_dtype_option_and_float32_alias(d):
    assert main(_predict(d, "--dtype", "float32", out="a.npz")) == 0
    assert main(_predict(d, "--float32", out="b.npz")) == 0
    a, b = np.load(d / "a.npz")["mean"], np.load(d / "b.npz")["mean"]
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("argv, usage", [
    (["kernel", "s.ntk", "--x1", "a", "-o", "b", "--bogus"], "usage: ntkdsl kernel"),
    (["predict", "--y-train", "y", "-o", "b", "--bogus"], "usage: ntkdsl predict"),
    (["check", "s.ntk", "--bogus"], "usage: ntkdsl check"),
])
def test_unknown_option_prints_the_subcommands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("argv", [["explain", "s.ntk", "--points", "-1"],
                                  ["explain", "s.ntk", "--points", "0"],
                                  ["kernel", "s.ntk", "--x1", "a", "-o", "b",
                                   "--batch-size", "0"]])
def test_non_positive_counts_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


def test_check_help_says_spec_may_be_a_folder(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "folder" in capsys.readouterr().out


# -- progress and fresh lines ------------------------------------------------------------------

def test_no_progress_bar_when_stderr_is_not_a_terminal(d, capsys):
    assert main(_kernel(d, "--batch-size", "1")) == 0  # 64 tiles: a bar on a terminal
    err = capsys.readouterr().err
    assert "\r" not in err and "tiles" not in err


def test_errors_start_on_a_fresh_line_after_a_bar(monkeypatch, d):
    import ntkdsl.cli.kernel as kernel_cli

    class Tty:
        def __init__(self):
            self.text = []

        def isatty(self):
            return True

        def write(self, s):
            self.text.append(s)

        def flush(self):
            pass

    def run(args):
        bar = io.progress_bar(10, "kernel tiles")
        bar.update(3)
        raise ntkdsl.InputError("boom")

    tty = Tty()
    monkeypatch.setattr(kernel_cli, "run", run)
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delenv("NTKDSL_NO_PROGRESS", raising=False)
    assert main(_kernel(d)) == 2
    text = "".join(tty.text)
    assert "kernel tiles" in text
    before = text[:text.index("boom")]
    assert before.endswith(("\r", "\n")), repr(text)


# -- saved kernels ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_predict_from_saved_kernels_matches_predict_from_the_spec(d, kind):
    xs = np.concatenate([np.load(d / "x.npy"), np.load(d / "xt.npy")])
    np.save(d / "all.npy", xs)
    spec = str(d / "mlp.ntk")
    assert main(["kernel", spec, "--x1", str(d / "x.npy"), "-o", str(d / "ktr.npz")]) == 0
    assert main(["kernel", spec, "--x1", str(d / "xt.npy"), "--x2", str(d / "x.npy"),
                 "-o", str(d / "kte.npz")]) == 0
    assert main(["kernel", spec, "--x1", str(d / "xt.npy"), "--get", "nngp",
                 "-o", str(d / "ktt.npz")]) == 0
    saved = ["predict", "--k-train-train", str(d / "ktr.npz"), "--k-test-train",
             str(d / "kte.npz"), "--k-test-test", str(d / "ktt.npz"), "--y-train",
             str(d / "y.npy"), "--kind", kind, "--time", "0.5,inf", "-o", str(d / "s.npz")]
    assert main(saved) == 0
    assert main(_predict(d, "--kind", kind, "--time", "0.5,inf")) == 0
    s, p = np.load(d / "s.npz"), np.load(d / "p.npz")
    np.testing.assert_allclose(s["mean"], p["mean"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(s["cov"], p["cov"], rtol=1e-9, atol=1e-10)
    no_cov = saved[:saved.index("--k-test-test")] + saved[saved.index("--k-test-test") + 2:]
    assert main(no_cov) == 0
    assert sorted(np.load(d / "s.npz").files) == ["mean", "time"]


def test_saved_kernels_are_checked_against_each_other_and_y(d, capsys):
    k = np.eye(8) + 0.1
    ntkdsl.Kernel(nngp=k, ntk=2 * k).save(d / "ktr.npz")
    ntkdsl.Kernel(nngp=np.ones((4, 7)), ntk=np.ones((4, 7))).save(d / "bad_kte.npz")
    ntkdsl.Kernel(nngp=np.ones((4, 8))).save(d / "nngp_only.npz")
    base = ["predict", "--k-train-train", str(d / "ktr.npz"), "--y-train", str(d / "y.npy"),
            "-o", str(d / "s.npz"), "--k-test-train"]
    assert main([*base, str(d / "bad_kte.npz")]) == 2
    assert "--k-test-train: expected shape (m, 8)" in _one_line(capsys)
    assert main([*base, str(d / "nngp_only.npz")]) == 2  # kind ntk needs the ntk too
    assert "--k-test-train: " in (err := _one_line(capsys)) and "'ntk'" in err
    np.save(d / "y5.npy", np.ones((5, 2)))
    args = [*base, str(d / "nngp_only.npz"), "--kind", "nngp"]
    args[args.index("--y-train") + 1] = str(d / "y5.npy")
    assert main(args) == 2
    assert "--y-train: expected shape (8, outputs)" in _one_line(capsys)
    assert main([*base, str(d / "nngp_only.npz"), str(d / "mlp.ntk")]) == 2  # mixed modes
    assert "not both" in _one_line(capsys)


def test_kernel_save_and_load_round_trip_without_pickles(tmp_path):
    k = ntkdsl.Kernel(nngp=np.arange(6.0).reshape(2, 3), ntk=np.ones((2, 3)))
    k.save(tmp_path / "k.npz")
    back = ntkdsl.Kernel.load(tmp_path / "k.npz")
    np.testing.assert_array_equal(back.nngp, k.nngp)
    np.testing.assert_array_equal(back.ntk, k.ntk)
    ntkdsl.Kernel(ntk=np.eye(2)).save(tmp_path / "ntk.npz")
    assert ntkdsl.Kernel.load(tmp_path / "ntk.npz").nngp is None
    np.savez(tmp_path / "evil.npz", nngp=np.array([object()], dtype=object))
    with pytest.raises(ntkdsl.InputError, match="Python objects"):
        ntkdsl.Kernel.load(tmp_path / "evil.npz")
    with pytest.raises(ntkdsl.InputError, match=r"folder|kernel store"):  # the store hook
        ntkdsl.Kernel.load(tmp_path)


# -- signals --------------------------------------------------------------------------------

_HANGING_WRITER = textwrap.dedent("""
    import sys, time
    import ntkdsl.cli.kernel as kernel_cli
    from ntkdsl import io
    from ntkdsl.cli import main

    def run(args):
        def write(f):
            f.write(b"partial")
            f.flush()
            print("WRITING", flush=True)
            time.sleep(60)
        io.atomic_write(args.output, write)

    kernel_cli.run = run
    sys.exit(main(["kernel", "s.ntk", "--x1", "x.npy", "-o", sys.argv[1]]))
""")


def _start_writer(tmp_path):
    out = tmp_path / "out.npz"
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_WRITER, str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    temps = [p for p in tmp_path.iterdir() if io.TMP_MARK in p.name]
    assert len(temps) == 1
    return proc, out, temps[0]


def test_sigterm_during_a_write_removes_the_temporary(tmp_path):
    proc, out, tmp = _start_writer(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert "terminated" in proc.stderr.read()
    assert not tmp.exists() and not out.exists()


def test_sigkill_leftovers_are_removed_by_the_next_write(tmp_path):
    proc, out, tmp = _start_writer(tmp_path)
    proc.kill()
    proc.wait(30)
    for _ in range(100):  # the pid must be gone for the temporary to count as stale
        if not io._pid_alive(proc.pid):
            break
        time.sleep(0.05)
    assert tmp.exists()
    io.save_npz(out, {"a": np.zeros(1)})
    assert not tmp.exists() and out.exists()
