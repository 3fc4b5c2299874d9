"""Shared helpers of the paper scripts (examples/fig*.py): options, atomic output, training.

Training is :func:`ntkdsl.training.train` (net and linearisation side by side, jitted,
vmapped over ensembles) and the data is :func:`ntkdsl.data.load_digits`; this
module adds only what the scripts share beyond the library: options, atomic
output, the binary digits task, fitted slopes, and the discrete-time NTK-GP /
NNGP bands (:func:`gp_dynamics`, which the library has for gradient flow only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ntkdsl  # noqa: E402
from ntkdsl.data import load_digits  # noqa: E402
from ntkdsl.io import atomic_write  # noqa: E402

ROOT = Path(__file__).resolve().parent
SPECS = ROOT / "specs"
DEFAULT_OUT = ROOT / "out"


# -- command line and output -----------------------------------------------------

def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every figure script takes: ``--quick``, ``--out DIR``, ``--seed``.

    Arguments:
        description: the script's one-line purpose (shown by ``--help``).
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed namespace (``out`` is a :class:`Path`).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a smaller, faster run (fewer widths, samples and steps)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for the PNG and JSON (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p.parse_args(argv)


def _atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` atomically with the package's one writer (``ntkdsl.io.atomic_write``)."""
    atomic_write(path, write, flag="--out")


def _plain(x: Any) -> Any:
    """JSON-ready copies of numpy / jax values (NaN and inf become strings, never bare)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _plain(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(_plain(data), indent=2, allow_nan=False) + "\n"

    _atomic(path, lambda f: f.write(text.encode()))


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    _atomic(path, lambda f: fig.savefig(f, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def command_line(script: str, args: argparse.Namespace) -> str:
    """The command that reproduces a run (recorded in the JSON)."""
    parts = [f"python examples/{script}"]
    if args.quick:
        parts.append("--quick")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    return " ".join(parts)


class Clock:
    """Wall-clock timing of a script's phases, printed as it goes."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def log(self, msg: str) -> None:
        """Print ``msg`` with the seconds since start."""
        print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    @property
    def seconds(self) -> float:
        """Seconds since start."""
        return time.perf_counter() - self.start


# -- models and data ------------------------------------------------------------

def model(spec: str, net: str, **overrides) -> ntkdsl.Model:
    """Compile ``examples/specs/<spec>`` (net ``net``) with parameter overrides."""
    return ntkdsl.compile_file(SPECS / spec, net=net, **overrides)


def two_class_digits(n_train: int, n_test: int, *, classes=(0, 1), flat: bool = True,
                     seed: int = 0):
    """Two digit classes with scalar targets +-1/2 (the paper's binary regression task).

    Returns:
        ``(x_train, y_train, x_test, y_test)``; ``y`` of shape ``(n, 1)``.
    """
    d = load_digits(n_train, n_test, classes=tuple(classes), flat=flat, seed=seed)
    # zero-mean one-hot over two classes is (+1/2, -1/2); its first column is the target
    return d.x_train, d.y_train[:, :1], d.x_test, d.y_test[:, :1]


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def decreasing(values) -> bool:
    """Whether every value is smaller than the one before it."""
    return bool(all(b < a for a, b in itertools.pairwise(values)))


def rel_change(a, b) -> float:
    """``|b - a|_F / |a|_F`` over all leaves of two pytrees."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(jnp.sum((v - u) ** 2)) for u, v in zip(la, lb))
    den = sum(float(jnp.sum(u**2)) for u in la)
    return math.sqrt(num / den)


def safe_learning_rate(ntk_train_train, fraction: float = 0.5, momentum: float = 0.0) -> float:
    """``fraction * eta_critical`` of a train NTK (total loss)."""
    return fraction * ntkdsl.eta_critical(ntk_train_train, momentum=momentum)


# -- measures ----------------------------------------------------------------------

def rmse(a, b, axis=None):
    """Root mean squared difference."""
    return jnp.sqrt(jnp.mean((jnp.asarray(a) - jnp.asarray(b)) ** 2, axis=axis))


def mse_loss(f, y):
    """The paper's loss per example: ``1/(2n) sum |f - y|^2`` over the last two axes."""
    return 0.5 * jnp.sum((f - y) ** 2, axis=(-2, -1)) / f.shape[-2]


# -- infinite-width distributions of discrete-time training ---------------------------

def gp_dynamics(kind: str, k_xx, y_train, k_tx, k_tt, *, ntk_xx=None, ntk_tx=None,
                learning_rate: float, steps, momentum: float = 0.0):
    """Mean and covariance of test outputs after ``steps`` discrete steps, at infinite width.

    ``kind="ntk"``: every layer trained (NTK-GP, eq. 14-15, with discrete steps
    ``(I - eta Theta)^t`` in place of ``e^{-eta Theta t}``); ``kind="nngp"``:
    readout only (the kernel of the dynamics is the NNGP ``K``). Uses
    :func:`ntkdsl.predict.gradient_descent_mse` with identity targets to get
    ``A_t = Theta_tX Theta^{-1} (I - (I - eta Theta)^t)``; then
    ``mean = A_t Y`` and ``cov = K_tt + A_t K A_t^T - A_t K_Xt - K_tX A_t^T``
    (the output at init is the NNGP, and ``f_t = f_0 + A_t (Y - f_0(X))``).

    Returns:
        ``(mean (T, m, k), cov (T, m, m))``.
    """
    from ntkdsl.predict import gradient_descent_mse

    opt = "momentum" if momentum else "gd"
    dyn_k = ntk_xx if kind == "ntk" else k_xx
    dyn_tx = ntk_tx if kind == "ntk" else k_tx
    n = k_xx.shape[0]
    dyn = gradient_descent_mse(dyn_k, jnp.eye(n), learning_rate=learning_rate, optimizer=opt,
                               momentum=momentum if momentum else 0.9)
    _, a = dyn(jnp.asarray(steps, jnp.float64), 0.0, 0.0, dyn_tx)  # (T, m, n) = A_t
    mean = a @ jnp.asarray(y_train)
    cross = a @ k_tx.T  # A_t K_Xt
    cov = k_tt[None] + a @ k_xx @ jnp.swapaxes(a, 1, 2) - cross - jnp.swapaxes(cross, 1, 2)
    return mean, cov
