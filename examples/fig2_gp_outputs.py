"""Fig. 2 of Lee et al. 2019: an ensemble of trained nets is the NTK Gaussian process.

An ensemble of fully connected nets with 3 tanh hidden layers, W_std^2 = 1.5 and no
bias (examples/specs/fc_tanh.ntk) is trained by full-batch gradient descent on a few
digits (two classes, targets +-1/2), vmapped over the ensemble. We record the
outputs on inputs interpolated between two training points (one of each class)
and compare the ensemble's mean and variance over time with the analytic NTK-GP
(eq. 14-15, all layers trained, discrete steps) and with the NNGP of readout-only
training. The gap to the NTK-GP is measured at two widths; the paper's claim is
that it shrinks as the width grows.

Gap measures (over the test inputs and all recorded steps):
``mean_gap = rms(mean_ens - mean_gp) / rms(std_gp)`` and
``var_gap = rms(var_ens - var_gp) / rms(var_gp)``. A finite ensemble adds
sampling noise of about ``1/sqrt(M)`` and ``sqrt(2/M)`` to them; we report that
floor and the noise-corrected ("excess") gaps too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import jax
import jax.numpy as jnp
import numpy as np

from ntkdsl.training import init_ensemble, train


def interpolation(x_train, y_train, n_points: int):
    """Inputs on the line through a class-0 and a class-1 training point (a bit beyond both)."""
    a = int(np.argmax(y_train[:, 0] > 0))
    b = int(np.argmax(y_train[:, 0] < 0))
    alpha = np.linspace(-0.25, 1.25, n_points)
    xs = (1 - alpha)[:, None] * x_train[a][None] + alpha[:, None] * x_train[b][None]
    return alpha, xs, (a, b)


def ensemble_outputs(width: int, x, y, xt, lr: float, steps: int, every: int, n_nets: int,
                     chunk: int, seed: int) -> np.ndarray:
    """Test outputs ``(n_nets, records, m)`` of an ensemble trained by GD (vmapped, in chunks)."""
    m = c.model("fc_tanh.ntk", "fc3_tanh", width=width)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_nets // chunk)
    outs = []
    for k in keys:
        p0 = init_ensemble(m, k, x.shape[1:], chunk)
        r = train(m, p0, x, y, xt, learning_rate=lr, steps=steps, record_every=every,
                  linearized=False, ensemble=True, ntk_points=0)
        outs.append(r.fx_test[..., 0])
    return np.concatenate(outs)


def gaps(outs: np.ndarray, mean_gp, var_gp) -> dict:
    """Distance of the ensemble's mean and variance to the NTK-GP, with the noise floor."""
    n = outs.shape[0]
    mu, var = outs.mean(0), outs.var(0, ddof=1)
    m4 = ((outs - mu) ** 4).mean(0)
    rms_std = np.sqrt(np.mean(var_gp))
    rms_var = np.sqrt(np.mean(var_gp**2))
    mean_gap = np.sqrt(np.mean((mu - mean_gp) ** 2)) / rms_std
    var_gap = np.sqrt(np.mean((var - var_gp) ** 2)) / rms_var
    # expected squared sampling errors of the ensemble's mean and variance
    noise_mean2 = np.mean(var / n) / rms_std**2
    noise_var2 = np.mean((m4 - var**2 * (n - 3) / (n - 1)) / n) / rms_var**2
    return {"mean_gap": float(mean_gap), "var_gap": float(var_gap),
            "mean_noise": float(np.sqrt(noise_mean2)), "var_noise": float(np.sqrt(noise_var2)),
            "mean_excess": float(np.sqrt(max(mean_gap**2 - noise_mean2, 0.0))),
            "var_excess": float(np.sqrt(max(var_gap**2 - noise_var2, 0.0))),
            "mean_gap_per_step": (np.sqrt(np.mean((mu - mean_gp) ** 2, -1)) / rms_std),
            "var_gap_per_step": (np.sqrt(np.mean((var - var_gp) ** 2, -1)) / rms_var)}


