"""Every language feature, positively: the expansion equals the explicitly written form."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntkdsl import SpecError
from ntkdsl.compiler import expand as expand_mod
from ntkdsl.compiler.frontend import (
    Expression,
    infer_shapes,
    load,
    load_all,
    parse,
    parse_all,
)
from ntkdsl.compiler.layers import (
    AvgPool,
    Conv,
    Dense,
    Erf,
    GlobalAvgPool,
    Relu,
    Residual,
    Serial,
    Tanh,
)

SPECS = Path(__file__).parent / "specs"
EXAMPLES = Path(__file__).parent.parent / "examples" / "specs"


def flat(net) -> tuple:
    """The net's layers with every repeat unrolled (a Repeat node holds its iterations)."""
    out = []

    def go(node):
        for layer in node.children():
            if layer.combine == "sequence":
                go(layer)
            else:
                out.append(layer)

    go(net.body)
    return tuple(out)


def layers(src: str, **kw):
    return flat(parse(src, **kw))


def same(sugar: str, explicit: str, **kw) -> None:
    """The two specs expand to the same layer graph (spans are not compared)."""
    assert layers(sugar, **kw) == layers(explicit)


def test_language_md_example_expands_as_written():
    net = load(SPECS / "language_md.ntk")
    w = 2**0.5
    conv = Conv(out=256, kernel=3, padding="SAME", W_std=w)
    expected = (conv, Relu(), conv, Relu(), conv, Relu(), AvgPool(window=2), conv, Relu(),
                GlobalAvgPool(), Dense(out=10, W_std=w))
    assert net.name == "myrtle5"
    assert net.params == (("width", 256),)
    assert flat(net) == expected
    shapes = [s for _, s in infer_shapes(net, (8, 8, 3))]
    assert shapes == [(8, 8, 256)] * 6 + [(4, 4, 256)] * 3 + [(256,), (10,)]


def test_lexical_rules_comments_semicolons_numbers_strings():
    same("""
        # a comment
        net a {  # another
            Dense(3);;  Relu ; Dense(3) ; Erf(.5, 1e-3, 1.5);
            Conv(2, (3,), padding = 'VALID'); Conv(2, (3,), padding = "CIRCULAR")
            Conv(2, 3, padding = SAME)
        };
    """, """net a { Dense(3) Relu Dense(3) Erf(0.5, 0.001, 1.5) Conv(2, (3,), padding=VALID)
               Conv(2, (3,), padding=CIRCULAR) Conv(2, 3) }""")
    (_, erf) = layers("net a { Dense(1) Erf(.5, 1e-3, 1.5) }")
    assert (erf.a, erf.b, erf.c) == (0.5, 1e-3, 1.5)
    (conv,) = layers("net a { Conv(2, (3,)) }")
    assert conv.kernel == (3,)


def test_whitespace_does_not_separate_statements():
    same("net a{Dense(3)Relu Dense(4)}", "net a {\n Dense(3)\n Relu\n Dense(4)\n}")


def test_dense_out_is_an_int_and_integer_valued_floats_are_accepted():
    (d,) = layers("net a { Dense(512) }")
    assert d.out == 512 and type(d.out) is int
    (d,) = layers("net a(w = 1024) { Dense(w / 2) }")
    assert d.out == 512 and type(d.out) is int
    (c,) = layers("net a { Conv(4, (6 / 2, 3.0), strides = 2.0) }")
    assert c.kernel == (3, 3) and c.strides == 2 and type(c.strides) is int
    (d,) = layers("net a { Dense(3, W_std = 2) }")
    assert d.W_std == 2.0 and type(d.W_std) is float


def test_file_and_local_lets_and_scoping_innermost_first():
    src = """
        let w = 1
        let v = w + 1
        block b(w) { Dense(w) let w2 = w * 10 Dense(w2) }
        net a(w = 100) {
            Dense(w)           # the net parameter shadows the file let
            Dense(v)           # file-level let
            let w = 7          # a local let shadows the net parameter
            Dense(w)
            b(3)               # block parameter first
            repeat 1 { let z = w + 1 Dense(z) }
        }
    """
    assert [d.out for d in layers(src)] == [100, 2, 7, 3, 30, 8]


def test_block_parameters_see_the_net_parameters():
    # names resolve: block parameters and locals, then the net's parameters, then file lets
    same("block b() { Dense(width) }\nnet a(width = 9) { b }", "net a { Dense(9) }")


def test_blocks_positional_keyword_defaults():
    src = """
        block cr(c, k = 3, s = k - 2) { Conv(c, k, strides = s) Relu }
        net a { cr(4) cr(4, 5) cr(c = 4, s = 2) cr(4, k = 1, s = 1) }
    """
    explicit = """net a {
        Conv(4, 3, strides = 1) Relu  Conv(4, 5, strides = 3) Relu
        Conv(4, 3, strides = 2) Relu  Conv(4, 1, strides = 1) Relu }"""
    same(src, explicit)


