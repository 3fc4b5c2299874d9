"""``ntkdsl predict``: the infinite-width predictive distribution of a spec (eq. 13-16).

``--kind ntk`` is the NTK-GP of gradient-flow training of every layer
(eq. 14-15, eq. 16 at ``inf``); ``--kind nngp`` is readout-only training,
whose ``t = inf`` limit is the NNGP posterior (eq. 13). Writes an ``.npz``
with ``mean`` ``(n_times, n_test, outputs)``, ``cov`` ``(n_times, n_test, n_test)``
and ``time`` ``(n_times,)``, atomically (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..diagnostics import InputError
from .common import add_spec_arguments, load_net


def add_parser(subparsers) -> None:
    """Register the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict", help="NTK-GP / NNGP predictions of a spec at training times t",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
    )
    add_spec_arguments(p)
    p.add_argument("--x-train", required=True, metavar="X.npy", help="train inputs (n, ...)")
    p.add_argument("--y-train", required=True, metavar="Y.npy", help="train targets (n, k)")
    p.add_argument("--x-test", required=True, metavar="T.npy", help="test inputs (m, ...)")
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
    p.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output file")
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


def _load(path: str, flag: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{flag}: no such file: {path}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{flag}: expected a .npy array file, could not read {path}: "
                         f"{e}") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise InputError(f"{flag}: expected a numeric .npy array, got {path}")
    return a


def save_npz_atomic(path: str | Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` (.npz) via a temporary file in the same folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"-o: folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run(args: argparse.Namespace) -> int:
    """Compute and save the predictive mean and covariance; returns the exit status."""
    from ..model import Model
    from ..model_predict import model_predict_fn
    from ..predict import IllConditionedWarning

    times = parse_times(args.time)
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        raise InputError(f"--learning-rate: expected a positive number, got {args.learning_rate}")
    if not (args.diag_reg >= 0 and math.isfinite(args.diag_reg)):
        raise InputError(f"--diag-reg: expected a number >= 0, got {args.diag_reg}")
    model = Model(load_net(args))
    x_train = _load(args.x_train, "--x-train")
    y_train = _load(args.y_train, "--y-train")
    x_test = _load(args.x_test, "--x-test")
    if y_train.ndim == 1:
        y_train = y_train[:, None]
    if y_train.ndim != 2 or y_train.shape[0] != x_train.shape[0]:
        raise InputError(f"--y-train: expected shape ({x_train.shape[0]}, outputs) to match "
                         f"--x-train {x_train.shape}, got {y_train.shape}")
    dtype = np.float32 if args.float32 else np.float64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IllConditionedWarning)
        fn = model_predict_fn(model, x_train, y_train, kind=args.kind,
                              learning_rate=args.learning_rate, diag_reg=args.diag_reg,
                              loss=args.loss, dtype=dtype)
        out = fn(x_test, times)
    for w in caught:
        print(f"ntkdsl predict: warning: {w.message}", file=sys.stderr)
    mean, cov = np.asarray(out.mean), np.asarray(out.cov)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise InputError("predictions are not finite (the train kernel is too ill-conditioned); "
                         "pass --diag-reg, e.g. 1e-6")
    save_npz_atomic(args.output, mean=mean, cov=cov, time=times)
    print(f"wrote {args.output}: mean {mean.shape}, cov {cov.shape} "
          f"(kind={args.kind}, times={','.join(f'{t:g}' for t in times)})")
    return 0
