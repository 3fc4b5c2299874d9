"""The parser: AST shapes and spans, literals, and the lark -> SpecError boundary."""

from __future__ import annotations

import lark
import pytest

from ntkdsl import SpecError
from ntkdsl.grammar import ast
from ntkdsl.grammar import parser as parser_mod
from ntkdsl.grammar.parser import parse_expression, parse_module


def test_parser_is_built_once():
    assert parser_mod._parser() is parser_mod._parser()
    assert parser_mod._parser().options.parser == "lalr"


def test_module_items_and_spans():
    src = 'import "x.ntk"\nlet W = 2\nblock b(c, k = 3) { Dense(c) }\nnet n { b(1); Relu }\n'
    m = parse_module(src, "f.ntk")
    imp, let, block, net = m.items
    assert imp == ast.Import("x.ntk", span=imp.span)
    assert (let.name, let.value) == ("W", ast.Number(2, span=let.span))
    assert [p.name for p in block.params] == ["c", "k"]
    assert block.params[1].default == ast.Number(3, span=block.span)
    call = net.body[0]
    assert (call.name, call.span.filename, call.span.line, call.span.column) == ("b", "f.ntk", 4, 9)
    assert (call.span.end_line, call.span.end_column) == (4, 13)
    assert net.body[1] == ast.Call("Relu", net.span, (), False, span=net.span)


def test_numbers_strings_tuples():
    def value(text):
        return parse_expression(text)

    assert value("3") == ast.Number(3, span=None) and type(value("3").value) is int
    for text, expected in [("1.5", 1.5), (".5", 0.5), ("1e-3", 1e-3), ("3.", 3.0), ("1E3", 1e3)]:
        v = value(text).value
        assert v == expected and type(v) is float
    assert value("'SAME'").value == "SAME" and value('"VALID"').value == "VALID"
    assert value("(3,)") == ast.TupleExpr((ast.Number(3, span=None),), span=None)
    assert value("()") == ast.TupleExpr((), span=None)
    assert len(value("(1, 2, 3,)").items) == 3
    # a parenthesised expression is not a tuple
    assert value("(3)") == ast.Number(3, span=None)


def test_operator_precedence():
    e = parse_expression("1 + 2 * -3 ** 2")
    assert isinstance(e, ast.BinOp) and e.op == "+"
    mul = e.right
    assert mul.op == "*" and isinstance(mul.right, ast.UnaryOp)
    assert mul.right.operand.op == "**"


def test_keywords_are_not_names_but_prefixes_are():
    m = parse_module("net n { repeats(1) Residuals }")
    assert [c.name for c in m.items[0].body] == ["repeats", "Residuals"]


@pytest.mark.parametrize("src", ["net", "net a {", "(", "let = 3", "\x00", "net a { Dense(3 }",
                                 "'unterminated", "block b(", "net a { repeat { } }"])
def test_lark_errors_never_escape(src):
    with pytest.raises(SpecError) as info:
        parse_module(src, "e.ntk")
    assert not isinstance(info.value, lark.exceptions.LarkError)
    assert "$END" not in str(info.value)
    assert info.value.filename == "e.ntk" and info.value.line >= 1


def test_expected_tokens_are_shown_as_typed():
    with pytest.raises(SpecError) as info:
        parse_module("net a { Dense(3) ", "e.ntk")
    assert info.value.message == "unexpected end of input; expected a statement, ';' or '}'"
    with pytest.raises(SpecError) as info:
        parse_module("block b(c { }", "e.ntk")
    assert info.value.message == "unexpected '{'; expected ')', ',' or '='"


def test_deep_brackets_are_rejected_before_parsing():
    with pytest.raises(SpecError) as info:
        parse_module("let x = " + "(" * 101 + "1" + ")" * 101)
    assert info.value.column == 9 + 100
    assert info.value.message == "brackets are nested too deeply (more than 100 levels)"
    # brackets inside comments and strings do not count
    parse_module("# " + "(" * 500 + "\nlet x = '" + "{" * 500 + "'")
