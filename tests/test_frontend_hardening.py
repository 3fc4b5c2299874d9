"""Hostile and mistaken specs: imports, file reads, lexing, brackets, suggestions, budgets.

Every case asserts the exact location and message of the error it expects.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ntkdsl
from ntkdsl import SpecError
from ntkdsl.cli import main
from ntkdsl.compiler.expand import MAX_SOURCE_BYTES, MAX_STEPS
from ntkdsl.compiler.frontend import load, parse, parse_all
from ntkdsl.grammar.parser import MAX_SOURCE_CHARS


def error_of(fn, *args, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        fn(*args, **kwargs)
    return info.value


def where(err: SpecError) -> tuple[str, int, int, str]:
    return (Path(err.filename).name, err.line, err.column, err.message)


# -- imports: confined to the spec's tree, and non-specs are never quoted ------------------
def test_import_of_an_absolute_path_is_refused_without_echoing_it(tmp_path):
    spec = tmp_path / "a.ntk"
    spec.write_text('import "/proc/self/environ"\nnet a { Dense(1) }\n')
    err = error_of(load, spec)
    root = os.path.realpath(tmp_path)
    assert where(err) == ("a.ntk", 1, 1, "cannot import '/proc/self/environ': an absolute path "
                          f"outside the directory of the spec ({root})")
    assert "--allow-import-from DIR" in str(err)
    assert "PATH=" not in str(err)


def test_import_escaping_the_tree_with_dotdot_is_refused(tmp_path):
    (tmp_path / "lib.ntk").write_text("let w = 2\n")
    sub = tmp_path / "specs"
    sub.mkdir()
    (sub / "a.ntk").write_text('let x = 1\nimport "../lib.ntk"\nnet a { Dense(w) }\n')
    err = error_of(load, sub / "a.ntk")
    assert where(err) == ("a.ntk", 2, 1, "cannot import '../lib.ntk': a path outside the "
                          f"directory of the spec ({os.path.realpath(sub)})")
    # the explicit widening, in Python and on the command line
    net = load(sub / "a.ntk", allow_import_from=[tmp_path])
    assert net.body.layers[0].out == 2
    assert ntkdsl.compile_file(sub / "a.ntk", allow_import_from=str(tmp_path)).net == net
    assert parse('import "../lib.ntk"\nnet a { Dense(w) }', filename=str(sub / "t.ntk"),
                 allow_import_from=(tmp_path,)).body == net.body


def test_cli_allow_import_from(tmp_path, capsys):
    (tmp_path / "lib.ntk").write_text("let w = 2\n")
    sub = tmp_path / "specs"
    sub.mkdir()
    (sub / "a.ntk").write_text('import "../lib.ntk"\nnet a { Dense(w) }\n')
    assert main(["check", str(sub / "a.ntk")]) == 2
    assert "a.ntk:1:1: error: cannot import '../lib.ntk'" in capsys.readouterr().err
    assert main(["check", str(sub / "a.ntk"), "--allow-import-from", str(tmp_path)]) == 0
    assert "Dense(2)" in capsys.readouterr().out


def test_import_through_a_symlink_out_of_the_tree_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "lib.ntk").write_text("let w = 2\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "lib.ntk").symlink_to(outside / "lib.ntk")
    (tree / "a.ntk").write_text('import "lib.ntk"\nnet a { Dense(w) }\n')
    err = error_of(load, tree / "a.ntk")
    assert where(err)[:3] == ("a.ntk", 1, 1)
    assert err.message.startswith("cannot import 'lib.ntk': a path outside the directory")


def test_a_file_that_is_not_a_spec_is_never_quoted(tmp_path):
    (tmp_path / "secret.txt").write_text("TOKEN=hunter2\n")
    (tmp_path / "a.ntk").write_text('import "secret.txt"\nnet a { Dense(1) }\n')
    err = error_of(load, tmp_path / "a.ntk")
    assert where(err) == ("secret.txt", 1, 1, "unexpected a name; expected ';', 'activation', "
                          "'block', 'defaults', 'import', 'let', 'net' or end of input")
    assert str(err).count("\n") == 0 and "TOKEN" not in str(err)
    (tmp_path / "secret.txt").write_text("let x = 1\n$TOKEN=hunter2\n")
    err = error_of(load, tmp_path / "a.ntk")
    assert where(err) == ("secret.txt", 2, 1,
                          "unexpected character (the file is not a spec: it is not shown)")
    assert str(err).count("\n") == 0
    # nor a .ntk symlink to one, named on the command line
    (tmp_path / "link.ntk").symlink_to(tmp_path / "secret.txt")
    err = error_of(load, tmp_path / "link.ntk")
    assert (err.line, err.column) == (2, 1) and "hunter2" not in str(err)
    # a spec's own lines are quoted as always
    (tmp_path / "b.ntk").write_text("net a { Dense(1) = }\n")
    assert "    net a { Dense(1) = }" in str(error_of(load, tmp_path / "b.ntk"))


# -- reading files: never more than the limit ------------------------------------------------
def test_check_dev_zero_is_refused_after_a_bounded_read(capsys):
    assert main(["check", "/dev/zero"]) == 2
    err = capsys.readouterr().err
    assert err == ("/dev/zero: error: cannot read spec file: the file is too large (more than "
                   f"{MAX_SOURCE_BYTES} bytes)\n")


def test_a_ntk_symlink_to_dev_zero_in_a_checked_directory(tmp_path, capsys):
    (tmp_path / "a.ntk").write_text("net a { Dense(1) }\n")
    (tmp_path / "z.ntk").symlink_to("/dev/zero")
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.endswith("z.ntk: error: cannot read spec file: the file is too large (more "
                        f"than {MAX_SOURCE_BYTES} bytes)\n")


def test_an_import_of_dev_zero_or_a_fifo_or_a_huge_file_is_located_at_the_import(tmp_path):
    (tmp_path / "zero.ntk").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.ntk")
    (tmp_path / "big.ntk").write_text("let x = 1\n" + "#" * MAX_SOURCE_CHARS + "\n")
    for name, message in [
        ("zero.ntk", f"the file is too large (more than {MAX_SOURCE_BYTES} bytes)"),
        ("fifo.ntk", "it is not a regular file (a pipe or a socket)"),
        ("big.ntk", f"the file is too large ({MAX_SOURCE_CHARS + 11} characters; at most "
                    f"{MAX_SOURCE_CHARS})"),
    ]:
        (tmp_path / "a.ntk").write_text(f'let w = 1\n  import "{name}"\nnet a {{ Dense(w) }}\n')
        # /dev/zero is outside the tree: it takes an explicit widening to be read at all
        err = error_of(load, tmp_path / "a.ntk", allow_import_from="/dev")
        assert where(err) == ("a.ntk", 2, 3, f"cannot import '{name}': {message}")
    (tmp_path / "a.ntk").write_text('import "zero.ntk"\nnet a { Dense(1) }\n')
    assert error_of(load, tmp_path / "a.ntk").message.startswith(
        "cannot import 'zero.ntk': a path outside the directory of the spec")


def test_a_spec_and_its_imports_are_bounded_together(tmp_path):
    body = "let x = 1\n" + "#" * (MAX_SOURCE_CHARS - 1000) + "\n"
    for i in range(3):
        (tmp_path / f"l{i}.ntk").write_text(body.replace("x", f"x{i}"))
    (tmp_path / "a.ntk").write_text('import "l0.ntk"\nimport "l1.ntk"\nimport "l2.ntk"\n'
                                    "net a { Dense(1) }\n")
    err = error_of(load, tmp_path / "a.ntk")
    assert where(err) == ("a.ntk", 3, 1, "cannot import 'l2.ntk': the spec and its imports are "
                          f"too large together (more than {2 * MAX_SOURCE_CHARS} characters)")


# -- lexing ------------------------------------------------------------------------------
@pytest.mark.parametrize("src, line, col, message", [
    ('import "a\x00b.ntk"\nnet a { Relu }', 1, 10,
     "import path contains the control character '\\x00' (U+0000)"),
    ("net a { Dense(\u0663) }", 1, 15,
     "'\u0663' (U+0663) is not an ASCII digit; numbers are written with the digits 0-9"),
    ("net a { Dense(3, W_std = \uff12.\uff15) }", 1, 26,
     "'\uff12' (U+FF12) is not an ASCII digit; numbers are written with the digits 0-9"),
    ("net a { Dense(3\u0663) }", 1, 16,
     "'\u0663' (U+0663) is not an ASCII digit; numbers are written with the digits 0-9"),
    ("net a { Dense(10000000000000000000) }", 1, 15, "integer 10000000000000000000 is too large"),
])
def test_lexical_errors(src, line, col, message):
    err = error_of(parse, src, filename="t.ntk")
    assert where(err) == ("t.ntk", line, col, message)


def test_leading_zeros_are_fine():
    net = parse("net a { Dense(00000000000000000008, W_std = 01.50) }")
    assert (net.body.layers[0].out, net.body.layers[0].W_std) == (8, 1.5)


# -- unclosed brackets -------------------------------------------------------------------
def test_an_unclosed_brace_is_shown_as_well_as_the_end_of_input():
    err = error_of(parse, "net a {\n  Dense(3)\n", filename="t.ntk")
    assert where(err) == ("t.ntk", 3, 1,
                          "unexpected end of input; expected a statement, ';' or '}'")
    assert [(m, s.line, s.column) for m, s in err.related] == [
        ("this '{' is never closed", 1, 7)]
    assert str(err) == (
        "t.ntk:3:1: error: unexpected end of input; expected a statement, ';' or '}'\n"
        "t.ntk:1:7: note: this '{' is never closed\n"
        "    net a {\n"
        "          ^")


def test_an_unclosed_parenthesis_inside_a_brace():
    err = error_of(parse, "block b(c) {\n  Dense(c, W_std = sqrt(2)\n}\nnet a { b(1) }",
                   filename="t.ntk")
    assert where(err) == ("t.ntk", 3, 1, "unexpected '}'; expected ')' or ','")
    err = error_of(parse, "net a {\n  Dense(3, W_std = sqrt(2)", filename="t.ntk")
    assert [(m, s.line, s.column) for m, s in err.related] == [
        ("this '(' is never closed", 2, 8), ("this '{' is never closed", 1, 7)]


# -- did you mean ---------------------------------------------------------------------------
@pytest.mark.parametrize("src, line, col, message, note", [
    ("net a { Dense(3, w_std = 2) }", 1, 18, "Dense has no argument 'w_std'",
     "did you mean 'W_std'?"),
    ("net a { Dense(3) ReLU }", 1, 18, "unknown layer or block 'ReLU'", "did you mean 'Relu'?"),
    ("net a { Dense(3) relu }", 1, 18, "unknown layer or block 'relu'", "did you mean 'Relu'?"),
    ("net a { Conv(3, 3, padding = \"same\") }", 1, 20,
     "'padding' must be SAME, VALID or CIRCULAR, got 'same'",
     "did you mean SAME? (the padding words are upper case)"),
    ("net a { defaults parameterization = standard\n Dense(3) }", 1, 37,
     "unknown name 'standard'", 'did you mean the string "standard"? (write it in quotes)'),
    ("net a { Dense(3, parameterization = standard) }", 1, 37, "unknown name 'standard'",
     'did you mean the string "standard"? (write it in quotes)'),
    ("net a { Dense(3, parameterization = 'NTK') }", 1, 18,
     "'parameterization' must be \"ntk\" or \"standard\", got 'NTK'", 'did you mean "ntk"?'),
])
def test_did_you_mean(src, line, col, message, note):
    err = error_of(parse, src, filename="t.ntk")
    assert where(err) == ("t.ntk", line, col, message)
    assert err.notes == (note,)


# -- top-level defaults and blocks without () --------------------------------------------------
def test_top_level_defaults_apply_to_every_net_of_the_file(tmp_path):
    (tmp_path / "lib.ntk").write_text("defaults W_std = 3\nblock hidden { Dense(4) Relu }\n")
    (tmp_path / "a.ntk").write_text(
        'import "lib.ntk"\n'
        "defaults W_std = 2, b_std = 0.5\n"
        "net a { hidden Dense(1) }\n"
        "net b { defaults W_std = 1\n Dense(1) Dense(1, b_std = 0) }\n")
    a, b = ntkdsl.load_all(tmp_path / "a.ntk")
    # the library's own top-level defaults do not leak into the importer
    assert [(x.W_std, x.b_std) for x in a.walk() if hasattr(x, "W_std")] == [
        (2.0, 0.5), (2.0, 0.5)]
    assert [(x.W_std, x.b_std) for x in b.walk() if hasattr(x, "W_std")] == [
        (1.0, 0.5), (1.0, 0.0)]


def test_top_level_defaults_errors():
    err = error_of(parse, "defaults W_std = 2\ndefaults W_std = 3\nnet a { Dense(1) }",
                   filename="t.ntk")
    assert where(err) == ("t.ntk", 2, 10,
                          "'W_std' is already set by a top-level defaults (line 1)")
    err = error_of(parse, "defaults W_std = -1\nnet a { Dense(1) }", filename="t.ntk")
    assert where(err) == ("t.ntk", 1, 18, "'W_std' must be a number >= 0, got -1")
    err = error_of(parse, "defaults out = 3\nnet a { Dense(1) }", filename="t.ntk")
    assert where(err) == ("t.ntk", 1, 10, "'defaults' cannot set 'out'; it sets W_std, b_std "
                          "or parameterization")


def test_block_without_parentheses():
    net = parse("block hidden { Dense(8) Relu }\nnet a { hidden hidden() Dense(1) }")
    assert [type(x).__name__ for x in net.body.layers] == [
        "Dense", "Relu", "Dense", "Relu", "Dense"]
    err = error_of(parse, "block hidden { Dense(8) Relu }\nnet a { hidden(3) }",
                   filename="t.ntk")
    assert where(err) == ("t.ntk", 2, 16,
                          "block 'hidden' takes at most 0 arguments (none) but 1 were given")


# -- hostile specs are cheap: they fail at a location, within the budget --------------------
def _chain(k: int, fan: int, leaf: str = "block b0 { }") -> str:
    calls = " ".join(["b{i}"] * fan)
    lines = [leaf] + [f"block b{i} {{ {calls.format(i=i - 1)} }}" for i in range(1, k + 1)]
    return "\n".join(lines) + f"\nnet n {{ b{k} }}\n"


@pytest.mark.parametrize("k, fan, line, col, note, depth", [
    (19, 2, 4, 15, "in block 'b3' called at h.ntk:5:12", 17),
    (11, 4, 2, 18, "in block 'b1' called at h.ntk:3:12", 11),
])
def test_exponentially_many_empty_block_calls(k, fan, line, col, note, depth):
    err = error_of(parse, _chain(k, fan), filename="h.ntk")
    assert where(err) == ("h.ntk", line, col, f"the spec takes too long to expand (more than "
                          f"{MAX_STEPS} steps); is a repeat count too large, or a block called "
                          "too often?")
    assert err.notes[0] == note
    assert len(err.notes) == depth  # every call of the chain, innermost first


def test_a_huge_tuple_default_evaluated_at_every_call():
    tup = "(" + ", ".join(["1"] * 9000) + ")"
    err = error_of(parse, _chain(18, 2, f"block b0(t = {tup}) {{ }}"), filename="h.ntk")
    assert where(err)[:2] == ("h.ntk", 1)
    assert err.message.startswith("the spec takes too long to expand")


def test_tuples_built_by_concatenation_are_charged():
    lines = ["let t0 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)"]
    lines += [f"let t{i} = t{i - 1} + t0" for i in range(1, 990)]
    err = error_of(parse, "\n".join(lines) + "\nnet n { Dense(1) }", filename="h.ntk")
    assert where(err)[:3] == ("h.ntk", 200, 12)
    assert err.message.startswith("the spec takes too long to expand")


def test_the_budget_is_shared_by_every_net_of_a_file():
    src = _chain(14, 2).rsplit("net", 1)[0] + "".join(
        f"net n{i} {{ b14 }}\n" for i in range(20))
    err = error_of(parse_all, src, filename="h.ntk")
    assert err.message.startswith("the spec takes too long to expand")
    assert (err.line, err.column) == (2, 12)


def test_a_spec_over_the_size_limit():
    src = "net a { Dense(1) }\n" + "#" * MAX_SOURCE_CHARS
    err = error_of(parse, src, filename="t.ntk")
    assert where(err) == ("t.ntk", 1, 1, f"spec is too large ({len(src)} characters; at most "
                          f"{MAX_SOURCE_CHARS})")


def test_text_and_its_imports_are_bounded_together(tmp_path):
    (tmp_path / "l0.ntk").write_text("let x = 1\n" + "#" * (MAX_SOURCE_CHARS - 1000) + "\n")
    (tmp_path / "l1.ntk").write_text("let y = 1\n" + "#" * 2000 + "\n")
    text = 'import "l0.ntk"\nimport "l1.ntk"\nnet a { Dense(1) }\n' + "#" * (MAX_SOURCE_CHARS - 100)
    err = error_of(parse, text, filename=str(tmp_path / "t.ntk"))
    assert where(err) == ("t.ntk", 2, 1, "cannot import 'l1.ntk': the spec and its imports are "
                          f"too large together (more than {2 * MAX_SOURCE_CHARS} characters)")
