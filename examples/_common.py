"""Shared helpers of the paper scripts (examples/fig*.py): options, atomic output, training.

The training loop here trains a finite network and (optionally) its
linearisation side by side from the same init, with full-batch gradient descent
or heavy-ball momentum on the paper's total MSE loss ``L = 1/2 sum |f - y|^2``
(eq. 2), recording outputs at chosen steps. It is a pure function of the
initial parameters, so it can be jitted and vmapped over an ensemble.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ntkdsl  # noqa: E402

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


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, write)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
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


def digits(n_train: int, n_test: int, **kwargs):
    """:func:`ntkdsl.data.load_digits` with pixels that are constant on the training set zeroed.

    The loader standardises each pixel by its training std plus 1e-8, so a pixel that
    is constant (blank) on a small training set but not on the test set becomes ~1e8
    in the test inputs. Such pixels carry no information about the training set;
    we set them to 0 (their training value) in both splits.
    """
    from dataclasses import replace

    from ntkdsl.data import load_digits

    d = load_digits(n_train, n_test, **kwargs)
    flat_tr = d.x_train.reshape(len(d.x_train), -1)
    blank = np.ptp(flat_tr, axis=0) == 0
    if not blank.any():
        return d
    x_te = d.x_test.reshape(len(d.x_test), flat_tr.shape[1]).copy()
    x_te[:, blank] = 0.0
    x_tr = flat_tr.copy()
    x_tr[:, blank] = 0.0
    return replace(d, x_train=x_tr.reshape(d.x_train.shape), x_test=x_te.reshape(d.x_test.shape))


def two_class_digits(n_train: int, n_test: int, *, classes=(0, 1), flat: bool = True,
                     seed: int = 0):
    """Two digit classes with scalar targets +-1/2 (the paper's binary regression task).

    Returns:
        ``(x_train, y_train, x_test, y_test)``; ``y`` of shape ``(n, 1)``.
    """
    d = digits(n_train, n_test, classes=tuple(classes), flat=flat, seed=seed)
    # zero-mean one-hot over two classes is (+1/2, -1/2); its first column is the target
    return d.x_train, d.y_train[:, :1], d.x_test, d.y_test[:, :1]


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def rel_change(a, b) -> float:
    """``|b - a|_F / |a|_F`` over all leaves of two pytrees."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(jnp.sum((v - u) ** 2)) for u, v in zip(la, lb))
    den = sum(float(jnp.sum(u**2)) for u in la)
    return math.sqrt(num / den)


def safe_learning_rate(ntk_train_train, fraction: float = 0.5, momentum: float = 0.0) -> float:
    """``fraction * eta_critical`` of a train NTK (total loss)."""
    return fraction * ntkdsl.eta_critical(ntk_train_train, momentum=momentum)


# -- training a net and its linearisation ----------------------------------------------

def record_steps(steps: int, n_points: int) -> np.ndarray:
    """About ``n_points`` steps from 0 to ``steps``, spaced logarithmically (0 included)."""
    s = np.unique(np.round(np.geomspace(1, steps, max(n_points - 1, 2))).astype(int))
    return np.concatenate([[0], s])


def make_trainer(apply_fn, x_train, y_train, *, learning_rate: float, steps: Sequence[int],
                 x_test=None, momentum: float = 0.0, linearized: bool = True,
                 probe: Callable[[Any], Any] | None = None):
    """A pure function ``params0 -> history`` that trains the net (and its linearisation).

    Full-batch heavy-ball momentum on the total loss ``1/2 sum |f - y|^2``:
    ``v <- momentum v - learning_rate grad; p <- p + v`` (plain gradient descent
    when ``momentum = 0``), from ``v = 0``; the linearisation
    ``f_lin(p) = f(p0) + J(p0)(p - p0)`` (:func:`ntkdsl.linearize`) is trained
    by the same rule from the same init.

    Arguments:
        apply_fn: ``apply_fn(params, x)``.
        x_train, y_train: the training set, ``y_train`` of shape ``(n, k)``.
        learning_rate: ``eta``.
        steps: increasing step counts at which to record (0 allowed).
        x_test: inputs whose outputs are recorded too (optional).
        momentum: heavy-ball coefficient in ``[0, 1)``.
        linearized: also train the linearisation.
        probe: ``probe(params) -> pytree`` recorded at each step of ``steps``
            (e.g. a few individual weights).

    Returns:
        ``run(params0) -> dict`` with, for ``"net"`` (and ``"lin"``): ``train``
        ``(len(steps), n, k)``, ``test`` (if ``x_test``), ``probe`` (if given),
        ``final`` (the parameters after the last step).
    """
    steps = np.asarray(steps, int)
    if np.any(np.diff(steps) < 0) or steps[0] < 0:
        raise ValueError(f"steps must be increasing and >= 0, got {steps}")
    gaps = jnp.asarray(np.diff(np.concatenate([[0], steps])))
    y = jnp.asarray(y_train)
    xs = jnp.asarray(x_train)
    xt = None if x_test is None else jnp.asarray(x_test)

    def run(params0):
        fns = {"net": apply_fn}
        if linearized:
            fns["lin"] = ntkdsl.linearize(apply_fn, params0)

        def loss(p, f):
            return 0.5 * jnp.sum((f(p, xs) - y) ** 2)

        grads = {name: jax.grad(lambda p, f=f: loss(p, f)) for name, f in fns.items()}
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params0)
        state0 = {name: (params0, zeros) for name in fns}

        def one_step(_, state):
            new = {}
            for name, (p, v) in state.items():
                g = grads[name](p)
                v = jax.tree_util.tree_map(lambda a, b: momentum * a - learning_rate * b, v, g)
                new[name] = (jax.tree_util.tree_map(jnp.add, p, v), v)
            return new

        def segment(state, gap):
            state = jax.lax.fori_loop(0, gap, one_step, state)
            rec = {}
            for name, (p, _) in state.items():
                r = {"train": fns[name](p, xs)}
                if xt is not None:
                    r["test"] = fns[name](p, xt)
                if probe is not None:
                    r["probe"] = probe(p)
                rec[name] = r
            return state, rec

        state, hist = jax.lax.scan(segment, state0, gaps)
        for name in hist:
            hist[name]["final"] = state[name][0]
        return hist

    return run


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