def test_blocks_call_blocks_and_may_be_defined_later():
    same("net a { outer(2) }\nblock outer(c) { inner(c) inner(c + 1) }\n"
         "block inner(c) { Dense(c) }", "net a { Dense(2) Dense(3) }")


def test_repeat_counts_and_nesting():
    same("net a { repeat 3 { Dense(2) Relu } }",
         "net a { Dense(2) Relu Dense(2) Relu Dense(2) Relu }")
    same("net a { Dense(1) repeat 0 { Dense(2) } Relu }", "net a { Dense(1) Relu }")
    same("net a(n = 2) { repeat n * 1.0 { repeat 2 { Dense(3) Relu } Dense(1) } }",
         "net a { Dense(3) Relu Dense(3) Relu Dense(1) Dense(3) Relu Dense(3) Relu Dense(1) }")


def test_residual_forms():
    net = parse("net a { Dense(3) Residual { Relu Dense(3) } }")
    assert net.body.layers[1] == Residual(branch=Serial(layers=(Relu(), Dense(out=3))))
    net = parse("net a { Residual { Dense(3) } shortcut { Dense(3, W_std = 2) } }")
    assert net.body.layers[0] == Residual(branch=Serial(layers=(Dense(out=3),)),
                                          shortcut=Serial(layers=(Dense(out=3, W_std=2.0),)))
    # an empty shortcut is the identity
    same("net a { Residual { Dense(3) } shortcut { } }", "net a { Residual { Dense(3) } }")
    # an empty branch is the identity too: the sum commutes, so it becomes the shortcut
    same("net a { Residual { } shortcut { Dense(3) } }", "net a { Residual { Dense(3) } }")


def test_defaults_apply_to_following_affine_layers_and_nested_bodies():
    src = """
        block b() { Dense(5) }
        net a {
            Dense(1)
            defaults W_std = 2, b_std = 0.5
            Dense(2)
            Conv(2, 3, W_std = 1)              # explicit arguments win
            repeat 1 { Dense(3) defaults parameterization = "standard" Dense(4) }
            b                                  # flows into blocks expanded here
            Dense(6)                           # the nested body's defaults ended with it
            Residual { Dense(6) }
        }
    """
    explicit = """net a {
        Dense(1)
        Dense(2, W_std = 2, b_std = 0.5)
        Conv(2, 3, W_std = 1, b_std = 0.5)
        Dense(3, W_std = 2, b_std = 0.5)
        Dense(4, W_std = 2, b_std = 0.5, parameterization = "standard")
        Dense(5, W_std = 2, b_std = 0.5)
        Dense(6, W_std = 2, b_std = 0.5)
        Residual { Dense(6, W_std = 2, b_std = 0.5) }
    }"""
    same(src, explicit)


def test_net_parameters_and_overrides():
    src = "net a(width = 8, w = sqrt(4), k = width // 1) { Dense(width, W_std = w) }"
    with pytest.raises(SpecError):  # '//' is not in the language
        parse(src)
    src = "net a(width = 8, w = sqrt(4), half = width / 2) { Dense(width, W_std = w) Dense(half) }"
    net = parse(src)
    assert net.params == (("width", 8), ("w", 2.0), ("half", 4.0))
    net = parse(src, width=16)
    assert net.params == (("width", 16), ("w", 2.0), ("half", 8.0))
    assert net.body.layers == (Dense(out=16, W_std=2.0), Dense(out=8))
    net = parse(src, w=Expression("sqrt(9) + 1"))
    assert net.body.layers[0] == Dense(out=8, W_std=4.0)


def test_layer_valued_parameters():
    src = "let act2 = Erf(2)\nnet a(act = Relu) { Dense(3) act Dense(3) act2 }"
    assert layers(src) == (Dense(out=3), Relu(), Dense(out=3), Erf(a=2.0))
    assert layers(src, act="Tanh")[1] == Tanh()
    assert layers(src, act=Expression("Erf(1, b = 2)"))[1] == Erf(b=2.0)
    assert layers(src, act="Erf(0.5)")[1] == Erf(a=0.5)
    # a layer value may be given arguments where it is used
    assert layers("net a(act = Erf) { Dense(1) act(3) }") == (Dense(out=1), Erf(a=3.0))
    # blocks are values too
    same("block b(c) { Dense(c) Relu }\nnet a(blk = b(4)) { blk }", "net a { Dense(4) Relu }")


