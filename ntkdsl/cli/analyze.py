"""``ntkdsl analyze SPEC [--depth L] [--x X.npy] [--plot out.png] [--json [FILE]] [--latex]``:
the signal-propagation theory of a spec's net, before any kernel is computed."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..diagnostics import InputError
from .common import add_spec_arguments, load_net


def add_parser(subparsers) -> None:
    """Register the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        "analyze",
        help="signal propagation: fixed points, order/chaos phase, depth scales, warnings",
        description="The mean-field theory of the net's repeated affine + nonlinearity block: "
                    "the variance fixed point q*, chi_1, the phase (ordered, chaotic, "
                    "critical), the correlation fixed point c*, the depth scales xi_q and "
                    "xi_c, and what they predict for the kernels at the given depth. "
                    "See docs/analyze.md.",
    )
    add_spec_arguments(p)
    p.add_argument("--depth", type=int, metavar="L",
                   help="predict for L blocks (default: the net's own depth)")
    p.add_argument("--x", metavar="X.npy",
                   help="inputs (n, ...) to predict on; with them the NNGP/NTK condition "
                        "numbers are computed with the compiled kernels on a sample")
    p.add_argument("--sample", type=int, default=200, metavar="N",
                   help="rows of --x used (default 200)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="write the phase diagram, correlation map and convergence plots")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the results as JSON (to FILE, or to stdout without one)")
    p.add_argument("--latex", action="store_true",
                   help="also print the critical line's equation in LaTeX")
    p.set_defaults(run=run)


def _f(v, fmt: str = ".6g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, fmt)


def format_text(a, latex: bool = False) -> str:
    """The analysis as a readable report (what ``ntkdsl analyze`` prints)."""
    lines = [
        f"net {a.net}: {a.covered}",
        f"repeated block: {a.block}",
        "",
        f"variance fixed point q*   {_f(a.q_star)}   (slope {_f(a.q_slope)}, "
        f"{'stable' if a.q_stable else 'not stable'})",
        f"chi_1 = W^2 E[phi'^2]     {_f(a.chi_1)}",
        f"phase                     {a.phase}",
        f"correlation fixed point   c* = {_f(a.c_star)}   (slope chi_c {_f(a.chi_c)})",
        f"depth scales              xi_q = {_f(a.xi_q, '.4g')}, xi_c = {_f(a.xi_c, '.4g')}",
        f"critical W_std^2 at b_std^2 = {a.b2:.4g}: {_f(a.critical_w2)}",
    ]
    if a.critical_line:
        lines.append(f"critical line             {a.critical_line}")
    if latex:
        lines.append("critical line (LaTeX)     " + (a.critical_line_latex or
                                                      "none found in closed form"))
    lines += [
        "",
        f"at depth {a.depth} ({a.output}), on {a.inputs}:",
        f"  mean variance           {_f(a.q_out)}",
        f"  correlations            {_f(a.c_mean)} +- {_f(a.c_spread, '.2g')}"
        f"  (largest {_f(a.c_max, '.12g')})",
        f"  condition numbers       NNGP {_f(a.nngp_cond_predicted, '.3g')}, NTK "
        f"{_f(a.ntk_cond_predicted, '.3g')} (predicted)",
    ]
    if a.nngp_cond is not None or a.ntk_cond is not None:
        lines.append(f"                          NNGP {_f(a.nngp_cond, '.3g')}, NTK "
                     f"{_f(a.ntk_cond, '.3g')} (compiled kernels on the sample)")
    if a.kernel_agreement is not None:
        lines.append(f"  theory vs kernels       max |c_predicted - c_kernel| = "
                     f"{a.kernel_agreement:.2g}")
    lines.append(f"  NTK scale Theta(x, x)   {_f(a.ntk_scale)}"
                 + (f"   eta_critical {_f(a.eta_critical)}" if a.eta_critical else ""))
    for n in a.notes:
        lines.append(f"note: {n}")
    for w in a.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Analyse, print (text or JSON), optionally plot."""
    from ..io import atomic_write, load_array
    from ..model import Model
    from ..signal import analyze

    if args.depth is not None and args.depth <= 0:
        raise InputError(f"--depth must be a positive integer, got {args.depth}")
    if args.sample <= 0:
        raise InputError(f"--sample must be a positive integer, got {args.sample}")
    x = None if args.x is None else load_array(args.x, "--x")
    model = Model(load_net(args))
    a = analyze(model, x=x, depth=args.depth, sample=args.sample)
    if args.plot:
        from ..signal.plot import plot_analysis

        plot_analysis(model, a, args.plot)
    if args.json is not None:
        text = json.dumps(a.to_dict(), indent=2, allow_nan=False) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            atomic_write(args.json, lambda f: f.write(text.encode()), flag="--json")
            print(format_text(a, latex=args.latex))
    else:
        print(format_text(a, latex=args.latex))
    return 0
