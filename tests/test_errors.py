"""Malformed specs: each gives a SpecError at an exact line and column with an exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntkdsl import SpecError
from ntkdsl.compiler.frontend import infer_shapes, load, parse


def check_error(src: str, line: int, col: int, message: str, **kwargs) -> SpecError:
    """Parse ``src`` (file name ``t.ntk``) and require a SpecError at (line, col) with message."""
    with pytest.raises(SpecError) as info:
        parse(src, filename="t.ntk", **kwargs)
    err = info.value
    assert (err.line, err.column, err.message) == (line, col, message), str(err)
    assert isinstance(err, ValueError)
    return err


# (source, line, column, message)
CASES = [
    # syntax
    ("net a { Dense(3)) }", 1, 17, "unexpected ')'; expected a statement, ';' or '}'"),
    ("net a {\n  Dense(3)\n", 3, 1, "unexpected end of input; expected a statement, ';' or '}'"),
    ("let x =", 1, 8, "unexpected end of input; expected an expression"),
    ("net a { Dense(3) @ }", 1, 18, "unexpected character '@'"),
    ("net a { Residual(3) }", 1, 17, "unexpected '('; expected '{'"),
    ('net a {\n  Dense("x)\n}', 2, 9, "unterminated string (strings end on the same line)"),
    ("net a { Dense(3) } x", 1, 20,
     "unexpected name 'x'; expected ';', 'activation', 'block', 'defaults', 'import', 'let', 'net' "
     "or end of input"),
    ("net a { Dense(3,, 4) }", 1, 17, "unexpected ','; expected an expression or ')'"),
    ("block { Relu }", 1, 7, "unexpected '{'; expected a name"),
    ("net a {\n\tRelu\n\t\x00\n}", 3, 2, "unexpected character '\\x00' (U+0000)"),
    ("net a { Dense(3 4) }", 1, 17,
     "unexpected number 4; expected an operator, ')' or ','"),
    # names, layers, arguments
    ("net a { Dens(3) }", 1, 9, "unknown layer or block 'Dens'"),
    ("net a {\n  Dense(3, W_sd = 2)\n}", 2, 12, "Dense has no argument 'W_sd'"),
    ("net a { Dense() }", 1, 9, "Dense is missing its argument 'out'"),
    ("net a { LeakyRelu }", 1, 9, "LeakyRelu is missing its argument 'alpha'"),
    ("net a { Dense(-3) }", 1, 15, "'out' must be a positive integer, got -3"),
    ("net a { Dense(5 / 2) }", 1, 15, "'out' must be a positive integer, got 2.5"),
    ("net a { Dense(3, W_std = -1) }", 1, 18, "'W_std' must be a number >= 0, got -1"),
    ("net a { Conv(3, 0) }", 1, 17,
     "'kernel' must be a positive integer or a tuple of them, got 0"),
    ("net a { Conv(3, 3, padding = 'same') }", 1, 20,
     "'padding' must be SAME, VALID or CIRCULAR, got 'same'"),
    ("net a { Conv(3, 3, padding = same) }", 1, 30, "unknown name 'same'"),
    ("net a { Dense(3, parameterization = 'NTK') }", 1, 18,
     "'parameterization' must be \"ntk\" or \"standard\", got 'NTK'"),
    ("net a { Dense(3, out = 4) }", 1, 18, "argument 'out' of Dense is given twice"),
    ("net a { Dense(out = 3, 4) }", 1, 24, "positional argument follows a keyword argument"),
    ("net a { Dense(3, 1, 0, 'ntk', 5) }", 1, 31,
     "Dense takes at most 4 arguments (out, W_std, b_std, parameterization) but 5 were given"),
    ("net a { Dense(wdth) }", 1, 15, "unknown name 'wdth'"),
    ("let x = 3\nnet a { x }", 2, 9, "'x' is an integer (3), not a layer"),
    ("net a { Dense(sqrt) }", 1, 15, "'sqrt' is a function; call it as sqrt(...)"),
    ("net a { Dense(foo(3)) }", 1, 15, "unknown function or layer 'foo'"),
    # expressions
    ("net a { Dense(1 / 0) }", 1, 15, "division by zero"),
    ("net a { Dense(10 ** 10 ** 10) }", 1, 15, "10 ** 10000000000 is too large"),
    ("net a { Dense(sqrt(-1)) }", 1, 15, "sqrt of a negative number (-1)"),
    ("net a { Dense(log(0)) }", 1, 15, "log of a non-positive number (0)"),
    ("net a { Dense(exp(1000)) }", 1, 15, "exp(1000) is too large"),
    ("net a { Dense((-8) ** 0.5) }", 1, 15, "negative number -8 to a fractional power 0.5"),
    ("net a { Dense(1e400) }", 1, 15, "number 1e400 is too large"),
    ("net a { Dense(99999999999999999999999) }", 1, 15,
     "integer 99999999999999999999... is too large"),
    ("net a { Dense(3037000500 * 3037000500) }", 1, 15, "integer too large (beyond 2**63)"),
    ("net a { Dense('a' + 1) }", 1, 15, "cannot apply '+' to string \"a\" and integer 1"),
    ("net a { Dense(-'a') }", 1, 15, "unary '-' needs a number, got string \"a\""),
    ("net a { Dense(min()) }", 1, 15, "min() needs at least one number"),
    # definitions
    ("net a(width) { Dense(width) }", 1, 7,
     "net parameter 'width' needs a default (write width = VALUE); every net parameter has one"),
    ("net a { }\nnet a { }", 2, 5, "'a' is already defined (line 1)"),
    ("block Dense(c) { }\nnet a { }", 1, 7,
     "'Dense' is a built-in layer; a block cannot use that name"),
    ("block b(c = 1, d) { }\nnet a { }", 1, 16,
     "parameter 'd' without a default follows one with a default"),
    ("block b(c, c) { }\nnet a { }", 1, 12, "parameter 'c' appears twice in block 'b'"),
    ("net a { let x = 1\n let x = 2 }", 2, 6, "'x' is already defined in this body"),
    # blocks
    ("block b(c) { Dense(c) }\nnet a { b() }", 2, 9, "block 'b' is missing its argument 'c'"),
    ("block b(c) { Dense(c) }\nnet a { b(1, 2) }", 2, 14,
     "block 'b' takes at most 1 argument (c) but 2 were given"),
    ("block b(c) { Dense(c) }\nnet a { b(d = 1) }", 2, 11, "block 'b' has no argument 'd'"),
    ("block b(c) { b(c) }\nnet a { b(1) }", 1, 14, "block 'b' calls itself (recursion: b -> b)"),
    ("block b(c) { d(c) }\nblock d(c) { b(c) }\nnet a { b(1) }", 2, 14,
     "block 'b' calls itself (recursion: b -> d -> b)"),
    # repeat and budgets
    ("net a { repeat 100000 { Relu } }", 1, 16,
     "repeat count 100000 is too large (a net has at most 10000 layers)"),
    ("net a {\n  repeat 9999 { repeat 9999 { } }\n}", 2, 17,
     "the spec takes too long to expand (more than 200000 steps); is a repeat count too "
     "large, or a block called too often?"),
    ("net a { repeat 9000 { Dense(3) Relu } }", 1, 23, "the net expands to more than 10000 layers"),
    ("net a { repeat -1 { Relu } }", 1, 16, "repeat count must be a non-negative integer, got -1"),
    ("net a { repeat 'x' { Relu } }", 1, 16,
     "repeat count must be a non-negative integer, got \"x\""),
    # defaults
    ("net a { defaults W_std = 2, b_sd = 1 }", 1, 29,
     "'defaults' cannot set 'b_sd'; it sets W_std, b_std or parameterization"),
    ("net a { defaults W_std = -2 }", 1, 26, "'W_std' must be a number >= 0, got -2"),
    # static checks
    ("net a {\n  Residual { Dense(3) Relu }\n}", 2, 3,
     "each Residual path must end in Dense or Conv (the branch ends in Relu): otherwise the two "
     "paths are not independent Gaussians and their kernels do not add"),
    ("net a { Residual { Dense(3) } shortcut { Relu } }", 1, 9,
     "each Residual path must end in Dense or Conv (the shortcut ends in Relu): otherwise the two "
     "paths are not independent Gaussians and their kernels do not add"),
    ("net a { Dense(4) Residual { Dense(3) } }", 1, 18,
     "Residual branch gives 3 channels but the identity shortcut (its input) gives 4; they must "
     "match to be added"),
    ("net a { Residual { Conv(3, 3, strides = 2) } shortcut { Conv(3, 1) } }", 1, 9,
     "Residual branch has total stride 2 but the shortcut has 1; they must downsample alike to "
     "be added"),
    ("net a { Residual { } }", 1, 9,
     "Residual with two identity paths (y = x + x) is not allowed: the paths are not "
     "independent, so their kernels do not add"),
    ("net a {\n  Flatten\n  Conv(3, 3)\n}", 3, 3,
     "Conv needs spatial axes, but the Flatten at line 2 removed them"),
    ("net a { GlobalAvgPool AvgPool(2) }", 1, 23,
     "AvgPool needs spatial axes, but the GlobalAvgPool at line 1 removed them"),
    ("net a { Conv(3, (3, 3)) Conv(3, (3, 3, 3)) }", 1, 25,
     "'kernel' of Conv has 3 entries, but earlier layers use 2 spatial axes"),
    # a nonlinearity needs a Gaussian input (the output of a Dense or Conv, maybe pooled)
    ("net a { Relu }", 1, 9,
     "Relu needs a Gaussian input, but its input is the raw input: put a Dense or Conv before it"),
    ("net a { Flatten Tanh }", 1, 17,
     "Tanh needs a Gaussian input, but its input is the raw input: put a Dense or Conv before it"),
    ("net a {\n  Dense(3)\n  Relu\n  Relu\n}", 4, 3,
     "Relu needs a Gaussian input, but its input is the output of Relu at line 3: put a Dense "
     "or Conv before it"),
    ("net a { Conv(3, 3) Relu AvgPool(2) Erf }", 1, 36,
     "Erf needs a Gaussian input, but its input is the output of Relu at line 1: put a Dense or "
     "Conv before it"),
    ("net a { Dense(3) Relu Identity Gelu }", 1, 32,
     "Gelu needs a Gaussian input, but its input is the output of Relu at line 1: put a Dense or "
     "Conv before it"),
    ("net a { Conv(3, 3) Relu GlobalAvgPool Sin }", 1, 39,
     "Sin needs a Gaussian input, but its input is the output of Relu at line 1: put a Dense or "
     "Conv before it"),
    # the identity path carries the Relu output, so the sum is not Gaussian
    ("net a {\n  Dense(3) Relu\n  Residual { Dense(3) }\n  Relu\n}", 4, 3,
     "Relu needs a Gaussian input, but its input is the output of Relu at line 2: put a Dense "
     "or Conv before it"),
    # inside a branch, the input of the Residual is what the first layer sees
    ("net a { Dense(3) Relu Residual { Erf Dense(3) } }", 1, 34,
     "Erf needs a Gaussian input, but its input is the output of Relu at line 1: put a Dense or "
     "Conv before it"),
]


@pytest.mark.parametrize(("src", "line", "col", "message"), CASES,
                         ids=[f"case{i}" for i in range(len(CASES))])
def test_malformed_spec(src, line, col, message):
    check_error(src, line, col, message)


def test_enough_cases():
    assert len(CASES) >= 25


def test_did_you_mean_notes():
    assert check_error("net a { Dens(3) }", 1, 9, "unknown layer or block 'Dens'").notes == (
        "did you mean 'Dense'?",)
    e = check_error("net a { Dense(3, W_sd = 2) }", 1, 18, "Dense has no argument 'W_sd'")
    assert e.notes == ("did you mean 'W_std'?",)
    e = check_error("net a(width = 3) { Dense(wdth) }", 1, 26, "unknown name 'wdth'")
    assert e.notes == ("did you mean 'width'?",)
    e = check_error("net a { Conv(3, 3, padding = same) }", 1, 30, "unknown name 'same'")
    assert e.notes == ("did you mean 'SAME'?",)
    e = check_error("block conv_relu(c) { }\nnet a { conv_rel(3) }", 2, 9,
                    "unknown layer or block 'conv_rel'")
    assert e.notes == ("did you mean 'conv_relu'?",)


def test_rendering_has_header_source_line_and_caret():
    e = check_error("net a {\n    Dense(3, W_sd = 2)\n}", 2, 14, "Dense has no argument 'W_sd'")
    lines = str(e).splitlines()
    assert lines[0] == "t.ntk:2:14: error: Dense has no argument 'W_sd'"
    assert lines[1] == "        Dense(3, W_sd = 2)"
    assert lines[2] == "    " + " " * 13 + "^" * len("W_sd = 2")
    assert lines[3] == "note: did you mean 'W_std'?"


def test_error_inside_block_notes_the_call():
    src = "block b(c) {\n  Dense(c, W_std = -1)\n}\nnet a {\n  b(3)\n}"
    e = check_error(src, 2, 12, "'W_std' must be a number >= 0, got -1")
    assert e.notes == ("in block 'b' called at t.ntk:5:3",)


def test_unknown_override_is_located_at_the_net():
    e = check_error("net a(width = 3) { Dense(width) }", 1, 5, "net 'a' has no parameter 'wdth'",
                    wdth=4)
    assert e.notes == ("did you mean 'width'?", "the parameters of net 'a' are: width")


def test_several_nets_need_a_name():
    with pytest.raises(SpecError) as info:
        parse("net a { Dense(1) Relu }\nnet b { Dense(1) Relu }", filename="t.ntk")
    assert info.value.message == "t.ntk defines several nets; name one with net=... (--net)"
    assert info.value.notes == ("nets in this file: a, b",)
    with pytest.raises(SpecError, match="no net named 'c'"):
        parse("net a { Dense(1) Relu }\nnet b { Dense(1) Relu }", net="c")


GAUSSIAN_NOTE = ("the infinite-width kernels of a nonlinearity are expectations over the "
                 "Gaussian output of an affine layer")


def test_non_gaussian_input_notes_the_reason_and_the_block_call():
    e = check_error("net a { Relu }", 1, 9, "Relu needs a Gaussian input, but its input is the "
                    "raw input: put a Dense or Conv before it")
    assert e.notes == (GAUSSIAN_NOTE,)
    src = "block act2() { Relu LeakyRelu(0.1) }\nnet a { Dense(3) act2() }"
    e = check_error(src, 1, 21, "LeakyRelu needs a Gaussian input, but its input is the output "
                    "of Relu at line 1: put a Dense or Conv before it")
    assert e.notes == (GAUSSIAN_NOTE, "in block 'act2' called at t.ntk:2:18")


@pytest.mark.parametrize("src", [
    "net a { Dense(3) Relu Identity Dense(3) Relu }",
    "net a { Conv(3, 3) Relu Conv(3, 3) Relu AvgPool(2) Conv(3, 3) Erf }",
    # Identity is linear (no Gaussian input needed); pooling and Flatten keep Gaussianity
    "net a { Identity }",
    "net a { Conv(3, 3) Flatten Tanh Dense(2) }",
    "net a { Conv(3, 3) GlobalAvgPool Gelu }",
    "net a { Dense(3) Relu Flatten Dense(3) Sin }",
    # a Residual sum is Gaussian when both paths are
    "net a { Dense(3) Residual { Relu Dense(3) } Relu }",
    "net a { Dense(3) Relu Residual { Dense(3) } shortcut { Dense(3) } Relu }",
])
def test_nonlinearities_after_an_affine_layer_are_accepted(src):
    assert parse(src).body.layers


def test_example_wrn_passes_the_gaussian_check():
    wrn = Path(__file__).parent.parent / "examples" / "specs" / "wrn.ntk"
    for blocks in (1, 2, 3):
        net = load(wrn, blocks=blocks)
        assert [s for _, s in infer_shapes(net, (8, 8, 3))][-1] == (10,)


@pytest.mark.parametrize(("src", "shape", "line", "col", "message"), [
    ("net a { Dense(3) Conv(3, 3) }", (5,), 1, 18,
     "Conv needs spatial axes, but its input has shape (3,) (no spatial axes)"),
    ("net a { Conv(3, 5, padding = VALID) }", (3, 3, 1), 1, 9,
     "kernel of size 5 is larger than the VALID input of size 3"),
    ("net a {\n  GlobalAvgPool\n}", (4,), 2, 3,
     "GlobalAvgPool needs spatial axes, but its input has shape (4,) (no spatial axes)"),
    ("net a { Residual { Conv(3, 3, padding = VALID) } }", (5, 5, 3), 1, 9,
     "Residual branch gives shape (3, 3, 3) but its input gives (5, 5, 3); they must match "
     "to be added"),
    ("net a { Conv(3, (3, 3)) }", (5, 5, 5, 1), 1, 9,
     "kernel has 2 entries but the input has 3 spatial axes"),
])
def test_shape_errors_are_located_at_the_layer(src, shape, line, col, message):
    net = parse(src, filename="t.ntk")
    with pytest.raises(SpecError) as info:
        infer_shapes(net, shape)
    err = info.value
    assert (err.line, err.column, err.message) == (line, col, message), str(err)
