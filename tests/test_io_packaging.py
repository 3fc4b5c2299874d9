"""What a wheel ships: the demo's specs as package data, an SPDX licence, no checkout needed."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_uses_the_spdx_licence_with_a_setuptools_that_reads_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    req = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert req == ["setuptools>=77"]  # the first release that accepts the string form


def test_sdist_and_wheel_carry_the_specs():
    assert "recursive-include examples/specs *.ntk" in (ROOT / "MANIFEST.in").read_text()
    assert "examples\" / \"specs\"" in (ROOT / "setup.py").read_text()


def test_demo_finds_its_specs_from_any_directory(tmp_path, monkeypatch):
    from ntkdsl.demo import DEFAULT_KERNEL_SPECS, DEFAULT_TRAIN_SPEC, find_specs_dir

    monkeypatch.chdir(tmp_path)
    d = find_specs_dir()
    for name, _, _ in (*DEFAULT_KERNEL_SPECS, DEFAULT_TRAIN_SPEC):
        assert (d / name).is_file()


@pytest.mark.slow
def test_wheel_runs_the_demo_outside_the_checkout(tmp_path):
    """Build the wheel, install it alone in a fresh venv and use it from another folder."""
    whl = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(whl),
                    str(ROOT)], check=True)
    (wheel,) = whl.glob("ntkdsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ntkdsl/specs/fc_relu.ntk" in names and "ntkdsl/specs/digits_cnn.ntk" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "zz_deps.pth").write_text("\n".join(deps) + "\n")  # after the wheel's ntkdsl
    run = tmp_path / "elsewhere"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([py, "-c", "import ntkdsl, ntkdsl.demo as d; "
                            "print(ntkdsl.__file__); print(d.find_specs_dir())"],
                           cwd=run, env=env, check=True, capture_output=True, text=True)
    pkg, specs = where.stdout.split()
    assert pkg.startswith(site) and specs.startswith(site)
    demo = subprocess.run([venv / "bin" / "ntkdsl", "demo", "--n-train", "20", "--n-test", "20",
                           "--widths", "8", "--steps", "4", "--out", str(run / "out"),
                           "--no-progress"], cwd=run, env=env, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr
    assert (run / "out" / "results.json").is_file()
