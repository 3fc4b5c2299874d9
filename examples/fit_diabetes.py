"""Fit W_std and b_std of a 3-layer ReLU net's NNGP kernel on scikit-learn's diabetes data.

Every model is a ``GaussianProcessRegressor`` on standardised inputs and targets
(``normalize_y=True``) with an observation noise fitted by maximum marginal
likelihood (a ``WhiteKernel``):

* the net's kernel at the spec's defaults (``W = sqrt(2)``, ``b = sqrt(0.1)``, the
  paper's), only the noise fitted;
* the same kernel with ``W`` and ``b`` fitted too (``ntkdsl.sklearn.SpecKernel``:
  scikit-learn's optimiser with the kernel's exact gradients), for the NNGP kernel
  and for the NTK;
* an RBF kernel with its amplitude and length scale fitted (the usual baseline);

plus ``NNGPRegressor`` at the spec's defaults with its default regulariser (no fit
at all). Reported: test RMSE in the target's units, the log marginal likelihood
per training point, the fitted values. Writes ``fit_diabetes.json`` to ``--out``;
``docs/sklearn.md`` shows its numbers.

    python examples/fit_diabetes.py            # 331 train / 111 test points
    python examples/fit_diabetes.py --quick    # 80 train points (the test's run)
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, parse_args, write_json
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ntkdsl.sklearn import NNGPRegressor, SpecKernel

SPEC = """net relu3(W = sqrt(2), b = sqrt(0.1)) {
    Input((-1,))
    defaults W_std = W, b_std = b
    Dense(512); Relu
    Dense(512); Relu
    Dense(512); Relu
    Dense(1)
}"""
DEFAULTS = {"W": 2**0.5, "b": 0.1**0.5}


def models() -> dict[str, object]:
    """The regressors compared, by name (each a fresh, unfitted pipeline)."""
    def gp(kernel):
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(
            kernel=kernel, alpha=0.0, normalize_y=True, n_restarts_optimizer=0))

    fixed = {"W": "fixed", "b": "fixed"}
    return {
        "NNGP, defaults, no fit": make_pipeline(
            StandardScaler(), NNGPRegressor(SPEC, normalize_y=True)),
        "NNGP, defaults, noise fitted": gp(
            SpecKernel(SPEC, params=dict(DEFAULTS), bounds=fixed) + WhiteKernel(0.1)),
        "NNGP, W, b, noise fitted": gp(
            SpecKernel(SPEC, params=dict(DEFAULTS)) + WhiteKernel(0.1)),
        "NTK, W, b, noise fitted": gp(
            SpecKernel(SPEC, kind="ntk", params=dict(DEFAULTS)) + WhiteKernel(0.1)),
        "RBF, amplitude, length, noise fitted": gp(
            ConstantKernel(1.0) * RBF(3.0) + WhiteKernel(0.1)),
    }


def evaluate(name: str, model, x_train, y_train, x_test, y_test) -> dict:
    """Fit one model; its test RMSE, marginal likelihood and fitted values."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        # a fixed hyperparameter at its bound, or an optimiser stopping at its
        # tolerance, is reported by scikit-learn as a ConvergenceWarning
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    rmse = float(np.sqrt(np.mean((model.predict(x_test) - y_test) ** 2)))
    row = {"model": name, "test_rmse": rmse, "seconds": seconds}
    est = model[-1]
    if isinstance(est, GaussianProcessRegressor):
        row["log_marginal_likelihood_per_point"] = (
            float(est.log_marginal_likelihood_value_) / len(y_train))
        k = est.kernel_
        if isinstance(k.k1, SpecKernel):
            row.update({name_: float(v) for name_, v in k.k1.params.items()})
        else:
            row["amplitude"] = float(k.k1.k1.constant_value)
            row["length_scale"] = float(k.k1.k2.length_scale)
        # the noise variance in the target's units (normalize_y works on unit variance)
        row["noise_std"] = float(np.sqrt(k.k2.noise_level) * np.std(y_train))
    return row


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the comparison, print a table, write ``fit_diabetes.json``; return the rows."""
    args = parse_args("Fit a ReLU net's W_std, b_std on the diabetes data; compare with RBF",
                      argv)
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25,
                                                        random_state=args.seed)
    if args.quick:
        x_train, y_train = x_train[:80], y_train[:80]
    rows = [evaluate(name, m, x_train, y_train, x_test, y_test)
            for name, m in models().items()]
    print(f"diabetes: {len(y_train)} train, {len(y_test)} test points; "
          f"target std {np.std(y_test):.1f}")
    print(f"{'model':38s} {'test RMSE':>9s} {'LML/n':>7s}  fitted")
    for r in rows:
        lml = r.get("log_marginal_likelihood_per_point")
        fitted = ", ".join(f"{k}={r[k]:.3g}" for k in ("W", "b", "amplitude", "length_scale",
                                                        "noise_std") if k in r)
        print(f"{r['model']:38s} {r['test_rmse']:9.2f} "
              f"{'' if lml is None else f'{lml:7.3f}':>7s}  {fitted}")
    write_json(args.out / "fit_diabetes.json", {
        "command": command_line("fit_diabetes.py", args), "spec": SPEC,
        "n_train": len(y_train), "n_test": len(y_test), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
