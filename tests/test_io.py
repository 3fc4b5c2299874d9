"""ntkdsl.io: the one atomic writer, the one array loader, the cast check, the progress bar."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from ntkdsl import io
from ntkdsl.diagnostics import InputError


def _umask() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    pytest.skip("no Umask line in /proc/self/status")


def _write(data: bytes):
    return lambda f: f.write(data)


def test_new_file_gets_the_mode_a_plain_open_gives(tmp_path):
    dest = io.atomic_write(tmp_path / "a.bin", _write(b"x"))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(os.stat(dest).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o666 & ~_umask()


def test_existing_file_keeps_its_mode(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    io.atomic_write(p, _write(b"new"))
    assert p.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_temporary_is_named_for_its_destination(tmp_path):
    seen = []

    def spy(f):
        seen.append(os.path.basename(f.name))
        f.write(b"x")

    io.atomic_write(tmp_path / "k.npz", spy)
    assert seen[0].startswith(f".k.npz{io.TMP_MARK}{os.getpid()}-")


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".k.npz{io.TMP_MARK}{dead.pid}-abcd1234"
    live = tmp_path / f".k.npz{io.TMP_MARK}{os.getppid()}-abcd1234"
    other = tmp_path / f".other.npz{io.TMP_MARK}{dead.pid}-abcd1234"
    for p in (stale, live, other):
        p.write_bytes(b"junk")
    io.atomic_write(tmp_path / "k.npz", _write(b"x"))
    assert not stale.exists()
    assert live.exists() and other.exists()  # a running writer's, another file's


def test_symlink_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    io.atomic_write(link, _write(b"new"))
    assert link.is_symlink() and target.read_bytes() == b"new"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "sub" / "made.bin")
    io.atomic_write(dangling, _write(b"y"))
    assert (tmp_path / "sub" / "made.bin").read_bytes() == b"y" and dangling.is_symlink()


@pytest.mark.skipif(not os.access("/dev/null", os.W_OK), reason="no writable /dev/null")
def test_character_device_is_written_through_not_replaced():
    io.save_npz("/dev/null", {"a": np.zeros(3)})
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    io.atomic_write(fifo, _write(b"through"))
    reader.join(10)
    assert got == [b"through"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("where, match", [
    ("dir", "is a folder"),
    ("/proc/self/ntkdsl-out", "cannot write under /proc"),
    ("file/below.npz", "is a file, not a folder"),
    ("file/deeper/below.npz", "is a file, not a folder"),
    ("", "empty"),
])
def test_refused_destinations_name_the_option(tmp_path, where, match):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    path = where if where.startswith("/") or not where else str(tmp_path / where)
    with pytest.raises(InputError, match=match) as e:
        io.atomic_write(path, _write(b"x"), flag="-o")
    assert str(e.value).startswith("-o: ")
    assert (tmp_path / "file").read_bytes() == b"x"


def test_missing_parent_folders_are_created(tmp_path):
    io.save_npz(tmp_path / "a" / "b" / "k.npz", {"nngp": np.eye(2)})
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "b" / "k.npz")["nngp"], np.eye(2))


def test_save_npz_round_trips_through_numpy(tmp_path):
    arrays = {"nngp": np.arange(6.0).reshape(2, 3), "ntk": np.ones((2, 3), np.float32)}
    io.save_npz(tmp_path / "k.npz", arrays)
    with np.load(tmp_path / "k.npz", allow_pickle=False) as z:
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == v.dtype
    back = io.load_npz(tmp_path / "k.npz", "--k")
    assert set(back) == {"nngp", "ntk"}


# -- loading -------------------------------------------------------------------------------

def _lying_npy(path, shape, payload=b"\0" * 64):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(payload)


def test_zero_byte_npy(tmp_path):
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(InputError, match=r"--x1: .*e\.npy is empty \(0 bytes\)"):
        io.load_array(tmp_path / "e.npy", "--x1")


def test_header_claiming_an_absurd_shape_is_refused_before_allocating(tmp_path):
    _lying_npy(tmp_path / "big.npy", (10**12, 64))
    with pytest.raises(InputError, match=r"claims shape \(1000000000000, 64\).*holds 64 bytes"):
        io.load_array(tmp_path / "big.npy", "--x1")


def test_npz_member_claiming_an_absurd_shape(tmp_path):
    _lying_npy(tmp_path / "m.npy", (10**12, 64))
    with zipfile.ZipFile(tmp_path / "k.npz", "w") as zf:
        zf.write(tmp_path / "m.npy", "nngp.npy")
    with pytest.raises(InputError, match=r"k\.npz\[nngp\].*claims shape"):
        io.load_npz(tmp_path / "k.npz", "--k-train-train", ["nngp"])


@pytest.mark.parametrize("make, match", [
    (lambda p: np.save(p, np.array([object()]), allow_pickle=True), "Python objects"),
    (lambda p: np.save(p, np.ones(3) + 1j), "complex"),
    (lambda p: np.save(p, np.array(["a"])), "numeric"),
    (lambda p: np.savez(p, a=np.ones(2)), r"\.npz archive"),
    (lambda p: open(p, "wb").write(b"hello world"), "not a .npy"),
])
def test_bad_npy_files(tmp_path, make, match):
    p = str(tmp_path / "a.npy")
    make(p)
    if os.path.exists(p + ".npz"):
        os.replace(p + ".npz", p)
    with pytest.raises(InputError, match=match):
        io.load_array(p, "--x1")


def test_non_regular_and_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        io.load_array("/dev/zero", "--x1")
    with pytest.raises(InputError, match="no such file"):
        io.load_array(tmp_path / "nope.npy", "--x1")
    with pytest.raises(InputError, match="is a folder"):
        io.load_array(tmp_path, "--x1")


def test_large_npy_is_memory_mapped(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    m = io.load_array(tmp_path / "a.npy", "--x1", mmap_min_bytes=1)
    assert isinstance(m, np.memmap)
    np.testing.assert_array_equal(m, a)
    assert not isinstance(io.load_array(tmp_path / "a.npy", "--x1"), np.memmap)


def test_missing_npz_member_lists_what_is_there(tmp_path):
    np.savez(tmp_path / "k.npz", ntk=np.eye(2))
    with pytest.raises(InputError, match=r"no array 'nngp' \(it holds: ntk\)"):
        io.load_npz(tmp_path / "k.npz", "--k", ["nngp"])


# -- check_cast ----------------------------------------------------------------------------

def test_check_cast_names_overflow_in_the_cast():
    a = np.ones((3, 4))
    a[1, 2] = 1e39
    with pytest.raises(InputError, match=r"x1: 1 entry overflow to inf in float32 \(at \(1, 2\)\)"):
        io.check_cast(a, "float32", "x1")
    np.testing.assert_array_equal(io.check_cast(a, "float64", "x1"), a)


def test_check_cast_longdouble_beyond_float64():
    a = np.array([[1.0, 2.0]], np.longdouble)
    a[0, 1] = np.longdouble("1e400")
    if not np.isfinite(a[0, 1]):
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(InputError, match=r"overflow to inf in float64 \(at \(0, 1\)\)"):
        io.check_cast(a, np.float64, "--x1")


def test_check_cast_underflow_and_non_finite():
    a = np.array([[1.0, 1e-50], [np.nan, np.inf]])
    with pytest.raises(InputError) as e:
        io.check_cast(a, "float32", "x")
    msg = str(e.value)
    assert "2 entries not finite (NaN or inf) (at (1, 0), (1, 1))" in msg
    assert "1 entry underflow to 0 in float32 (at (0, 1))" in msg
    ok = io.check_cast(np.array([1.0, 1e-50]), "float64", "x")
    assert ok[1] == 1e-50


def test_check_cast_passes_good_values_without_copy():
    a = np.linspace(-1, 1, 10)
    assert io.check_cast(a, np.float64, "x") is a
    b = io.check_cast(np.arange(5), "float32", "x")
    assert b.dtype == np.float32
    with pytest.raises(InputError, match="complex"):
        io.check_cast(np.ones(2, complex), "float64", "x")


# -- progress ------------------------------------------------------------------------------

class _Tty:
    def __init__(self):
        self.text = []

    def isatty(self):
        return True

    def write(self, s):
        self.text.append(s)

    def flush(self):
        pass


def test_no_bar_unless_stderr_is_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("NTKDSL_NO_PROGRESS", raising=False)
    with io.progress_bar(5, "tiles") as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert io.progress_enabled(None) and not io.progress_enabled(False)
    bar = io.progress_bar(5, "tiles")
    bar.update(2)
    assert "tiles" in "".join(tty.text)
    io.end_progress_line()  # as the CLI does before an error message
    assert bar.disable and "".join(tty.text).endswith("\r")
    monkeypatch.setenv("NTKDSL_NO_PROGRESS", "1")
    assert not io.progress_enabled(None)
