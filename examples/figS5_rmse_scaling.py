"""Fig. S5 style (Lee et al. 2019): the distance of a trained net from its linearisation.

Fully connected nets with 3 hidden ReLU layers (examples/specs/fc_relu.ntk, net fc3) and
their linearisations are trained side by side by full-batch gradient descent on the
total MSE loss on two digit classes (targets +-1/2). We measure the RMSE between the
net's and the linearisation's test outputs at the end of training (and its maximum
over training), against the width at a fixed training-set size and against the
training-set size at a fixed width, averaged over inits. The paper's claim: the
RMSE falls as the width grows (Theorem 2.1 bounds it by O(width^-1/2)). The
dependence on the training-set size is reported, not asserted.

Usage: ``python examples/figS5_rmse_scaling.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import numpy as np
from _common import (
    Clock,
    command_line,
    loglog_slope,
    make_trainer,
    model,
    parse_args,
    pyplot,
    record_steps,
    rmse,
    safe_learning_rate,
    save_figure,
    two_class_digits,
    write_json,
)


def final_rmse(width: int, n_train: int, n_test: int, steps: int, seeds, data_seed: int):
    """Mean over inits of the final and the largest test RMSE between net and linearisation."""
    x, y, xt, _ = two_class_digits(n_train, n_test, seed=data_seed)
    m = model("fc_relu.ntk", "fc3", width=width)
    lr = safe_learning_rate(model("fc_relu.ntk", "fc3").kernel_fn(x, x, "ntk"), 0.5)
    ts = record_steps(steps, 10)
    run = jax.jit(make_trainer(m.apply, x, y, learning_rate=lr, steps=ts, x_test=xt))
    finals, maxes, scales = [], [], []
    for s in seeds:
        h = run(m.init(jax.random.PRNGKey(s), x.shape[1:]))
        err = np.asarray(rmse(h["net"]["test"], h["lin"]["test"], axis=(-2, -1)))
        finals.append(err[-1])
        maxes.append(err.max())
        scales.append(float(np.sqrt(np.mean(np.asarray(h["net"]["test"][-1]) ** 2))))
    return {"rmse_final": float(np.mean(finals)), "rmse_max": float(np.mean(maxes)),
            "output_scale": float(np.mean(scales)), "learning_rate": lr}


def main(argv=None) -> dict:
    args = parse_args(__doc__.splitlines()[0], argv)
    clock = Clock()
    if args.quick:
        widths, n_fixed, sizes, w_fixed, steps, seeds = [64, 128, 256, 512], 16, [8, 16, 32], \
            256, 200, [0, 1, 2, 3]
    else:
        widths, n_fixed, sizes, w_fixed, steps, seeds = [64, 128, 256, 512, 1024], 32, \
            [8, 16, 32, 64, 128], 512, 300, [0, 1, 2, 3]
    n_test = 32
    results: dict = {"command": command_line("figS5_rmse_scaling.py", args),
                     "setup": {"net": "fc_relu.ntk fc3 (3 hidden ReLU layers)",
                               "steps": steps, "seeds": len(seeds), "n_test": n_test,
                               "learning_rate": "half of eta_critical of the analytic NTK",
                               "data": "digits classes 0/1, targets +-1/2"}}
    by_width = []
    for w in widths:
        r = final_rmse(w, n_fixed, n_test, steps, seeds, args.seed)
        by_width.append({"width": w, **r})
        clock.log(f"width {w}, n {n_fixed}: RMSE final {r['rmse_final']:.3g}, "
                  f"max {r['rmse_max']:.3g}")
    by_size = []
    for n in sizes:
        r = final_rmse(w_fixed, n, n_test, steps, seeds, args.seed)
        by_size.append({"n_train": n, **r})
        clock.log(f"width {w_fixed}, n {n}: RMSE final {r['rmse_final']:.3g}, "
                  f"max {r['rmse_max']:.3g}")
    results["vs_width"] = {"n_train": n_fixed, "rows": by_width,
                           "slope_final": loglog_slope(widths, [r["rmse_final"] for r in by_width]),
                           "slope_max": loglog_slope(widths, [r["rmse_max"] for r in by_width])}
    results["vs_size"] = {"width": w_fixed, "rows": by_size,
                          "slope_final": loglog_slope(sizes, [r["rmse_final"] for r in by_size])}
    fin = [r["rmse_final"] for r in by_width]
    results["claims"] = {
        "rmse_decreases_with_width": bool(all(b < a for a, b in itertools.pairwise(fin))),
        "rmse_slope_vs_width": results["vs_width"]["slope_final"],
    }
    results["seconds"] = clock.seconds
    clock.log(f"slopes: vs width {results['vs_width']['slope_final']:.3f}, "
              f"vs size {results['vs_size']['slope_final']:.3f}")
    plot(results, args.out / "figS5_rmse_scaling.png")
    write_json(args.out / "figS5_rmse_scaling.json", results)
    return results


def plot(results: dict, path: Path) -> None:
    """RMSE between net and linearisation against width and against training-set size."""
    plt = pyplot()
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
    save_figure(fig, path)


if __name__ == "__main__":
    main()
