"""``ntkdsl predict``: the infinite-width predictive distribution of a spec (eq. 13-16).

``--kind ntk`` is the NTK-GP of gradient-flow training of every layer
(eq. 14-15, eq. 16 at ``inf``); ``--kind nngp`` is readout-only training,
whose ``t = inf`` limit is the NNGP posterior (eq. 13). Writes an ``.npz``
with ``mean`` ``(n_times, n_test, outputs)``, ``cov`` ``(n_times, n_test, n_test)``
and ``time`` ``(n_times,)``, atomically (see ``ntkdsl.io``).

Saved kernels can stand in for the spec and inputs: ``--k-train-train K.npz
--k-test-train KT.npz [--k-test-test KTT.npz]`` (``.npz`` files with ``nngp``
/ ``ntk`` arrays as ``ntkdsl kernel -o`` writes them); without
``--k-test-test`` no covariance is written.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings

import numpy as np

from ..diagnostics import InputError
from .common import add_spec_arguments, load_input, load_net


def add_parser(subparsers) -> None:
    """Register the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict", help="NTK-GP / NNGP predictions of a spec at training times t",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
    )
    add_spec_arguments(p, spec_required=False,
                       spec_help="the spec file (.ntk); not given with --k-train-train")
    p.add_argument("--x-train", metavar="X.npy", help="train inputs (n, ...)")
    p.add_argument("--y-train", required=True, metavar="Y.npy", help="train targets (n, k)")
    p.add_argument("--x-test", metavar="T.npy", help="test inputs (m, ...)")
    p.add_argument("--adjacency-train", metavar="A.npy",
                   help="nets with Aggregate: the adjacency of each train graph, a dense .npy "
                        "(n, nodes, nodes) or an edge-list .npz (docs/cli.md)")
    p.add_argument("--adjacency-test", metavar="B.npy",
                   help="the same for the test graphs (m, nodes, nodes)")
    p.add_argument("--k-train-train", metavar="K.npz",
                   help="saved train kernels (n, n) instead of SPEC and inputs "
                        "(nngp, and ntk for --kind ntk)")
    p.add_argument("--k-test-train", metavar="KT.npz", help="saved test-train kernels (m, n)")
    p.add_argument("--k-test-test", metavar="KTT.npz",
                   help="saved test-test nngp (m, m) for the covariance (optional)")
    p.add_argument("--time", default="inf", metavar="T1,T2,...",
                   help="comma-separated training times, 'inf' allowed (default: inf)")
    p.add_argument("--learning-rate", type=float, default=1.0, metavar="ETA",
                   help="learning rate eta (default 1)")
    p.add_argument("--kind", choices=("ntk", "nngp"), default="ntk",
                   help="ntk: all layers trained (NTK-GP); nngp: readout only (default ntk)")
    p.add_argument("--diag-reg", type=float, default=0.0, metavar="R",
                   help="diagonal regulariser, relative to the mean train-kernel diagonal")
    p.add_argument("--loss", choices=("total", "mean"), default="total",
                   help="total: the paper's sum 1/2|f-y|^2; mean: divided by n*outputs")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="compute precision (default float64)")
    p.add_argument("--float32", action="store_const", const="float32", dest="dtype",
                   help="the same as --dtype float32")
    p.add_argument("--solver", choices=("auto", "dense", "cg", "lanczos"), default="auto",
                   help="dense eigendecomposition, or iterative (kernels tiled to disk); "
                        "auto: dense while it fits in memory (docs/solvers.md)")
    p.add_argument("--solver-options", default="", metavar="K=V,...",
                   help="iterative solver options, e.g. tol=1e-8,precond=nystrom,rank=500,"
                        "covariance=love,love_tol=1e-6 (docs/solvers.md)")
    p.add_argument("--storage", choices=("auto", "float32", "float64"), default="auto",
                   help="dtype of the train kernels an iterative solver tiles to disk "
                        "(auto: float32 when float64 would take over a quarter of memory)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                   help="output file; see docs/cli.md for the rules")
    p.set_defaults(run=run)


def parse_times(text: str) -> np.ndarray:
    """``"0.5,5,inf"`` -> ``array([0.5, 5., inf])``; raises :class:`InputError` when malformed."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            raise InputError(f"--time: expected comma-separated numbers or 'inf', "
                             f"got {item!r}") from None
        if math.isnan(value) or value < 0:
            raise InputError(f"--time: expected times >= 0, got {item!r}")
        out.append(value)
    return np.asarray(out, np.float64)


def parse_solver_options(text: str) -> dict:
    """``"tol=1e-8,precond=nystrom"`` -> ``{"tol": 1e-8, "precond": "nystrom"}``.

    Values that read as integers become ``int``, other numbers ``float``, the rest
    stay strings; the solver checks names and values (:class:`InputError`).
    """
    out: dict = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"--solver-options: expected KEY=VALUE items separated by "
                             f"commas, got {item!r}")
        value = value.strip()
        for cast in (int, float):
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value
    return out


def _targets(path: str, n: int, n_flag: str, dtype) -> np.ndarray:
    from ..io import check_cast, load_array

    y = check_cast(load_array(path, "--y-train"), dtype, "--y-train")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise InputError(f"--y-train: expected shape ({n}, outputs) to match {n_flag}, "
                         f"got {y.shape}")
    return y


def _saved_kernels(args, gets: tuple[str, ...], dtype):
    """The saved kernels, cast and checked against each other: (train, test_train, test_test)."""
    from ..io import check_cast
    from ..result import read_kernel_arrays

    def read(flag, path, names):
        arrays = read_kernel_arrays(path, flag, names)
        return {g: check_cast(np.asarray(a), dtype, f"{flag} {g}") for g, a in arrays.items()
                if g in names}

    kt = read("--k-train-train", args.k_train_train, gets)
    n = kt["nngp"].shape[0]
    if kt["nngp"].shape != (n, n):
        raise InputError(f"--k-train-train: expected square kernels (n, n), got "
                         f"{kt['nngp'].shape}")
    kx = read("--k-test-train", args.k_test_train, gets)
    m = kx["nngp"].shape[0]
    if kx["nngp"].shape[1] != n:
        raise InputError(f"--k-test-train: expected shape (m, {n}) to match --k-train-train "
                         f"{kt['nngp'].shape}, got {kx['nngp'].shape}")
    ktt = None
    if args.k_test_test is not None:
        ktt = read("--k-test-test", args.k_test_test, ("nngp",))["nngp"]
        if ktt.shape != (m, m):
            raise InputError(f"--k-test-test: expected shape ({m}, {m}) to match "
                             f"--k-test-train {kx['nngp'].shape}, got {ktt.shape}")
    return kt, kx, ktt


def _check_mode(args) -> bool:
    """True for saved kernels, False for SPEC and inputs; InputError when mixed or partial."""
    saved = [f for f, v in (("--k-train-train", args.k_train_train),
                            ("--k-test-train", args.k_test_train),
                            ("--k-test-test", args.k_test_test)) if v is not None]
    direct = [f for f, v in (("SPEC", args.spec), ("--x-train", args.x_train),
                             ("--x-test", args.x_test), ("--adjacency-train", args.adjacency_train),
                             ("--adjacency-test", args.adjacency_test)) if v is not None]
    if saved and direct:
        raise InputError(f"predict: give either SPEC --x-train --x-test or saved kernels "
                         f"--k-train-train --k-test-train, not both ({', '.join(direct)} with "
                         f"{', '.join(saved)})")
    if saved:
        for flag, v in (("--k-train-train", args.k_train_train),
                        ("--k-test-train", args.k_test_train)):
            if v is None:
                raise InputError(f"predict: {flag} is needed with {saved[0]}")
        return True
    for flag, v in (("SPEC", args.spec), ("--x-train", args.x_train),
                    ("--x-test", args.x_test)):
        if v is None:
            raise InputError(f"predict: {flag} is needed (or saved kernels: --k-train-train "
                             f"K.npz --k-test-train KT.npz)")
    return False


def _solver_note(out) -> str:
    info = getattr(out, "info", None)
    if not info:
        return ""
    return " (" + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in info.items() if k != "solver") + ")"


def run(args: argparse.Namespace) -> int:
    """Compute and save the predictive mean and covariance; returns the exit status."""
    from ..io import output_path, save_npz
    from ..predict import IllConditionedWarning, gradient_descent_mse_gp

    saved = _check_mode(args)
    times = parse_times(args.time)
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        raise InputError(f"--learning-rate: expected a positive number, got {args.learning_rate}")
    if not (args.diag_reg >= 0 and math.isfinite(args.diag_reg)):
        raise InputError(f"--diag-reg: expected a number >= 0, got {args.diag_reg}")
    output_path(args.output)  # a bad -o fails now, not after the computation
    dtype = np.dtype(args.dtype)
    gets = ("nngp", "ntk") if args.kind == "ntk" else ("nngp",)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IllConditionedWarning)
        if saved:
            kt, kx, ktt = _saved_kernels(args, gets, dtype)
            y_train = _targets(args.y_train, kt["nngp"].shape[0], "--k-train-train", dtype)
            dyn = gradient_descent_mse_gp(kt["nngp"], y_train, ntk_train_train=kt.get("ntk"),
                                          kind=args.kind, learning_rate=args.learning_rate,
                                          diag_reg=args.diag_reg, loss=args.loss, dtype=dtype,
                                          solver=args.solver,
                                          solver_options=parse_solver_options(
                                              args.solver_options))
            out = dyn(times, kx["nngp"], ktt, kx.get("ntk"))
        else:
            from ..model import Model
            from ..model_predict import model_predict_fn

            net = load_net(args)
            from ..signal import warn_if_deep
            warn_if_deep(net)  # one line on stderr when the depth makes the kernels degenerate
            x_train = load_input(args.x_train, "--x-train", net, dtype)
            x_test = load_input(args.x_test, "--x-test", net, dtype, x_train, "--x-train",
                                rows="m")
            y_train = _targets(args.y_train, x_train.shape[0], f"--x-train {x_train.shape}",
                               dtype)
            from ..graphs import load_adjacency_for

            a_train = load_adjacency_for(args.adjacency_train, "--adjacency-train", net,
                                         x_train, "--x-train")
            a_test = load_adjacency_for(args.adjacency_test, "--adjacency-test", net, x_test,
                                        "--x-test")
            graph_kw = {} if a_train is None else {"adjacency_train": a_train}
            fn = model_predict_fn(Model(net), x_train, y_train, kind=args.kind,
                                  learning_rate=args.learning_rate, diag_reg=args.diag_reg,
                                  loss=args.loss, dtype=dtype, solver=args.solver,
                                  solver_options=parse_solver_options(args.solver_options),
                                  storage=args.storage, **graph_kw)
            out = fn(x_test, times, **({} if a_test is None else {"adjacency_test": a_test}))
            dyn = fn
    print(f"ntkdsl predict: solver {getattr(dyn, 'solver', 'dense')}"
          f"{_solver_note(out)}", file=sys.stderr)
    for w in caught:
        print(f"ntkdsl predict: warning: {w.message}", file=sys.stderr)
    arrays = {"mean": np.asarray(out.mean)}
    if out.cov is not None:
        arrays["cov"] = np.asarray(out.cov)
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise InputError("predictions are not finite (the train kernel is too ill-conditioned); "
                         "pass --diag-reg as the warning above advises; nothing was written")
    save_npz(args.output, {**arrays, "time": times})
    what = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
    cov_note = "" if "cov" in arrays else ", no cov without --k-test-test"
    print(f"wrote {args.output}: {what} (kind={args.kind}, "
          f"times={','.join(f'{t:g}' for t in times)}{cov_note})")
    return 0
