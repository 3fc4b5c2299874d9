"""The main job, end to end at a tiny size: files written, claims visible."""

from __future__ import annotations

import json

from ntkdsl.cli import main


def test_demo_runs_and_the_wider_net_is_closer_to_its_linearisation(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--n-train", "32", "--n-test", "32", "--widths", "32,512",
                 "--steps", "20", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "NTK-GP acc" in printed and "final test RMSE" in printed
    assert (out / "dynamics.png").stat().st_size > 10_000
    res = json.loads((out / "results.json").read_text())
    for row in res["kernels"]:
        # far above chance (0.1) even with 32 training images
        assert 0.3 < row["nngp_accuracy"] <= 1 and 0.3 < row["ntk_accuracy"] <= 1
    narrow, wide = res["dynamics"]
    assert narrow["width"] == 32 and wide["width"] == 512
    # the paper's claim: the gap to the linearisation shrinks as the width grows
    assert wide["rmse_test"]["net_vs_linearized"][-1] < narrow["rmse_test"]["net_vs_linearized"][-1]
    assert wide["rmse_test"]["net_vs_analytic"][-1] < narrow["rmse_test"]["net_vs_analytic"][-1]


def test_demo_bad_option_exits_2(tmp_path, capsys):
    assert main(["demo", "--n-train", "0", "--out", str(tmp_path)]) == 2
    assert "--n-train" in capsys.readouterr().err
