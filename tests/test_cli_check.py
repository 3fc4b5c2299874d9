"""``ntkdsl check``: exit codes, stdout summary, stderr format, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ntkdsl.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples" / "specs"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_example_prints_params_layers_and_shapes(capsys):
    code, out, err = run(capsys, "check", str(EXAMPLES / "myrtle.ntk"), "--net", "myrtle5",
                         "--set", "width=32", "--input-shape", "8,8,3")
    assert code == 0 and err == ""
    assert "net myrtle5" in out
    assert "parameters: width=32" in out
    assert "layers: 11 after expansion" in out
    assert "Conv(32, 3, W_std=1.41421)" in out
    assert "-> (4, 4, 32)" in out
    assert "output shape: (10,)" in out


def test_check_without_net_checks_every_net(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES / "fc_relu.ntk"))
    assert code == 0
    assert "net fc1" in out and "net fc3" in out
    assert "ok: 2 nets checked" in out


def test_check_a_directory_and_a_library_file(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES))
    assert code == 0
    assert "no nets (a library for imports)" in out
    assert out.count("ok:") == len(list(EXAMPLES.glob("*.ntk")))


def test_set_takes_spec_expressions(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES / "fc_erf.ntk"), "--set", "act=Erf(1, 2)",
                       "--set", "width=2 * 32")
    assert code == 0
    assert "act=Erf(1, 2)" in out and "Erf(b=2)" in out and "Dense(64" in out


def _spec(tmp_path, text: str) -> str:
    p = tmp_path / "bad.ntk"
    p.write_text(text)
    return str(p)


def test_spec_error_exit_2_located_no_traceback(capsys, tmp_path):
    path = _spec(tmp_path, "net a {\n  Dens(3)\n}\n")
    code, out, err = run(capsys, "check", path)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"{path}:2:3: error: unknown layer or block 'Dens'",
        "      Dens(3)",
        "      ^^^^",
        "note: did you mean 'Dense'?",
    ]
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--set", "wdth=3"], "no net in"),
    (["--set", "width"], "--set expects NAME=VALUE"),
    (["--set", "width=3 +"], "<--set width>:1:4: error: unexpected end of input"),
    (["--net", "nope"], "no net named 'nope'"),
    (["--input-shape", "8,x"], "--input-shape expects positive integers"),
    (["--input-shape", "3"],
     "--input-shape 3 does not fit net 'cnn_flatten', which declares Input((-1, -1, 1))"),
])
def test_bad_options_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, "check", str(EXAMPLES / "digits_cnn.ntk"), *argv)
    assert code == 2
    assert needle in err and "Traceback" not in err


def test_missing_file_and_binary_file(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "none.ntk"))
    assert code == 2 and "cannot read spec file" in err
    p = tmp_path / "bin.ntk"
    p.write_bytes(b"\x00\xff\xfe net")
    code, _, err = run(capsys, "check", str(p))
    assert code == 2 and "error: the file is not valid UTF-8" in err


def test_subprocess_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "ntkdsl", "check", str(EXAMPLES / "wrn.ntk"),
                         "--input-shape", "8,8,1"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "net wrn" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "ntkdsl", "check",
                          _spec(tmp_path, "net a { Residual { Dense(3) Relu } }")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"{tmp_path / 'bad.ntk'}:1:9: error: each Residual path")
    assert "Traceback" not in bad.stderr
