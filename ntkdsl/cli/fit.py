"""``ntkdsl fit SPEC --x-train X.npy --y-train Y.npy --fit W,b[,noise]``: fit net parameters.

Maximises the log marginal likelihood (``--objective mll``) or minimises the
k-fold cross-validated squared error (``--objective cv``) of the NNGP or
NTK Gaussian process over the named net parameters (and the noise variance),
prints one table row per L-BFGS-B iteration to stderr, writes the result as
JSON (``--out``, atomically) and prints the fitted values as ``--set``
options on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..diagnostics import InputError
from .common import add_spec_arguments, load_input, parse_set_options, positive_int


def add_parser(subparsers) -> None:
    """Register the ``fit`` subcommand."""
    p = subparsers.add_parser(
        "fit",
        help="fit net parameters (and the noise) by marginal likelihood or cross-validation",
        description="Fit net parameters of a spec (e.g. W,b; add 'noise' for the noise "
                    "variance) to train data by maximising the log marginal likelihood of "
                    "the NNGP or NTK Gaussian process, or by k-fold cross-validation, with "
                    "L-BFGS-B. Prints a progress table on stderr and the fitted values as "
                    "--set options on stdout (docs/fitting.md).",
    )
    add_spec_arguments(p)
    p.add_argument("--x-train", required=True, metavar="X.npy", help="train inputs (n, ...)")
    p.add_argument("--y-train", required=True, metavar="Y.npy",
                   help="train targets (n,) or (n, k)")
    p.add_argument("--fit", required=True, metavar="W,b[,noise]",
                   help="the net parameters to fit, comma separated; 'noise' fits the noise "
                        "variance too")
    p.add_argument("--kind", choices=("nngp", "ntk"), default="nngp",
                   help="the NNGP (default) or the NTK Gaussian process")
    p.add_argument("--objective", choices=("mll", "cv"), default="mll",
                   help="mll: log marginal likelihood (default); cv: k-fold "
                        "cross-validated squared error")
    p.add_argument("--folds", type=positive_int, default=5, metavar="K",
                   help="folds for --objective cv (default 5)")
    p.add_argument("--noise", type=float, default=None, metavar="S",
                   help="the noise variance (start value when fitted; default 0, or "
                        "0.1 * mean(y^2) when fitted)")
    p.add_argument("--diag-reg", type=float, default=0.0, metavar="R",
                   help="fixed relative regulariser diag_reg * trace(K) / n (default 0)")
    p.add_argument("--maxiter", type=positive_int, default=200, metavar="N",
                   help="L-BFGS-B iterations at most (default 200)")
    p.add_argument("--out", metavar="result.json", help="write the result as JSON (atomically)")
    p.set_defaults(run=run)


def _finite(name: str, v: float | None) -> None:
    if v is not None and (not math.isfinite(v) or v < 0):
        raise InputError(f"{name} must be a finite number >= 0, got {v}")


def run(args: argparse.Namespace) -> int:
    """Fit and report; InputError / SpecError become exit 2 upstream."""
    import numpy as np

    from ..compiler.frontend import load
    from ..fit import NOISE, fit_hyperparameters
    from ..io import atomic_write, load_array, output_path
    from ..model import Model, _checked

    _finite("--noise", args.noise)
    _finite("--diag-reg", args.diag_reg)
    if args.out:
        output_path(args.out, "--out")  # a bad destination fails now, not after the fit
    names = [s.strip() for s in args.fit.split(",")]
    if any(not s for s in names):
        raise InputError(f"--fit expects comma-separated parameter names, got {args.fit!r}")
    trainable = tuple(n for n in names if n != NOISE)
    overrides = parse_set_options(args.set)
    for n in trainable:
        if n in overrides:
            raise InputError(f"--set {n} and --fit {n}: a fitted parameter starts at its default;"
                             " give the start value in the spec")
    net = load(args.spec, net=args.net, allow_import_from=args.allow_import_from,
               trainable=trainable, **overrides)
    model = _checked(Model(net, trainable))
    x = load_input(args.x_train, "--x-train", net, "float64")
    y = np.asarray(load_array(args.y_train, "--y-train"), dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise InputError(f"--y-train has shape {y.shape}, but --x-train has {x.shape[0]} rows: "
                         f"expected ({x.shape[0]},) or ({x.shape[0]}, k)")
    if not np.isfinite(y).all():
        raise InputError("--y-train contains NaN or infinite values")
    order = [*trainable, *([NOISE] if NOISE in names else [])]
    label = "log-lik" if args.objective == "mll" else "cv-mse"
    header = f"{'iter':>5} {label:>16} " + " ".join(f"{n:>14}" for n in order)
    print(header, file=sys.stderr)

    def progress(row):
        cells = " ".join(f"{row[n]:>14.8g}" for n in order)
        print(f"{row['iteration']:>5} {row['objective']:>16.10g} {cells}", file=sys.stderr,
              flush=True)

    result = fit_hyperparameters(model, x, y, fit=names, kind=args.kind,
                                 objective=args.objective, folds=args.folds, noise=args.noise,
                                 diag_reg=args.diag_reg, maxiter=args.maxiter,
                                 progress=progress)
    record = {"spec": args.spec, "net": net.name, **result.to_dict()}
    if args.out:
        text = json.dumps(record, indent=2, allow_nan=True) + "\n"
        atomic_write(args.out, lambda f: f.write(text.encode()), flag="--out")
    verdict = "converged" if result.success else f"stopped: {result.message}"
    print(f"{verdict} after {result.iterations} iterations; {label} {result.value:.10g} "
          f"(start {result.initial_value:.10g})", file=sys.stderr)
    fitted = {k: v for k, v in result.params.items() if k in trainable}
    line = " ".join(f"--set {k}={v:.10g}" for k, v in fitted.items())
    if NOISE in names:
        line += f"  # noise variance {result.noise:.10g}"
    print(line)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