def test_expressions():
    src = """net a {
        Dense(2 + 3 * 4 - 6 / 3)         # 12.0
        Dense(-2 ** 2 + 10)               # -(2**2) + 10 = 6
        Dense(min(3, 7, 5) + max((1, 9)))
        Dense(log(exp(2)) + sqrt(16))
        Dense((2 + 3) * 2)
    }"""
    assert [d.out for d in layers(src)] == [12, 6, 12, 6, 10]
    (c,) = layers("net a { Conv(2, (1, 2) + (3,)) }")
    assert c.kernel == (1, 2, 3)
    (c,) = layers("net a { Conv(2, 3, padding = 'SA' + 'ME') }")
    assert c.padding == "SAME"


def test_net_selection_and_parse_all():
    src = "net a(w = 2) { Dense(w) }\nnet b { Dense(1) Relu }\nnet c(w = 3) { Dense(w) }"
    assert parse(src, net="b").body.layers == (Dense(out=1), Relu())
    nets = parse_all(src, w=5)
    assert [n.name for n in nets] == ["a", "b", "c"]
    assert [n.body.layers for n in nets] == [(Dense(out=5),), (Dense(out=1), Relu()),
                                             (Dense(out=5),)]
    with pytest.raises(SpecError, match="no net in <spec> has a parameter 'x'"):
        parse_all(src, x=1)
    # a net without parameters may be written with or without parentheses
    assert parse("net a() { Dense(1) Relu }").body == parse("net a { Dense(1) Relu }").body


