"""``ntkdsl demo``: the main job on the digits data (see :mod:`ntkdsl.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    """Register ``ntkdsl demo``."""
    p = sub.add_parser(
        "demo",
        help="the paper's result on the digits data: GP accuracy, net vs linearisation",
        description="Compute NNGP/NTK kernels of example specs on scikit-learn's digits, "
        "report NNGP and NTK-GP test accuracy, and train a finite network and its "
        "linearisation against the analytic prediction (Lee et al. 2019, eq. 9-16).",
    )
    p.add_argument("--n-train", type=int, default=256, help="training images (default 256)")
    p.add_argument("--n-test", type=int, default=256, help="test images (default 256)")
    p.add_argument("--widths", type=_widths, default=(128, 2048),
                   help="comma-separated widths of the finite nets (128,2048)")
    p.add_argument("--steps", type=int, default=1000, help="gradient-descent steps (1000)")
    p.add_argument("--out", type=Path, default=Path("demo-out"),
                   help="output folder for dynamics.png and results.json (demo-out)")
    p.add_argument("--specs-dir", type=Path, default=None,
                   help="folder with fc_relu.ntk and digits_cnn.ntk (default examples/specs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Run the main job with the parsed options."""
    from ..demo import DemoConfig
    from ..demo import run as run_demo

    cfg = DemoConfig(n_train=args.n_train, n_test=args.n_test, widths=args.widths,
                     steps=args.steps, record_every=max(args.steps // 20, 1), out=args.out,
                     specs_dir=args.specs_dir, seed=args.seed, progress=not args.no_progress)
    run_demo(cfg)
    return 0
