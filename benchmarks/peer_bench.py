"""Peer side of the benchmark: neural-tangents, run with its own interpreter.

Usage: ``PEER_PYTHON benchmarks/peer_bench.py CASE REPS OUT.npz`` (called by
bench.py). Prints one JSON line: compile (first call) time, warm times, peak RSS.
"""

import json
import resource
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

W, B = 2**0.5, 0.05


def conv_relu(b=B):
    return [stax.Conv(64, (3, 3), (1, 1), "SAME", W_std=W, b_std=b), stax.Relu()]


def net(case):
    if case == "a":
        layers = [stax.Dense(512, W, B), stax.Relu()] * 3 + [stax.Dense(1, W, None)]
    elif case == "b":
        layers = conv_relu() * 3 + [stax.GlobalAvgPool(), stax.Dense(1, W, None)]
    elif case == "c":
        cr = conv_relu(None)
        pool = [stax.AvgPool((2, 2), (2, 2))]
        layers = cr + cr + pool + cr + pool + cr + [stax.GlobalAvgPool(), stax.Dense(10, W, None)]
    elif case == "d":
        layers = conv_relu() * 3 + [stax.Flatten(), stax.Dense(1, W, None)]
    elif case == "e":  # Myrtle-10 (examples/specs/myrtle10.ntk)
        cr, pool = conv_relu(None) * 3, [stax.AvgPool((2, 2), (2, 2))]
        layers = cr + pool + cr + pool + cr + [stax.GlobalAvgPool(), stax.Dense(10, W, None)]
    return stax.serial(*layers)[2]


def main():
    case, reps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    x = np.load(out.replace(".npz", ".x.npy"))
    kfn = jax.jit(net(case), static_argnames="get")
    t0 = time.perf_counter()
    k = kfn(x, None, get=("nngp", "ntk"))
    jax.block_until_ready(k)
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        k = kfn(x, None, get=("nngp", "ntk"))
        jax.block_until_ready(k)
        times.append(time.perf_counter() - t0)
    np.savez(out, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first": first, "times": times, "peak_mb": peak}))


if __name__ == "__main__":
    main()
