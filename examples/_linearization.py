"""A network against its linearisation under training: the runs and plots of fig. 3 and fig. 4.

:func:`compare` trains a finite net and its linearisation (same init, same
optimizer) and computes the closed-form dynamics (eq. 9-11 and their discrete /
momentum analogues, :func:`ntkdsl.predict.gradient_descent_mse`) with the analytic
NTK and, when asked, with the empirical NTK at init, all from the net's own
initial outputs. :func:`plot` draws the four panels of the paper: outputs,
individual weights, losses and the RMSE between the net and the linear models.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from _common import command_line, mse_loss, pyplot, rmse, save_figure, write_json

from ntkdsl.predict import gradient_descent_mse
from ntkdsl.training import train


def compare(m, params0, x, y, xt, yt, *, learning_rate: float, steps: int, record_every: int = 1,
            momentum: float = 0.0, probe=None, analytic=None, empirical: bool = False,
            clock=None) -> dict:
    """Train net and linearisation (:func:`ntkdsl.training.train`); closed forms with the NTKs.

    Arguments:
        m: the compiled model; params0: its initial parameters.
        x, y, xt, yt: train and test sets (``y`` of shape ``(n, k)``).
        learning_rate, momentum: the optimizer (full-batch GD when ``momentum = 0``, else
            heavy-ball momentum).
        steps, record_every: the number of steps and how often outputs are recorded.
        probe: ``params -> array`` of a few individual weights to follow.
        analytic: ``(ntk_train_train, ntk_test_train)`` of the analytic kernel, or None.
        empirical: also use the empirical NTK at init (a per-output kernel: exact for
            one output, an average over outputs otherwise).
        clock: a :class:`_common.Clock` for progress messages.

    Returns:
        A dict of numpy arrays: ``steps``; ``train``/``test`` outputs
        ``(T, n, k)`` per model (``net``, ``lin``, ``analytic``, ``empirical``);
        ``probe`` per trained model; ``loss`` per model and split; ``rmse`` of
        each linear model against the net per split ``(T,)``.
    """
    r = train(m, params0, x, y, xt, yt, optimizer="momentum" if momentum else "gd",
              momentum=momentum, learning_rate=learning_rate, steps=steps,
              record_every=record_every, watch=probe, ntk_points=0)
    if clock:
        clock.log("trained net and linearisation")
    out: dict = {"steps": r.steps, "train": {"net": r.fx_train, "lin": r.lin_fx_train},
                 "test": {"net": r.fx_test, "lin": r.lin_fx_test}, "probe": {}}
    if probe is not None:
        out["probe"] = {"net": r.watched, "lin": r.lin_watched}
    f0, f0t = r.fx_train[0], r.fx_test[0]
    kernels = {}
    if analytic is not None:
        kernels["analytic"] = analytic
    if empirical:
        kernels["empirical"] = (m.empirical_ntk(params0, x), m.empirical_ntk(params0, xt, x))
        if clock:
            clock.log("empirical NTK")
    opt = "momentum" if momentum else "gd"
    for name, (k_xx, k_tx) in kernels.items():
        dyn = gradient_descent_mse(k_xx, y, learning_rate=learning_rate, optimizer=opt,
                                   momentum=momentum if momentum else 0.9)
        tr, te = dyn(jnp.asarray(r.steps, jnp.float64), f0, f0t, k_tx)
        out["train"][name], out["test"][name] = np.asarray(tr), np.asarray(te)
    out["loss"] = {split: {name: np.asarray(mse_loss(f, target))
                           for name, f in out[split].items()}
                   for split, target in (("train", y), ("test", yt))}
    out["rmse"] = {split: {name: np.asarray(rmse(f, out[split]["net"], axis=(-2, -1)))
                           for name, f in out[split].items() if name != "net"}
                   for split in ("train", "test")}
    if "empirical" in out["test"]:
        # the trained linearisation and the closed form with its kernel are one model
        out["lin_vs_empirical_closed_form"] = float(
            np.max(np.abs(out["test"]["lin"] - out["test"]["empirical"])))
    return out


def finish(res: dict, results: dict, args, script: str, title: str, clock) -> dict:
    """Add the summary and timing to ``results``; write the four-panel PNG and the JSON.

    Arguments:
        res: what :func:`compare` returned (the run that is plotted).
        results: the script's JSON so far (setup and extra numbers).
        args: the parsed options (``out``, ``quick``, ``seed``).
        script: the script's file name; its stem names the outputs.
        title: the figure's title.
        clock: the script's :class:`_common.Clock`.

    Returns:
        ``results`` with ``command``, the summary and ``seconds`` added.
    """
    stem = Path(script).stem
    results = {"command": command_line(script, args), **results, **summary(res),
               "seconds": clock.seconds}
    clock.log(f"final test RMSE to the net: {results['rmse_final']['test']}")
    plot(res, args.out / f"{stem}.png", title)
    write_json(args.out / f"{stem}.json", results)
    return results


def summary(res: dict) -> dict:
    """The numbers a JSON reports: final and maximum RMSE to the net, final losses."""
    s: dict = {"rmse_final": {}, "rmse_max": {}, "loss_final": {}}
    for split in ("train", "test"):
        s["rmse_final"][split] = {k: float(v[-1]) for k, v in res["rmse"][split].items()}
        s["rmse_max"][split] = {k: float(v.max()) for k, v in res["rmse"][split].items()}
        s["loss_final"][split] = {k: float(v[-1]) for k, v in res["loss"][split].items()}
    s["output_scale"] = float(np.sqrt(np.mean(res["test"]["net"][-1] ** 2)))
    if "lin_vs_empirical_closed_form" in res:
        s["lin_vs_empirical_closed_form"] = res["lin_vs_empirical_closed_form"]
    return s


STYLE = {"net": ("C3", "-", "network"), "lin": ("C0", "--", "linearised (trained)"),
         "analytic": ("k", ":", "closed form, analytic NTK"),
         "empirical": ("C2", "-.", "closed form, empirical NTK")}


def plot(res: dict, path: Path, title: str, *, n_points: int = 3,
         xlabel: str = "step") -> None:
    """The paper's four panels: test outputs, weights, losses, RMSE to the net."""
    plt = pyplot()
    ts = np.maximum(res["steps"], 0)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    ax = axes[0]
    for j in range(n_points):
        for name, f in res["test"].items():
            color, ls, label = STYLE[name]
            ax.plot(ts, f[:, j, 0], ls, color=f"C{j}", label=label if j == 0 else None,
                    lw=1.2)
    ax.set_title("outputs on test points (first output)")
    ax = axes[1]
    if res["probe"]:
        w_net, w_lin = res["probe"]["net"], res["probe"]["lin"]
        for j in range(w_net.shape[1]):
            ax.plot(ts, w_net[:, j] - w_net[0, j], "-", color=f"C{j}",
                    label="network" if j == 0 else None)
            ax.plot(ts, w_lin[:, j] - w_lin[0, j], "--", color="k",
                    label="linearised" if j == 0 else None)
    ax.set_title("change of individual weights (omega)")
    ax = axes[2]
    for split, ls in (("train", "-"), ("test", "--")):
        for name, loss in res["loss"][split].items():
            color, _, label = STYLE[name]
            ax.plot(ts, loss, ls, color=color, label=f"{label}, {split}")
    ax.set_yscale("log")
    ax.set_title("loss 1/(2n) sum |f - y|^2")
    ax = axes[3]
    for split, ls in (("train", "-"), ("test", "--")):
        for name, err in res["rmse"][split].items():
            color, _, label = STYLE[name]
            # step 0 is identical by construction: start the log plot at step 1
            ax.plot(ts[1:], err[1:], ls, color=color, label=f"{label} vs net, {split}")
    ax.set_yscale("log")
    ax.set_title("RMSE to the network's outputs")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)
