"""Write the peer's golden kernels for the branch statements (Sum, Concat, Product).

Runs ONLY with the peer's interpreter (neural-tangents 0.6.5 on jax 0.4.23), like
``make_golden.py``, whose layer records, inputs and file format it reuses::

    .peer-venv/bin/python tests/golden/make_golden_branches.py
    .peer-venv/bin/python tests/golden/make_golden_branches.py --only fc_concat

The goldens go to ``tests/golden/branches/NAME.npz`` (a folder of their own, so that
``make_golden.py`` never treats them as stale) and are checked by
``tests/test_branches_golden.py``. A branch statement maps onto the peer as
``serial(FanOut(n), parallel(B1, ..., Bn), FanInSum() | FanInConcat(axis=-1) |
FanInProd())``, an empty body ``{ }`` being ``Identity()``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_golden as mg  # noqa: E402
from make_golden import GAP, RELU, Arch, Conv, Dense, Erf  # noqa: E402

OUT = HERE / "branches"


@dataclass(frozen=True)
class Branches:
    """``KIND { B1 } { B2 } ...`` on one line; ``()`` is an empty body (the identity)."""

    kind: str  # "Sum", "Concat" or "Product"
    paths: tuple[tuple, ...]

    def spec(self) -> str:
        bodies = " ".join("{ " + " ".join(layer.spec() for layer in p) + " }" if p else "{ }"
                          for p in self.paths)
        return f"{self.kind} {bodies}"

    def peer(self, nd: int):
        from neural_tangents import stax
        fan_in = {"Sum": stax.FanInSum(), "Concat": stax.FanInConcat(axis=-1),
                  "Product": stax.FanInProd()}[self.kind]
        paths = [stax.serial(*(layer.peer(nd) for layer in p)) if p else stax.Identity()
                 for p in self.paths]
        return stax.serial(stax.FanOut(len(paths)), stax.parallel(*paths), fan_in)


ARCHS: tuple[Arch, ...] = (
    Arch("fc_sum3", (5,),
         (Dense(6, b_std=0.1),
          Branches("Sum", ((Dense(6, W_std=1.2, b_std=0.1),), (RELU, Dense(6, W_std=0.8)),
                           ())),
          RELU, Dense(1)),
         "Sum of three branches, one the identity (FC)"),
    Arch("fc_concat", (5,),
         (Dense(5, W_std=1.3), RELU,
          Branches("Concat", ((Dense(4, W_std=1.3, b_std=0.2),),
                              (Dense(3, W_std=1.1), Erf(), Dense(2)), ())),
          Dense(3, W_std=1.2, b_std=0.1), RELU,
          Branches("Concat", ((Dense(2),), (Dense(6, W_std=0.7),))),
          Dense(1, W_std=1.1, parameterization="standard")),
         "Concat of 3 branches with an identity (weights 4/12, 2/12, 5/12), then a Concat "
         "read by a standard-parameterised Dense (FC)"),
    Arch("fc_product", (4,),
         (Dense(4, W_std=1.2), RELU,
          Branches("Product", ((Dense(3, b_std=0.1),), (Dense(3, W_std=1.5),),
                               (Dense(5), Erf(), Dense(3, W_std=1.1)))),
          Dense(2, W_std=1.1), Dense(1)),
         "Product of three branches (NTK by the product rule) (FC)"),
    Arch("conv2d_concat_gap", (6, 6, 2),
         (Conv(4, 3, W_std=1.3), RELU,
          Branches("Concat", ((Conv(3, 3, W_std=1.3),), (Conv(5, 1, b_std=0.1),), ())),
          Conv(4, 3), RELU, GAP, Dense(1)),
         "Inception-style Concat (3x3, 1x1, identity) before GlobalAvgPool (full covariance)"),
    Arch("conv2d_sum_product_flatten", (5, 5, 2),
         (Conv(4, 3, W_std=1.2), RELU,
          Branches("Sum", ((Conv(4, 3, strides=2, W_std=1.3),),
                           (Conv(4, 1, strides=2, b_std=0.2),))),
          RELU,
          Branches("Product", ((Conv(3, 3, W_std=1.1),), (Conv(3, 1, b_std=0.2),))),
          mg.FLATTEN, Dense(1)),
         "strided Sum of two convolutions, Product of two, Flatten (diagonal path)"),
    Arch("conv1d_concat_product", (7, 2),
         (Conv(3, 3), RELU,
          Branches("Concat", ((Conv(2, 3, W_std=1.2),), (Conv(4, 2, padding="CIRCULAR"),))),
          Conv(3, 3, W_std=1.1),
          Branches("Product", ((Conv(2, 1),), (Conv(2, 3, W_std=0.9, b_std=0.1),))),
          GAP, Dense(1)),
         "1-D Concat then Product before GlobalAvgPool"),
)


def main(argv: list[str] | None = None) -> int:
    """Write the branch goldens (all, or ``--only`` some)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these goldens")
    args = parser.parse_args(argv)
    try:
        import jax
        import neural_tangents
    except ImportError:
        sys.exit("make_golden_branches.py needs the peer's interpreter: see its docstring")
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")
    versions = f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__}"
    OUT.mkdir(exist_ok=True)
    mg.HERE = OUT  # make() writes NAME.npz under mg.HERE
    for arch in ARCHS:
        if args.only and arch.name not in args.only:
            continue
        path = mg.make(arch, versions)
        print(f"wrote branches/{path.name} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