def main(argv=None) -> dict:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    clock = c.Clock()
    if args.quick:
        widths, n_nets, n_train, steps, every, n_test = (16, 128), 256, 8, 48, 4, 17
    else:
        widths, n_nets, n_train, steps, every, n_test = (16, 256), 512, 8, 96, 4, 29
    x, y, _, _ = c.two_class_digits(n_train, 0, seed=args.seed)
    alpha, xt, pair = interpolation(x, y, n_test)
    analytic = c.model("fc_tanh.ntk", "fc3_tanh")
    kxx = analytic.kernel_fn(x, x)
    ktx = analytic.kernel_fn(xt, x)
    ktt = analytic.kernel_fn(xt, xt, "nngp")
    lr = c.safe_learning_rate(kxx.ntk, 0.5)
    ts = np.arange(0, steps + 1, every)  # the record points of ntkdsl.training.train
    bands = {}
    for kind in ("ntk", "nngp"):
        mean, cov = c.gp_dynamics(kind, kxx.nngp, y, ktx.nngp, ktt, ntk_xx=kxx.ntk,
                                ntk_tx=ktx.ntk, learning_rate=lr, steps=ts)
        bands[kind] = (np.asarray(mean[..., 0]), np.asarray(jnp.diagonal(cov, 0, 1, 2)))
    clock.log(f"analytic kernels and GP bands (lr {lr:.4g}, steps {[int(t) for t in ts]})")
    mean_gp, var_gp = bands["ntk"]
    results: dict = {
        "command": c.command_line("fig2_gp_outputs.py", args),
        "setup": {"widths": list(widths), "n_nets": n_nets, "n_train": n_train,
                  "steps": ts, "learning_rate": lr, "n_test": n_test,
                  "pair": pair, "net": "fc_tanh.ntk fc3_tanh (3 tanh layers, W_std^2 1.5, no bias)",
                  "data": "digits classes 0/1, 64 standardised pixels"},
        "widths": {}}
    outs_by_width = {}
    for w in widths:
        chunk = n_nets if w <= 64 else 128
        outs = ensemble_outputs(w, x, y, xt, lr, steps, every, n_nets, chunk, args.seed)
        outs_by_width[w] = outs
        g = gaps(outs, mean_gp, var_gp)
        results["widths"][str(w)] = g
        clock.log(f"width {w}: mean gap {g['mean_gap']:.3f} (noise {g['mean_noise']:.3f}), "
                  f"var gap {g['var_gap']:.3f} (noise {g['var_noise']:.3f})")
    small, large = (results["widths"][str(w)] for w in widths)
    results["claims"] = {
        "mean_gap_shrinks": large["mean_gap"] < small["mean_gap"],
        "var_gap_shrinks": large["var_gap"] < small["var_gap"],
    }
    results["nngp_vs_ntk_final"] = {
        "mean_rms": float(np.sqrt(np.mean((bands["nngp"][0][-1] - mean_gp[-1]) ** 2))),
        "var_rms": float(np.sqrt(np.mean((bands["nngp"][1][-1] - var_gp[-1]) ** 2)))}
    results["seconds"] = clock.seconds
    plot(alpha, ts, bands, outs_by_width, results, args.out / "fig2_gp_outputs.png")
    c.write_json(args.out / "fig2_gp_outputs.json", results)
    return results


def plot(alpha, ts, bands, outs_by_width, results, path: Path) -> None:
    """Ensemble mean +- 2 std against the NTK-GP and NNGP bands at three times; the gaps."""
    plt = c.pyplot()
    widths = list(outs_by_width)
    outs = outs_by_width[widths[-1]]
    picks = [0, len(ts) // 2, len(ts) - 1]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    for ax, i in zip(axes[:3], picks):
        for kind, color, ls in (("ntk", "C0", "-"), ("nngp", "C2", "--")):
            mu, var = bands[kind][0][i], bands[kind][1][i]
            sd = np.sqrt(np.maximum(var, 0))
            ax.plot(alpha, mu, ls, color=color, label=f"{kind.upper()}-GP mean +- 2 std"
                    if kind == "ntk" else "NNGP (readout only) +- 2 std")
            ax.fill_between(alpha, mu - 2 * sd, mu + 2 * sd, color=color, alpha=0.15)
        emu, esd = outs[:, i].mean(0), outs[:, i].std(0, ddof=1)
        ax.errorbar(alpha, emu, yerr=2 * esd, fmt="o", ms=3, color="C3", capsize=2,
                    label=f"ensemble of {outs.shape[0]}, width {widths[-1]}")
        ax.axvline(0, color="k", lw=0.5)
        ax.axvline(1, color="k", lw=0.5)
        ax.set_title(f"step {int(ts[i])}")
        ax.set_xlabel("interpolation alpha (0, 1: training points)")
    axes[0].set_ylabel("output")
    axes[0].legend(fontsize=7)
    ax = axes[3]
    for j, w in enumerate(widths):
        g = results["widths"][str(w)]
        ax.plot(ts, g["mean_gap_per_step"], "o-", color=f"C{j}", label=f"mean gap, width {w}")
        ax.plot(ts, g["var_gap_per_step"], "s--", color=f"C{j}", label=f"var gap, width {w}")
    ax.axhline(results["widths"][str(widths[-1])]["var_noise"], color="gray", lw=0.8,
               label="variance noise floor")
    ax.set_xlabel("step")
    ax.set_ylabel("relative gap to NTK-GP")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.legend(fontsize=7)
    c.save_figure(fig, path)


if __name__ == "__main__":
    main()
