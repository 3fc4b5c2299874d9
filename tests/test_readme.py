"""The README's ten-line example runs as written (spec and Python)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## A ten-line example"):]
    return re.findall(r"```[a-z]*\n(.*?)```", section, re.S)


def test_readme_example_runs(tmp_path):
    spec, code = _blocks()[:2]
    assert len([ln for ln in spec.splitlines() if ln.strip()]) <= 10
    (tmp_path / "cnn.ntk").write_text(spec)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    k, theta = scope["k"], scope["theta"]
    assert k.nngp.shape == k.ntk.shape == theta.shape == (20, 20)
    assert np.asarray(k.ntk).dtype == np.float64
    # a width-64 net's tangent kernel is near the analytic one, not equal to it
    rel = np.linalg.norm(np.asarray(theta) - k.ntk) / np.linalg.norm(k.ntk)
    assert 1e-6 < rel < 0.5
