"""Fig. 4 family of Lee et al. 2019: wide residual CNNs and their linearisations under momentum.

A small WRN-style residual CNN (examples/specs/wrn.ntk: a stem convolution, three
groups of pre-activation residual blocks with projection shortcuts, global average
pooling, a linear readout) is trained with full-batch heavy-ball momentum 0.9 on
the total MSE loss on two digit classes (8x8 images, targets +-1/2), side by side
with its linearisation around the init (:func:`ntkdsl.training.train`); the
closed-form momentum dynamics with the analytic NTK give a third curve (from the
net's own initial outputs). This is done at several channel widths; the four
panels (test outputs, individual weights, losses, RMSE between the net and the
linear models) show the widest. The learning rate is a quarter of the
momentum-stable range of each net's empirical NTK at init. The paper's claim:
the linearisation tracks the network during training, also for a residual CNN
trained with momentum, the closer the wider the net.

Our scale is tiny (16 images, channel widths up to 64/128/256 instead of the
paper's CIFAR-10 WRN at width 1024), so the agreement is looser than the paper's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import _linearization as lin
import jax
import jax.numpy as jnp

MOMENTUM = 0.9


def probe(params):
    """Two weights of the stem convolution, two of a residual block, two of the readout."""
    stem, block, readout = params[0]["w"], params[1][0][1]["w"], params[-1]["w"]
    return jnp.stack([stem[0, 0, 0, 0], stem[1, 1, 0, 2], block[1, 1, 0, 0],
                      block[0, 2, 1, 3], readout[0, 0], readout[1, 0]])


def main(argv=None) -> dict:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    clock = c.Clock()
    if args.quick:
        widths, n_train, n_test, steps, every = (8, 32), 8, 8, 40, 2
    else:
        widths, n_train, n_test, steps, every = (16, 32, 64), 16, 16, 60, 3
    x, y, xt, yt = c.two_class_digits(n_train, n_test, flat=False, seed=args.seed)
    # the analytic NTK does not depend on the width
    analytic = c.model("wrn.ntk", "wrn", outputs=1)
    k_xx, k_tx = analytic.kernel_fn(x, x, "ntk"), analytic.kernel_fn(xt, x, "ntk")
    clock.log(f"analytic NTK (largest eigenvalue {float(jnp.linalg.eigvalsh(k_xx)[-1]):.4g})")
    rows, res = [], None
    for width in widths:
        m = c.model("wrn.ntk", "wrn", width=width, outputs=1)
        p0 = m.init(jax.random.PRNGKey(args.seed), x.shape[1:])
        # a narrow CNN's empirical NTK can be larger than the analytic one, so the rate
        # comes from each net's own kernel at init; with momentum the stable range grows by
        # (1 + beta), and a quarter of it keeps the overshoot of the fastest modes mild
        k_emp = m.empirical_ntk(p0, x, implementation="jacobian")
        lr = c.safe_learning_rate(k_emp, 0.25, momentum=MOMENTUM)
        res = lin.compare(m, p0, x, y, xt, yt, learning_rate=lr, steps=steps, record_every=every,
                          momentum=MOMENTUM, probe=probe, analytic=(k_xx, k_tx))
        s = lin.summary(res)
        rows.append({"width": width, "learning_rate": lr,
                     "ntk_eigenvalue_max": float(jnp.linalg.eigvalsh(k_emp)[-1]),
                     "rmse_final": s["rmse_final"]["test"]["lin"],
                     "rmse_max": s["rmse_max"]["test"]["lin"],
                     "rmse_final_analytic": s["rmse_final"]["test"]["analytic"],
                     "output_scale": s["output_scale"],
                     "loss_final_train": s["loss_final"]["train"]})
        clock.log(f"width {width}: lr {lr:.4g}, test RMSE net vs linearisation final "
                  f"{rows[-1]['rmse_final']:.3g}, max {rows[-1]['rmse_max']:.3g}")
    fin = [r["rmse_final"] for r in rows]
    setup = {"net": "wrn.ntk wrn (blocks=1, one output)", "widths": list(widths),
             "plotted_width": widths[-1], "n_train": n_train, "n_test": n_test,
             "steps": steps, "momentum": MOMENTUM,
             "learning_rate": "a quarter of eta_critical (momentum) of the empirical NTK at init",
             "optimizer": "full-batch heavy-ball momentum (ntkdsl.training.train)",
             "data": "digits classes 0/1, 8x8x1 images, targets +-1/2"}
    extra = {"setup": setup, "vs_width": rows,
             "claims": {"rmse_decreases_with_width":
                        c.decreasing(fin),
                        "rmse_slope_vs_width": c.loglog_slope(widths, fin)}}
    return lin.finish(res, extra, args, "fig4_wrn.py",
                      f"WRN (width {widths[-1]}), momentum {MOMENTUM}: network vs linearisation "
                      f"({n_train} digits)", clock)


if __name__ == "__main__":
    main()
