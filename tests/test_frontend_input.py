"""The ``Input(shape)`` statement: where it may stand, what it declares, and who uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ntkdsl import InputError, SpecError
from ntkdsl.cli import main
from ntkdsl.compiler.frontend import load_all, parse
from ntkdsl.compiler.inputs import check_inputs

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
CNN = "net cnn { Input((8, 8, 1)) Conv(4, 3) Relu Flatten Dense(1) }"


def error_at(src: str) -> tuple[int, int, str]:
    with pytest.raises(SpecError) as info:
        parse(src, filename="t.ntk")
    return info.value.line, info.value.column, info.value.message


def test_input_declares_the_shape_and_is_not_a_layer():
    net = parse(CNN)
    assert net.input_shape == (8, 8, 1)
    assert [type(x).__name__ for x in net.body.layers] == ["Conv", "Relu", "Flatten", "Dense"]
    assert parse(CNN.replace("Input((8, 8, 1)) ", "")).body == net.body
    assert parse("net a { Input((-1,)) Dense(3) }").input_shape == (-1,)
    assert parse("net a { Input(64); Dense(3) }").input_shape == (64,)
    assert parse("net a { Input(shape = (2 * 4,)) Dense(3) }").input_shape == (8,)
    assert parse("net a { Dense(3) }").input_shape is None


@pytest.mark.parametrize("src, line, col, message", [
    ("net a { Dense(3) Input((3,)) }", 1, 18,
     "Input(...) is allowed only as the first statement of a net body"),
    ("net a { repeat 2 { Input((3,)) } Dense(3) }", 1, 20,
     "Input(...) is allowed only as the first statement of a net body"),
    ("block b { Input((3,)) Dense(3) }\nnet a { b }", 1, 11,
     "Input(...) is allowed only as the first statement of a net body"),
    ("net a { Input Dense(1) }", 1, 9,
     "Input is missing its argument 'shape' (e.g. Input((8, 8, 1)))"),
    ("net a { Input((0,)) Dense(3) }", 1, 15,
     "'shape' must be a tuple of 1 to 8 sizes, each a positive integer or -1 (any size), "
     "got (0,)"),
    ("net a { Input((2.5, 3)) Conv(3, 3) }", 1, 15,
     "'shape' must be a tuple of 1 to 8 sizes, each a positive integer or -1 (any size), "
     "got (2.5, 3)"),
    ("net a { Input(()) Dense(3) }", 1, 15,
     "'shape' must be a tuple of 1 to 8 sizes, each a positive integer or -1 (any size), "
     "got ()"),
    ("net a { Input((8, 8)) Dense(3) }", 1, 9,
     "Input((8, 8)) has 2 axes, but net 'a' is fully connected: its inputs are (features,), "
     "e.g. (64,) or (-1,)"),
    ("net a { Input((8,)) Conv(4, 3) }", 1, 9,
     "Input((8,)) gives no spatial axis, but net 'a' is convolutional: its inputs are "
     "(*spatial, channels), e.g. (8, 8, 1)"),
    ("net a { Input((8, 8, 1)) Conv(4, 9, padding = VALID) }", 1, 26,
     "kernel of size 9 is larger than the VALID input of size 8"),
    ("net a(act = Input) { Dense(1) }", 1, 13,
     "'Input' is a statement (the first of a net body), not a value"),
    ("let Input = 3\nnet a { Dense(1) }", 1, 5,
     "'Input' is a statement of the language; a constant cannot use that name"),
    ("block b(Input) { Dense(1) }\nnet a { b(1) }", 1, 9,
     "'Input' is a statement of the language; a parameter cannot use that name"),
])
def test_input_errors(src, line, col, message):
    assert error_at(src) == (line, col, message)


def test_check_inputs_against_the_declared_shape():
    net = parse(CNN)
    check_inputs(net, np.zeros((5, 8, 8, 1)), np.zeros((2, 8, 8, 1)))
    for shape, expected in [
        ((5, 8, 8), "x1 has shape (5, 8, 8), but net 'cnn' declares Input((8, 8, 1)): "
                    "expected (n, 8, 8, 1)"),
        ((5, 8, 8, 2), "x1 has shape (5, 8, 8, 2), but net 'cnn' declares Input((8, 8, 1)): "
                       "expected (n, 8, 8, 1)"),
        ((5, 6, 6, 1), "x1 has shape (5, 6, 6, 1), but net 'cnn' declares Input((8, 8, 1)): "
                       "expected (n, 8, 8, 1)"),
    ]:
        with pytest.raises(InputError) as info:
            check_inputs(net, np.zeros(shape), None)
        assert str(info.value) == expected
    with pytest.raises(InputError, match=r"^x2 has shape \(2, 8, 8\), but net 'cnn'"):
        check_inputs(net, np.zeros((5, 8, 8, 1)), np.zeros((2, 8, 8)))


def test_any_size_axes_and_fully_connected_nets():
    seq = parse("net s { Input((-1, 3)) Conv(4, 3) Relu GlobalAvgPool Dense(1) }")
    check_inputs(seq, np.zeros((2, 5, 3)), None)
    check_inputs(seq, np.zeros((2, 9, 3)), None)
    with pytest.raises(InputError) as info:
        check_inputs(seq, np.zeros((2, 9, 9, 3)), None)
    assert str(info.value) == ("x1 has shape (2, 9, 9, 3), but net 's' declares "
                               "Input((-1, 3)): expected (n, any, 3)")
    fc = parse("net f { Input((-1,)) Dense(3) }")
    check_inputs(fc, np.zeros((2, 7)), None)
    with pytest.raises(InputError, match=r"declares Input\(\(-1,\)\): expected \(n, any\)$"):
        check_inputs(fc, np.zeros((2, 7, 1)), None)


def test_without_input_a_conv_net_keeps_reading_rank_3_arrays_as_sequences():
    # the behaviour of nets written before Input existed; Input is how a spec refuses it
    check_inputs(parse(CNN.replace("Input((8, 8, 1)) ", "")), np.zeros((5, 8, 8)), None)


def test_check_uses_input_as_the_input_shape(tmp_path, capsys):
    (tmp_path / "c.ntk").write_text(CNN + "\n")
    assert main(["check", str(tmp_path / "c.ntk")]) == 0
    out = capsys.readouterr().out
    assert "  input: Input((8, 8, 1))\n" in out
    assert "layers: 4 after expansion; input shape (8, 8, 1)" in out
    assert "output shape: (1,)" in out
    # both given: they must agree
    assert main(["check", str(tmp_path / "c.ntk"), "--input-shape", "8,8,1"]) == 0
    capsys.readouterr()
    assert main(["check", str(tmp_path / "c.ntk"), "--input-shape", "8,8"]) == 2
    assert capsys.readouterr().err == (
        "--input-shape 8,8 does not fit net 'cnn', which declares Input((8, 8, 1))\n")
    # an axis of any size: no shapes without --input-shape, any size with it
    (tmp_path / "s.ntk").write_text("net s { Input((-1, 3)) Conv(4, 3) Relu Flatten Dense(1) }")
    assert main(["check", str(tmp_path / "s.ntk")]) == 0
    assert "output shape" not in capsys.readouterr().out
    assert main(["check", str(tmp_path / "s.ntk"), "--input-shape", "12,3"]) == 0
    assert "-> (12, 4)" in capsys.readouterr().out


def test_every_example_net_declares_its_input():
    for path in sorted(SPECS.glob("*.ntk")):
        for net in load_all(path) if path.name != "common.ntk" else ():
            assert net.input_shape is not None, (path.name, net.name)


def test_kernel_fn_refuses_images_without_a_channel_axis():
    import ntkdsl

    model = ntkdsl.compile(CNN)
    with pytest.raises(InputError) as info:
        model.kernel_fn(np.zeros((2, 8, 8)))
    assert str(info.value) == ("x1 has shape (2, 8, 8), but net 'cnn' declares "
                               "Input((8, 8, 1)): expected (n, 8, 8, 1)")
