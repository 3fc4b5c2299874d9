"""The main job: the paper's result on a real dataset (what ``make demo`` runs).

On scikit-learn's 8x8 digits (no download) it

1. compiles two specs (a fully connected ReLU net and a small CNN) and
   computes their analytic NNGP kernel and NTK, then reports the test accuracy
   of the NNGP posterior (eq. 13) and of the NTK-GP at t = inf (eq. 16);
2. trains finite-width networks of two widths and their linearisations from
   the same initialisations with full-batch gradient descent on the total MSE
   loss (eq. 2), and compares their test outputs over training with each other
   and with the closed-form prediction of eq. 9-11 driven by the *analytic*
   NTK (started from the network's own initial outputs): the gap shrinks as
   the width grows, as the paper claims;
3. prints a short table and saves a plot and the numbers (JSON).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .diagnostics import InputError
from .io import atomic_write

#: the example specs used by default (shipped with the package; see find_specs_dir)
DEFAULT_KERNEL_SPECS = (("fc_relu.ntk", "fc3", True), ("digits_cnn.ntk", "cnn_flatten", False))
DEFAULT_TRAIN_SPEC = ("fc_relu.ntk", "fc1", True)
#: every spec is compiled with one output per digit class
N_CLASSES = 10


@dataclass(frozen=True)
class DemoConfig:
    """Options of the main job (see ``ntkdsl demo --help``)."""

    n_train: int = 256
    n_test: int = 256
    widths: tuple[int, ...] = (128, 2048)
    steps: int = 1000
    record_every: int = 20
    out: Path = Path("demo-out")
    specs_dir: Path | None = None
    kernel_specs: tuple[tuple[str, str, bool], ...] = DEFAULT_KERNEL_SPECS
    train_spec: tuple[str, str, bool] = DEFAULT_TRAIN_SPEC
    seed: int = 0
    progress: bool = True
    results: dict = field(default_factory=dict, compare=False)


def find_specs_dir() -> Path:
    """Where the demo's specs are: shipped with the package, else a checkout's examples/specs.

    An installed wheel carries them as package data (``ntkdsl/specs/*.ntk``, copied
    from ``examples/specs`` at build time); a checkout or an editable install reads
    ``examples/specs`` beside the package, or under the current directory.
    """
    from importlib.resources import as_file, files

    shipped = files("ntkdsl").joinpath("specs")
    if shipped.is_dir():
        with as_file(shipped) as d:  # a real folder for an unpacked install
            if Path(d).is_dir():
                return Path(d)
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        d = base / "examples" / "specs"
        if d.is_dir():
            return d
    raise InputError(
        "the demo's specs were not found (neither shipped with the package nor in "
        "examples/specs): pass --specs-dir DIR"
    )


def _accuracy(mean: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(mean, axis=-1) == labels))


def _rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((a - b) ** 2, axis=(-2, -1)))


def kernel_predictions(cfg: DemoConfig, data, specs_dir: Path, log, tick=lambda: None
                       ) -> list[dict]:
    """NNGP-posterior and NTK-GP (t = inf) test accuracy for each kernel spec."""
    import ntkdsl
    from ntkdsl.predict import gp_inference, gradient_descent_mse_gp

    rows = []
    for fname, net, flat in cfg.kernel_specs:
        model = ntkdsl.compile_file(specs_dir / fname, net=net, outputs=N_CLASSES)
        xtr, xte = data.x_train, data.x_test
        if flat:
            xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
        t0 = time.perf_counter()
        k_tr = model.kernel_fn(xtr, None, ("nngp", "ntk"), progress=False)
        k_te = model.kernel_fn(xte, xtr, ("nngp", "ntk"), progress=False)
        seconds = time.perf_counter() - t0
        nngp = gp_inference(k_tr.nngp, data.y_train, k_te.nngp, diag_reg=1e-6)
        ntk = gradient_descent_mse_gp(k_tr.nngp, data.y_train, ntk_train_train=k_tr.ntk,
                                      kind="ntk", diag_reg=1e-6)(np.inf, k_te.nngp, None, k_te.ntk)
        row = {
            "spec": f"{fname}:{net}",
            "kernel_seconds": round(seconds, 3),
            "nngp_accuracy": _accuracy(np.asarray(nngp.mean), data.labels_test),
            "ntk_accuracy": _accuracy(np.asarray(ntk.mean), data.labels_test),
        }
        log(f"  {row['spec']:<28} kernels {seconds:6.2f} s   "
            f"NNGP acc {row['nngp_accuracy']:.3f}   NTK-GP acc {row['ntk_accuracy']:.3f}")
        rows.append(row)
        tick()
    return rows


def training_dynamics(cfg: DemoConfig, width: int, data, specs_dir: Path) -> dict:
    """A finite net, its linearisation and the analytic eq. 9-11 prediction over GD."""
    import jax

    import ntkdsl
    from ntkdsl.predict import eta_critical, gradient_descent_mse
    from ntkdsl.training import train

    fname, net, flat = cfg.train_spec
    model = ntkdsl.compile_file(specs_dir / fname, net=net, width=width,
                                 outputs=N_CLASSES)
    xtr, xte = data.x_train, data.x_test
    if flat:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    k_tr = model.kernel_fn(xtr, None, "ntk", progress=False)
    k_te = model.kernel_fn(xte, xtr, "ntk", progress=False)
    # half the critical rate: stable for discrete steps (eta_critical = 2 / (l_min + l_max))
    eta = 0.5 * float(eta_critical(k_tr))
    params0 = model.init(jax.random.PRNGKey(cfg.seed), xtr.shape[1:])
    t0 = time.perf_counter()
    res = train(model, params0, xtr, data.y_train, xte, data.y_test, optimizer="gd",
                learning_rate=eta, steps=cfg.steps, record_every=cfg.record_every,
                ntk_points=32)
    seconds = time.perf_counter() - t0
    steps = np.asarray(res.steps)
    dyn = gradient_descent_mse(k_tr, data.y_train, learning_rate=eta, optimizer="gd")
    an_train, an_test = dyn(steps, fx_train_0=res.fx_train[0], fx_test_0=res.fx_test[0],
                            k_test_train=k_te)
    an_train, an_test = np.asarray(an_train), np.asarray(an_test)

    def loss(f, y):  # the paper's total loss (eq. 2), averaged per example for reading
        return 0.5 * np.sum((f - y) ** 2, axis=(-2, -1)) / y.shape[0]

    out = {
        "spec": f"{fname}:{net}",
        "width": width,
        "learning_rate": eta,
        "train_seconds": round(seconds, 3),
        "steps": steps.tolist(),
        "loss_train": {"net": loss(res.fx_train, data.y_train).tolist(),
                       "linearized": loss(res.lin_fx_train, data.y_train).tolist(),
                       "analytic": loss(an_train, data.y_train).tolist()},
        "loss_test": {"net": loss(res.fx_test, data.y_test).tolist(),
                      "linearized": loss(res.lin_fx_test, data.y_test).tolist(),
                      "analytic": loss(an_test, data.y_test).tolist()},
        "accuracy_test": {
            "net": [_accuracy(f, data.labels_test) for f in res.fx_test],
            "linearized": [_accuracy(f, data.labels_test) for f in res.lin_fx_test],
            "analytic": [_accuracy(f, data.labels_test) for f in an_test],
        },
        "rmse_test": {"net_vs_linearized": _rmse(res.fx_test, res.lin_fx_test).tolist(),
                      "net_vs_analytic": _rmse(res.fx_test, an_test).tolist()},
        "output_scale": float(np.sqrt(np.mean(res.fx_test[-1] ** 2))),
        "ntk_change": None if res.ntk_change is None else res.ntk_change.tolist(),
        "example_outputs": {"net": res.fx_test[:, :3, 0].tolist(),
                            "linearized": res.lin_fx_test[:, :3, 0].tolist(),
                            "analytic": an_test[:, :3, 0].tolist()},
    }
    return out


def print_table(dyn: dict, log) -> None:
    """The dynamics as a short table: losses, accuracies and RMSEs over training."""
    log(f"  {'step':>5} | {'train loss: net':>15} {'lin':>8} {'theory':>8} | "
        f"{'test acc: net':>13} {'lin':>6} {'theory':>6} | {'RMSE net-lin':>12} {'net-theory':>10}")
    steps = dyn["steps"]
    idx = sorted({0, len(steps) // 8, len(steps) // 4, len(steps) // 2, len(steps) - 1})
    for i in idx:
        lt, acc, rm = dyn["loss_train"], dyn["accuracy_test"], dyn["rmse_test"]
        log(f"  {steps[i]:>5} | {lt['net'][i]:>15.4f} {lt['linearized'][i]:>8.4f} "
            f"{lt['analytic'][i]:>8.4f} | {acc['net'][i]:>13.3f} {acc['linearized'][i]:>6.3f} "
            f"{acc['analytic'][i]:>6.3f} | {rm['net_vs_linearized'][i]:>12.4f} "
            f"{rm['net_vs_analytic'][i]:>10.4f}")


def plot(runs: list[dict], path: Path) -> None:
    """Three panels: losses (widest net), RMSEs for every width, a few test outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dyn = runs[-1]
    steps = np.asarray(dyn["steps"])
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"net": "-", "linearized": "--", "analytic": ":"}
    for name, ls in styles.items():
        ax[0].plot(steps, dyn["loss_train"][name], ls, color="C0", label=f"train, {name}")
        ax[0].plot(steps, dyn["loss_test"][name], ls, color="C1", label=f"test, {name}")
    ax[0].set(xlabel="GD step", ylabel="loss per example", yscale="log",
              title="loss: network, linearisation, eq. 9-11")
    ax[0].legend(fontsize=7)
    for i, r in enumerate(runs):
        ax[1].plot(steps, r["rmse_test"]["net_vs_linearized"], "-", color=f"C{i}",
                   label=f"width {r['width']}: network vs linearisation")
        ax[1].plot(steps, r["rmse_test"]["net_vs_analytic"], ":", color=f"C{i}",
                   label=f"width {r['width']}: network vs analytic NTK")
    ax[1].set(xlabel="GD step", ylabel="test RMSE", title="how far the network is from theory")
    ax[1].legend(fontsize=8)
    for j in range(3):
        for name, ls in styles.items():
            ax[2].plot(steps, np.asarray(dyn["example_outputs"][name])[:, j], ls, color=f"C{j}",
                       label=name if j == 0 else None)
    ax[2].set(xlabel="GD step", ylabel="output (class 0)", title="three test outputs")
    ax[2].legend(fontsize=8)
    fig.suptitle(f"{dyn['spec']}, width {dyn['width']}: a wide network evolves as its "
                 "linearisation (Lee et al. 2019)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), flag="--out")
    plt.close(fig)


def run(cfg: DemoConfig, log=print) -> dict:
    """Run the main job; return everything it measured (also written to ``cfg.out``)."""
    from .data import load_digits

    for name in ("n_train", "n_test", "steps", "record_every"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected a positive integer, "
                             f"got {getattr(cfg, name)}")
    if not cfg.widths or min(cfg.widths) < 1:
        raise InputError(f"--widths: expected positive integers, got {cfg.widths}")
    specs_dir = cfg.specs_dir or find_specs_dir()
    from .io import progress_bar

    # one bar over the long stages (each kernel spec, each width's training), with ETA;
    # drawn only on a terminal
    bar = progress_bar(len(cfg.kernel_specs) + len(cfg.widths), "ntkdsl demo",
                       None if cfg.progress else False, unit="stage")
    if not bar.disable and log is print:
        log = bar.write  # keeps the bar below the printed lines
    t_start = time.perf_counter()
    data = load_digits(cfg.n_train, cfg.n_test, seed=cfg.seed)
    log(f"ntkdsl demo: digits 8x8, {cfg.n_train} train / {cfg.n_test} test images, "
        f"10 classes, float64")
    log("\n[1/2] infinite width: NNGP posterior (eq. 13) and NTK-GP at t = inf (eq. 16)")
    kernels = kernel_predictions(cfg, data, specs_dir, log, lambda: bar.update(1))
    log(f"\n[2/2] finite widths {', '.join(map(str, cfg.widths))}: network vs linearisation "
        f"vs analytic NTK (eq. 9-11), {cfg.steps} GD steps")
    runs = []
    for width in cfg.widths:
        dyn = training_dynamics(cfg, width, data, specs_dir)
        runs.append(dyn)
        bar.update(1)
        log(f"  width {width}: learning rate {dyn['learning_rate']:.4g} (half of eta_critical), "
            f"trained in {dyn['train_seconds']:.1f} s")
    bar.close()
    dyn = runs[-1]
    log(f"  the widest net, {dyn['spec']} width {dyn['width']}:")
    print_table(dyn, log)
    results = {"config": {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in cfg.__dict__.items() if k != "results"},
               "kernels": kernels, "dynamics": runs,
               "seconds": round(time.perf_counter() - t_start, 2)}
    out = Path(cfg.out)
    plot(runs, out / "dynamics.png")
    text = json.dumps(results, indent=1, default=str)
    atomic_write(out / "results.json", lambda f: f.write(text.encode()), flag="--out")
    for r in runs:
        final = r["rmse_test"]
        log(f"width {r['width']:>5}: final test RMSE network vs linearisation "
            f"{final['net_vs_linearized'][-1]:.4f}, network vs analytic "
            f"{final['net_vs_analytic'][-1]:.4f} (output scale {r['output_scale']:.3f})")
    log(f"wrote {out / 'dynamics.png'} and {out / 'results.json'} "
        f"in {results['seconds']:.1f} s")
    return results
