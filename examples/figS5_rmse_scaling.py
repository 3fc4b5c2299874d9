"""Fig. S5 style (Lee et al. 2019): the distance of a trained net from its linearisation.

Fully connected nets with 3 hidden ReLU layers (examples/specs/fc_relu.ntk, net fc3) and
their linearisations are trained side by side by full-batch gradient descent on the
total MSE loss on two digit classes (targets +-1/2). We measure the RMSE between the
net's and the linearisation's test outputs at the end of training (and its maximum
over training), against the width at a fixed training-set size and against the
training-set size at a fixed width, averaged over inits. The paper's claim: the
RMSE falls as the width grows (Theorem 2.1 bounds it by O(width^-1/2)). The
dependence on the training-set size is reported, not asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import jax
import numpy as np

from ntkdsl.training import init_ensemble, train


def final_rmse(width: int, n_train: int, n_test: int, steps: int, n_seeds: int, seed: int):
    """Mean over inits of the final and the largest test RMSE between net and linearisation."""
    x, y, xt, _ = c.two_class_digits(n_train, n_test, seed=seed)
    m = c.model("fc_relu.ntk", "fc3", width=width)
    lr = c.safe_learning_rate(c.model("fc_relu.ntk", "fc3").kernel_fn(x, x, "ntk"), 0.5)
    p0 = init_ensemble(m, jax.random.PRNGKey(seed), x.shape[1:], n_seeds)
    r = train(m, p0, x, y, xt, learning_rate=lr, steps=steps, record_every=steps // 10,
              ensemble=True, ntk_points=0)
    err = r.rmse("test")  # (seeds, records)
    scale = np.sqrt(np.mean(r.fx_test[:, -1] ** 2, axis=(-2, -1)))
    return {"rmse_final": float(err[:, -1].mean()), "rmse_max": float(err.max(1).mean()),
            "output_scale": float(scale.mean()), "learning_rate": lr}


def main(argv=None) -> dict:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    clock = c.Clock()
    if args.quick:
        widths, n_fixed, sizes, w_fixed, steps, seeds = [64, 128, 256, 512], 16, [8, 16, 32], \
            256, 200, 4
    else:
        widths, n_fixed, sizes, w_fixed, steps, seeds = [64, 128, 256, 512, 1024], 32, \
            [8, 16, 32, 64, 128], 512, 300, 4
    n_test = 32
    results: dict = {"command": c.command_line("figS5_rmse_scaling.py", args),
                     "setup": {"net": "fc_relu.ntk fc3 (3 hidden ReLU layers)",
                               "steps": steps, "seeds": seeds, "n_test": n_test,
                               "learning_rate": "half of eta_critical of the analytic NTK",
                               "data": "digits classes 0/1, targets +-1/2"}}
    sweeps = {"vs_width": ("width", widths, lambda w: (w, n_fixed), {"n_train": n_fixed}),
              "vs_size": ("n_train", sizes, lambda n: (w_fixed, n), {"width": w_fixed})}
    for name, (axis, values, case, fixed) in sweeps.items():
        rows = []
        for v in values:
            w, n = case(v)
            r = final_rmse(w, n, n_test, steps, seeds, args.seed)
            rows.append({axis: v, **r})
            clock.log(f"width {w}, n {n}: RMSE final {r['rmse_final']:.3g}, "
                      f"max {r['rmse_max']:.3g}")
        results[name] = {**fixed, "rows": rows,
                         "slope_final": c.loglog_slope(values, [r["rmse_final"] for r in rows]),
                         "slope_max": c.loglog_slope(values, [r["rmse_max"] for r in rows])}
    results["claims"] = {
        "rmse_decreases_with_width": c.decreasing(
            [r["rmse_final"] for r in results["vs_width"]["rows"]]),
        "rmse_slope_vs_width": results["vs_width"]["slope_final"],
    }
    results["seconds"] = clock.seconds
    clock.log(f"slopes: vs width {results['vs_width']['slope_final']:.3f}, "
              f"vs size {results['vs_size']['slope_final']:.3f}")
    plot(results, args.out / "figS5_rmse_scaling.png")
    c.write_json(args.out / "figS5_rmse_scaling.json", results)
    return results


def plot(results: dict, path: Path) -> None:
    """RMSE between net and linearisation against width and against training-set size."""
    plt = c.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    vw, vs = results["vs_width"], results["vs_size"]
    widths = [r["width"] for r in vw["rows"]]
    ax = axes[0]
    ax.loglog(widths, [r["rmse_final"] for r in vw["rows"]], "o-", base=2,
              label=f"end of training (slope {vw['slope_final']:.2f})")
    ax.loglog(widths, [r["rmse_max"] for r in vw["rows"]], "s--", base=2,
              label=f"max over training (slope {vw['slope_max']:.2f})")
    ref = vw["rows"][0]["rmse_final"] * (np.asarray(widths) / widths[0]) ** -0.5
    ax.loglog(widths, ref, ":", color="gray", base=2, label="width^-1/2")
    ax.set_xlabel("width")
    ax.set_ylabel("test RMSE, net vs linearisation")
    ax.set_title(f"fc3 ReLU, {vw['n_train']} training points")
    ax.legend(fontsize=8)
    ax = axes[1]
    sizes = [r["n_train"] for r in vs["rows"]]
    ax.loglog(sizes, [r["rmse_final"] for r in vs["rows"]], "o-", base=2,
              label=f"end of training (slope {vs['slope_final']:.2f})")
    ax.loglog(sizes, [r["rmse_max"] for r in vs["rows"]], "s--", base=2,
              label="max over training")
    ax.set_xlabel("training-set size")
    ax.set_title(f"fc3 ReLU, width {vs['width']}")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    c.save_figure(fig, path)


if __name__ == "__main__":
    main()
