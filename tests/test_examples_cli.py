"""Every example spec works through the command line, net by net: check and
kernel by default; explain in text and LaTeX under -m slow (sympy simplifies
each fully connected net's closed form, seconds per net)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ntkdsl.cli import main
from ntkdsl.compiler.frontend import load_all

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"

#: an input shape (no batch axis) for every example net
INPUT_SHAPES = {
    "fc1": (64,), "fc3": (64,), "fc3_tanh": (64,), "fc5": (64,), "fc_erf": (64,),
    "cnn_flatten": (8, 8, 1), "cnn_gap": (8, 8, 1), "wrn": (8, 8, 1),
    "myrtle5": (8, 8, 3), "myrtle5_pool2": (8, 8, 3), "conv1d": (16, 2),
    "myrtle10": (8, 8, 3), "inception": (8, 8, 3),
    "layernorm_mlp": (16,), "cnn_gap_twin": (6, 6, 2), "local_gap": (6, 6, 2),
    "unet": (16, 16, 1), "unet_resize": (16, 16, 1), "edge_of_chaos": (64,),
    "transformer": (8, 4),
    "gnn": (6, 4), "gnn_nodes": (6, 4),
}
#: nets with Aggregate: their inputs come with an adjacency per graph
GRAPH_NETS = {"gnn", "gnn_nodes"}


def _nets() -> list[tuple[Path, str]]:
    libraries = {"common.ntk"}  # blocks and constants only, imported by the others
    return [(path, net.name) for path in sorted(SPECS.glob("*.ntk")) if path.name not in libraries
            for net in load_all(path)]


def test_every_example_net_has_an_input_shape():
    assert {name for _, name in _nets()} == set(INPUT_SHAPES)


@pytest.mark.parametrize(("path", "net"), _nets(), ids=lambda v: getattr(v, "name", v))
def test_example_through_the_cli(path, net, tmp_path, capsys):
    shape = INPUT_SHAPES[net]
    assert main(["check", str(path), "--net", net,
                 "--input-shape", ",".join(map(str, shape))]) == 0
    x = np.random.default_rng(0).normal(size=(3, *shape))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "k.npz"
    graph = []
    if net in GRAPH_NETS:
        a = np.random.default_rng(1).random((3, shape[0], shape[0])) < 0.5
        np.save(tmp_path / "a.npy", a | a.transpose(0, 2, 1))
        graph = ["--adjacency1", str(tmp_path / "a.npy")]
    assert main(["kernel", str(path), "--net", net, "--x1", str(tmp_path / "x.npy"),
                 *graph, "-o", str(out)]) == 0
    k = np.load(out)
    for name in ("nngp", "ntk"):
        assert k[name].shape == (3, 3) and np.all(np.isfinite(k[name]))
        np.testing.assert_allclose(k[name], k[name].T, rtol=1e-12)
        assert np.all(np.linalg.eigvalsh(k[name]) > -1e-10 * np.abs(k[name]).max())
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize(("path", "net"), _nets(), ids=lambda v: getattr(v, "name", v))
def test_example_explained(path, net, capsys):
    assert main(["explain", str(path), "--net", net]) == 0
    assert "Theta" in capsys.readouterr().out
    assert main(["explain", str(path), "--net", net, "--latex"]) == 0
    assert "\\Theta" in capsys.readouterr().out
