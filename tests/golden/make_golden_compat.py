"""Write the goldens that ``tests/test_compat_golden.py`` compares ``ntkdsl.compat`` against.

Runs ONLY with the peer's interpreter (neural-tangents 0.6.5 on jax 0.4.23)::

    .peer-venv/bin/python tests/golden/make_golden_compat.py            # every net
    .peer-venv/bin/python tests/golden/make_golden_compat.py --only fc_branches
    .peer-venv/bin/python tests/golden/make_golden_compat.py --examples # the doc examples

The nets are the builders of ``tests/compat_nets.py``, called here with
``neural_tangents.stax`` and in the tests with ``ntkdsl.compat.stax``: one definition.
Each ``compat/NAME.npz`` holds ``x1`` (4, ...), ``x2`` (3, ...), the peer's kernels
``nngp_12``, ``ntk_12``, ``nngp_11``, ``ntk_11``, ``cov1``, ``cov2``, the shape and
parameter structure of ``init_fn(PRNGKey(0), (-1, *shape))``, its parameter leaves
``leaf_0, leaf_1, ...`` and ``apply_fn(params, x1)`` with them (``apply``).

``--examples`` runs each script of ``tests/compat_examples/`` (written with
``import ntkdsl.compat as nt``) with its imports switched to neural-tangents and
stores the ``RESULTS`` dict it fills in ``compat/example_NAME.npz``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import compat_nets  # noqa: E402
import neural_tangents  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = HERE / "compat"


def write_net(name: str) -> None:
    build, shape, options = compat_nets.NETS[name]
    x1, x2 = compat_nets.inputs(name, shape, options)
    init_fn, apply_fn, kernel_fn = build(stax)
    kw12, kw11, kw_apply, extra = {}, {}, {}, {}
    if "graph" in options:
        p1, p2 = compat_nets.patterns(name, x1, x2)
        kw12, kw11, kw_apply = {"pattern": (p1, p2)}, {"pattern": (p1, p1)}, {"pattern": p1}
        extra = {"pattern1": p1, "pattern2": p2}
    k12 = kernel_fn(x1, x2, ("nngp", "ntk"), **kw12)
    k11 = kernel_fn(x1, None, ("nngp", "ntk"), **kw11)
    cov1, cov2 = kernel_fn(x1, x2, ("cov1", "cov2"), **kw12)
    out_shape, params = init_fn(jax.random.PRNGKey(0), (-1, *shape))
    leaves = jax.tree_util.tree_leaves(params)
    data = dict(
        x1=x1, x2=x2, nngp_12=np.asarray(k12.nngp), ntk_12=np.asarray(k12.ntk),
        nngp_11=np.asarray(k11.nngp), ntk_11=np.asarray(k11.ntk),
        cov1=np.asarray(cov1), cov2=np.asarray(cov2),
        out_shape=np.asarray(out_shape), structure=compat_nets.structure(params),
        n_leaves=len(leaves), peer=neural_tangents.__version__, jax=jax.__version__,
        **extra, **{f"leaf_{i}": np.asarray(v) for i, v in enumerate(leaves)})
    if "random_apply" in options:  # dropout masks from a fixed key
        kw_apply["rng"] = jax.random.PRNGKey(3)
    data["apply"] = np.asarray(apply_fn(params, x1, **kw_apply))
    for key in ("nngp_12", "ntk_12", "nngp_11", "ntk_11"):
        if not np.isfinite(data[key]).all() and not (key.endswith("11") and "no_11" in options):
            raise SystemExit(f"{name}: the peer's {key} is not finite")
    np.savez(OUT / f"{name}.npz", **data)
    print(f"{name}: nngp_12[0] = {data['nngp_12'][0]}")


def write_example(path: Path) -> None:
    text = path.read_text()
    text = text.replace("import ntkdsl.compat as nt", "import neural_tangents as nt")
    text = text.replace("from ntkdsl.compat import stax", "from neural_tangents import stax")
    env: dict = {"__name__": "__example__"}
    exec(compile(text, str(path), "exec"), env)
    results = {k: np.asarray(v) for k, v in env["RESULTS"].items()}
    np.savez(OUT / f"example_{path.stem}.npz", **results)
    print(f"example {path.stem}: {sorted(results)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--examples", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.examples:
        for path in sorted((TESTS / "compat_examples").glob("*.py")):
            if args.only is None or path.stem in args.only:
                write_example(path)
        return
    failed = []
    for name in args.only or compat_nets.NETS:
        try:
            write_net(name)
        except Exception as err:  # report every net, then fail
            failed.append(name)
            print(f"{name}: FAILED {type(err).__name__}: {str(err)[:300]}")
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":
    main()
