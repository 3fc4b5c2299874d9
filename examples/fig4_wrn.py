"""Fig. 4 family of Lee et al. 2019: a wide residual CNN and its linearisation under momentum.

A small WRN-style residual CNN (examples/specs/wrn.ntk: a stem convolution, three
groups of pre-activation residual blocks with projection shortcuts, global average
pooling, a linear readout; 10 outputs) is trained with full-batch heavy-ball
momentum on the total MSE loss on the 8x8 digits (10 classes, zero-mean one-hot
targets), side by side with its linearisation around the init; the closed-form
momentum dynamics with the analytic NTK give a third curve (from the net's own
initial outputs). Panels: test outputs, individual weights, losses, RMSE between
the net and the linear models. The paper's claim: the linearisation tracks the
network during training, also for a residual CNN trained with momentum.

Our scale is tiny (a few dozen images, channel widths 16/32/64 instead of the paper's
CIFAR-10 WRN at width 1024), so the agreement is looser than the paper's.

Usage: ``python examples/fig4_wrn.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _linearization as lin
import jax
import jax.numpy as jnp
from _common import (
    Clock,
    command_line,
    digits,
    model,
    parse_args,
    record_steps,
    safe_learning_rate,
    write_json,
)

MOMENTUM = 0.9


def probe(params):
    """Two weights of the stem convolution, two of a residual block, two of the readout."""
    stem, block, readout = params[0]["w"], params[1][0][1]["w"], params[-1]["w"]
    return jnp.stack([stem[0, 0, 0, 0], stem[1, 1, 0, 2], block[1, 1, 0, 0],
                      block[0, 2, 1, 3], readout[0, 0], readout[2, 5]])


def main(argv=None) -> dict:
    args = parse_args(__doc__.splitlines()[0], argv)
    clock = Clock()
    if args.quick:
        width, n_train, n_test, steps = 8, 16, 16, 100
    else:
        width, n_train, n_test, steps = 16, 24, 24, 150
    d = digits(n_train, n_test, seed=args.seed)
    x, y, xt, yt = d.x_train, d.y_train, d.x_test, d.y_test
    m = model("wrn.ntk", "wrn", width=width)
    k_xx = m.kernel_fn(x, x, "ntk")
    k_tx = m.kernel_fn(xt, x, "ntk")
    p0 = m.init(jax.random.PRNGKey(args.seed), x.shape[1:])
    # a narrow CNN's empirical NTK can be much larger than the analytic one: the rate
    # must suit both. With momentum the stable range grows by (1 + beta); a quarter of it
    # keeps the overshoot of the fastest modes mild (eta lambda_max about 1).
    k_emp = m.empirical_ntk(p0, x)
    lr = min(safe_learning_rate(k_xx, 0.25, momentum=MOMENTUM),
             safe_learning_rate(k_emp, 0.25, momentum=MOMENTUM))
    ts = record_steps(steps, 16)
    clock.log(f"analytic and empirical NTK (largest eigenvalues "
              f"{float(jnp.linalg.eigvalsh(k_xx)[-1]):.4g}, "
              f"{float(jnp.linalg.eigvalsh(k_emp)[-1]):.4g}); learning rate {lr:.4g}, "
              f"momentum {MOMENTUM}")
    res = lin.compare(m, p0, x, y, xt, yt, learning_rate=lr, steps=ts, momentum=MOMENTUM,
                      probe=probe, analytic=(k_xx, k_tx), clock=clock)
    acc = {name: float((f[-1].argmax(-1) == d.labels_test).mean())
           for name, f in res["test"].items()}
    results = {"command": command_line("fig4_wrn.py", args),
               "setup": {"net": "wrn.ntk wrn (blocks=1)", "width": width,
                         "n_train": n_train, "n_test": n_test, "steps": steps,
                         "learning_rate": lr, "momentum": MOMENTUM,
                         "optimizer": "full-batch heavy-ball momentum",
                         "data": "digits, 10 classes, zero-mean one-hot targets"},
               **lin.summary(res), "test_accuracy_final": acc}
    results["seconds"] = clock.seconds
    clock.log(f"final test RMSE to the net: {results['rmse_final']['test']}; accuracy {acc}")
    lin.plot(res, args.out / "fig4_wrn.png",
             f"WRN (width {width}), momentum {MOMENTUM}: network vs linearisation "
             f"({n_train} digits)")
    write_json(args.out / "fig4_wrn.json", results)
    return results


if __name__ == "__main__":
    main()
