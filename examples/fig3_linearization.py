"""Fig. 3 of Lee et al. 2019: a wide network and its linearisation under gradient descent.

A fully connected net with 5 hidden ReLU layers (examples/specs/fc_deep.ntk, W_std^2 = 2,
b_std^2 = 0.1) is trained by full-batch gradient descent on the total MSE loss on two
digit classes (targets +-1/2), side by side with its linearisation around the init.
We record test outputs, a few individual weights, train and test losses, and the
RMSE between the net and (a) its trained linearisation, (b) the closed-form dynamics
with the empirical NTK at init (the same linear model, in closed form) and (c) the
closed-form dynamics with the analytic (infinite-width) NTK, all from the net's own
initial outputs. The paper's claim: the linearisation tracks the network closely
during the whole of training.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import _linearization as lin
import jax
import jax.numpy as jnp


def probe(params):
    """Three weights of the second hidden layer and two of the readout."""
    hidden, readout = params[2]["w"], params[-1]["w"]
    return jnp.stack([hidden[0, 0], hidden[1, 2], hidden[3, 5], readout[0, 0], readout[1, 0]])


def main(argv=None) -> dict:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    clock = c.Clock()
    if args.quick:
        width, n_train, n_test, steps, every = 256, 16, 16, 128, 2
    else:
        width, n_train, n_test, steps, every = 512, 32, 32, 400, 4
    x, y, xt, yt = c.two_class_digits(n_train, n_test, seed=args.seed)
    m = c.model("fc_deep.ntk", "fc5", width=width)
    k_xx = m.kernel_fn(x, x, "ntk")
    k_tx = m.kernel_fn(xt, x, "ntk")
    lr = c.safe_learning_rate(k_xx, 0.5)
    clock.log(f"analytic NTK; learning rate {lr:.4g} (half of eta_critical)")
    p0 = m.init(jax.random.PRNGKey(args.seed), x.shape[1:])
    res = lin.compare(m, p0, x, y, xt, yt, learning_rate=lr, steps=steps, record_every=every,
                      probe=probe, analytic=(k_xx, k_tx), empirical=True, clock=clock)
    setup = {"net": "fc_deep.ntk fc5 (5 hidden ReLU layers)", "width": width,
             "n_train": n_train, "n_test": n_test, "steps": steps, "learning_rate": lr,
             "optimizer": "full-batch GD (ntkdsl.training.train)",
             "data": "digits classes 0/1, targets +-1/2"}
    return lin.finish(res, {"setup": setup}, args, "fig3_linearization.py",
                      f"fc5 ReLU, width {width}: network vs linearisation (GD, {n_train} digits)",
                      clock)


if __name__ == "__main__":
    main()
