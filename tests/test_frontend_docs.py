"""docs/language.md shows what the tool really prints, and stands on its own."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ntkdsl import InputError, SpecError
from ntkdsl.cli import main
from ntkdsl.compiler.frontend import parse, parse_all
from ntkdsl.compiler.inputs import check_inputs

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "language.md").read_text()
CLI_DOC = re.sub(r"\s+", " ", (ROOT / "docs" / "cli.md").read_text())
CNN = "net cnn { Input((8, 8, 1)) Conv(4, 3) Relu Flatten Dense(3) }"


def rendered(src: str, filename: str) -> str:
    with pytest.raises(SpecError) as info:
        parse(src, filename=filename)
    return str(info.value)


def test_the_reference_points_at_nothing_outside_the_repository():
    assert "shared/" not in DOC and "../" not in DOC and "LANGUAGE.md" not in DOC


@pytest.mark.parametrize("src, filename", [
    ("net a { Dense(3, parameterization = standard) }\n", "s.ntk"),
    ("net a {\n    Dense(3)\n    Relu\n", "open.ntk"),
])
def test_documented_errors_are_printed_as_shown(src, filename):
    assert rendered(src, filename) in DOC


def test_documented_import_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "imp.ntk").write_text('import "/etc/passwd"\nnet a { Dense(1) }\n')
    monkeypatch.chdir(tmp_path)
    assert main(["check", "imp.ntk"]) == 2
    err = capsys.readouterr().err.replace(str(tmp_path.resolve()), "/tmp/specs")
    # the documented copy is indented by two spaces (it stands in a list item)
    assert "\n".join("  " + line for line in err.strip().split("\n")) in DOC


def test_documented_input_messages(tmp_path, capsys):
    with pytest.raises(InputError) as info:
        check_inputs(parse(CNN), np.zeros((4, 8, 8)), None)
    assert f"`{info.value}`" in DOC
    (tmp_path / "cnn.ntk").write_text(CNN)
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8)))
    assert main(["kernel", str(tmp_path / "cnn.ntk"), "--x1", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "k.npz")]) == 2
    message = capsys.readouterr().err.strip()
    assert message == f"--{info.value}"
    assert f"`{message}`" in CLI_DOC
    assert not (tmp_path / "k.npz").exists()


def test_documented_check_mismatch(tmp_path, capsys):
    (tmp_path / "cnn.ntk").write_text(CNN)
    assert main(["check", str(tmp_path / "cnn.ntk"), "--input-shape", "8,8,3"]) == 2
    message = capsys.readouterr().err.strip()
    assert f"`{message}`" in DOC and message in CLI_DOC


def test_every_spec_block_of_the_reference_parses():
    blocks = re.findall(r"```\n(.*?)```", DOC, flags=re.S)
    specs = [b for b in blocks if re.search(r"^net ", b, flags=re.M)]
    assert len(specs) >= 3
    for text in specs:
        assert parse_all(text), text