def test_imports_relative_each_file_once_and_cycles(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.ntk").write_text("let K = 3\nblock cv(c) { Conv(c, K) }\n")
    (tmp_path / "lib" / "left.ntk").write_text('import "base.ntk"\nblock l(c) { cv(c) }\n')
    (tmp_path / "lib" / "right.ntk").write_text('import "base.ntk"\nblock r(c) { cv(c) }\n')
    (tmp_path / "main.ntk").write_text(
        'import "lib/left.ntk"\nimport "lib/right.ntk"\nlet K = 5\n'
        "net a { l(1) r(2) Conv(3, K) }\n")
    calls = []
    real = expand_mod.parse_module

    def counting(source, filename="<spec>", **kwargs):
        calls.append(filename)
        return real(source, filename, **kwargs)

    monkeypatch.setattr(expand_mod, "parse_module", counting)
    net = load(tmp_path / "main.ntk")
    assert net.body.layers == (Conv(out=1, kernel=3), Conv(out=2, kernel=3), Conv(out=3, kernel=5))
    assert sorted(Path(c).name for c in calls) == ["base.ntk", "left.ntk", "main.ntk", "right.ntk"]
    # imports are not re-exported: main.ntk cannot use cv directly
    (tmp_path / "bad.ntk").write_text('import "lib/left.ntk"\nnet a { cv(1) }\n')
    with pytest.raises(SpecError, match="unknown layer or block 'cv'"):
        load(tmp_path / "bad.ntk")
    (tmp_path / "c1.ntk").write_text('import "c2.ntk"\nnet a { Relu }\n')
    (tmp_path / "c2.ntk").write_text('\nimport "c1.ntk"\n')
    with pytest.raises(SpecError) as info:
        load(tmp_path / "c1.ntk")
    err = info.value
    assert (Path(err.filename).name, err.line, err.column) == ("c2.ntk", 2, 1)
    assert err.message == "import cycle: c1.ntk -> c2.ntk -> c1.ntk"
    with pytest.raises(SpecError, match=r"cannot import 'nope\.ntk': no such file"):
        parse('import "nope.ntk"\nnet a { Relu }', filename=str(tmp_path / "x.ntk"))


def test_load_reads_bytes_and_rejects_invalid_utf8(tmp_path):
    p = tmp_path / "bom.ntk"
    p.write_bytes(b"\xef\xbb\xbfnet a { Dense(1) Relu }")
    assert load(p).body.layers == (Dense(out=1), Relu())
    p = tmp_path / "bad.ntk"
    p.write_bytes(b"net a {\n  Dense(3) \xff\n}")
    with pytest.raises(SpecError) as info:
        load(p)
    assert (info.value.line, info.value.column) == (2, 12)
    assert info.value.message == "the file is not valid UTF-8 (byte 0xff)"
    with pytest.raises(SpecError, match="cannot read spec file"):
        load(tmp_path / "missing.ntk")


def test_deep_nesting_is_a_spec_error_not_a_recursion_error():
    with pytest.raises(SpecError, match="nested too deeply"):
        parse("net a { Dense(" + "(" * 5000 + "1" + ")" * 5000 + ") }")
    with pytest.raises(SpecError, match="nested too deeply"):
        parse("net a { Dense(" + "1 + " * 5000 + "1) }")
    with pytest.raises(SpecError, match="nested too deeply"):
        parse("net a { " + "Residual { " * 500 + "Dense(1) " + "} " * 500 + "}")
    # a long flat chain of blocks is fine up to the call-depth limit
    chain = "\n".join(f"block b{i}() {{ b{i + 1} }}" for i in range(150))
    with pytest.raises(SpecError, match="nested too deeply"):
        parse(chain + "\nblock b150() { Relu }\nnet a { b0 }")


def test_every_example_spec_checks():
    files = sorted(EXAMPLES.glob("*.ntk"))
    assert len(files) >= 8
    names = []
    for f in files:
        if f.name == "common.ntk":
            continue
        nets = load_all(f)
        names += [n.name for n in nets]
        for n in nets:
            assert all(v is not None for _, v in n.params)
    for expected in ("fc1", "fc3", "fc3_tanh", "fc5", "fc_erf", "myrtle5", "wrn", "conv1d",
                     "cnn_flatten", "cnn_gap"):
        assert expected in names
    assert [s for _, s in infer_shapes(load(EXAMPLES / "wrn.ntk"), (8, 8, 1))][-1] == (10,)
    shapes = infer_shapes(load(EXAMPLES / "digits_cnn.ntk", net="cnn_flatten"), (8, 8, 1))
    assert shapes[-1][1] == (10,)
    assert infer_shapes(load(EXAMPLES / "conv1d.ntk"), (32, 4))[-1][1] == (1,)


def test_paper_fc_nets_have_the_paper_variances():
    (fc2,) = load_all(EXAMPLES / "fc_tanh.ntk")
    dense = [x for x in flat(fc2) if isinstance(x, Dense)]
    assert len(dense) == 4 and sum(isinstance(x, Tanh) for x in flat(fc2)) == 3
    assert all(abs(d.W_std**2 - 1.5) < 1e-12 and d.b_std == 0 for d in dense)
    fc5 = load(EXAMPLES / "fc_deep.ntk")
    dense = [x for x in flat(fc5) if isinstance(x, Dense)]
    assert len(dense) == 6
    assert all(abs(d.W_std**2 - 2) < 1e-12 and abs(d.b_std**2 - 0.1) < 1e-12 for d in dense)
    fc1, fc3 = load_all(EXAMPLES / "fc_relu.ntk")
    assert sum(isinstance(x, Relu) for x in flat(fc1)) == 1
    assert sum(isinstance(x, Relu) for x in flat(fc3)) == 3


def test_every_builtin_layer_of_the_language():
    from ntkdsl.compiler.layers import ABRelu, Flatten, Gelu, Identity, LeakyRelu, Sin

    src = """net a {
        Conv(4, (3, 2), strides = (1, 2), padding = CIRCULAR, W_std = 1.5, b_std = 0.1,
             parameterization = "standard")
        Relu Dense(4) LeakyRelu(0.1) Dense(4) ABRelu(-0.5, 2) Dense(4) Erf(2, 0.5, 0.1)
        Dense(4) Gelu Dense(4) Sin(1, 2, 0.5) Dense(4) Tanh Identity
        AvgPool((2, 2), strides = 1, padding = SAME)
        AvgPool(2)
        Flatten
        Dense(3, 2, 0.5, "standard")
    }"""
    got = layers(src)
    assert got == (
        Conv(out=4, kernel=(3, 2), strides=(1, 2), padding="CIRCULAR", W_std=1.5, b_std=0.1,
             parameterization="standard"),
        Relu(), Dense(out=4), LeakyRelu(alpha=0.1), Dense(out=4), ABRelu(a=-0.5, b=2.0),
        Dense(out=4), Erf(a=2.0, b=0.5, c=0.1), Dense(out=4), Gelu(), Dense(out=4),
        Sin(a=1.0, b=2.0, c=0.5), Dense(out=4), Tanh(), Identity(),
        AvgPool(window=(2, 2), strides=1, padding="SAME"), AvgPool(window=2), Flatten(),
        Dense(out=3, W_std=2.0, b_std=0.5, parameterization="standard"),
    )
    shapes = [s for _, s in infer_shapes(parse(src), (8, 8, 2))]
    assert shapes[0] == (8, 4, 4) and shapes[15] == (8, 4, 4) and shapes[16] == (4, 2, 4)
    assert shapes[-2:] == [(32,), (3,)]


def test_python_override_values():
    import numpy as np

    src = "net a(w = 2, k = (3, 3)) { Conv(w, k) }"
    assert layers(src, w=np.int64(5), k=[1, 1]) == (Conv(out=5, kernel=(1, 1)),)
    assert layers(src, w=4.0) == (Conv(out=4, kernel=(3, 3)),)
    for bad in (True, {"x": 1}, float("nan"), None):
        with pytest.raises(SpecError, match="override 'w'"):
            parse(src, w=bad)
    with pytest.raises(SpecError, match="'out' must be a positive integer"):
        parse(src, w="wide")
