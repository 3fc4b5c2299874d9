"""The shipped printed sources (compiler/printed.py): a first call imports no sympy.

No timing is asserted: these tests prove structure (the table equals the printer's
output; a kernel call of a built-in net imports no sympy, cold or from the compile
cache; a second process's call compiles nothing).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ntkdsl
from ntkdsl.compiler import printed
from ntkdsl.compiler.layers.pointwise import Erf, LeakyRelu, Relu, Tanh, _cached

ROOT = Path(__file__).resolve().parent.parent


def test_table_is_the_printers_output():
    """Every stored source is what the printer prints now, and every instance is stored."""
    assert printed.render(printed.generate()) == (
        ROOT / "ntkdsl" / "compiler" / "printed_sources.py").read_text(), (
        "run: python -m ntkdsl.compiler.printed --write")


def test_lookup_gives_the_printed_function():
    for layer in (Relu(), Erf(), LeakyRelu(alpha=0.2)):
        for what in ("pair_fn", "t_fn", "diag_fn", "phi_fn"):
            fn = printed.lookup(layer, what)
            assert fn is not None, (layer, what)
            assert fn.__source__ == getattr(layer, "_build_" + what)().__source__
    # the quadrature's pair function is not a printed source: only its phi, phi'
    assert printed.lookup(Tanh(), "pair_fn") is None
    assert printed.lookup(Tanh(), "vals_fn") is not None


def test_values_outside_the_table_are_printed():
    odd = LeakyRelu(alpha=0.37)
    assert printed.key(odd) is not None and printed.lookup(odd, "pair_fn") is None
    assert _cached(odd, "pair_fn").__source__ == odd._build_pair_fn().__source__
    assert printed.lookup(Relu(), "T") is None  # expressions are never stored


def test_trainable_values_are_not_keys():
    m = ntkdsl.compile("net t(A = 1.0) { Dense(4); Erf(a=A); Dense(1) }", trainable=("A",))
    erf = m.net.body.layers[1]
    assert erf == Erf() and printed.key(erf) is None


_NO_SYMPY = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ntkdsl
    from ntkdsl import compile_cache as cc
    spec = sys.argv[1]
    x = np.random.default_rng(0).standard_normal((9, 3))
    k = ntkdsl.compile(spec).kernel_fn(x)
    s = cc.stats()
    print(json.dumps({"sympy": "sympy" in sys.modules, "hits": s.hits,
                      "compiles": s.compiles, "ntk": k.ntk.tolist()}))
""")


def _run(spec, cache):
    env = dict(os.environ, NTKDSL_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT),
               TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-c", _NO_SYMPY, spec], capture_output=True,
                       text=True, env=env, cwd=ROOT, check=False, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_first_call_and_cache_hit_import_no_sympy(tmp_path):
    """A built-in net's first call (cold cache) and a second process's (hit) need no sympy;
    the second compiles nothing and gives the same bits."""
    spec = "net t { Dense(8, W_std=1.5, b_std=0.1); Relu; Dense(8); Erf; Dense(1) }"
    cold = _run(spec, tmp_path / "c")
    assert not cold["sympy"] and cold["compiles"] >= 1
    hit = _run(spec, tmp_path / "c")
    assert not hit["sympy"] and hit["compiles"] == 0 and hit["hits"] >= 1
    assert hit["ntk"] == cold["ntk"]
