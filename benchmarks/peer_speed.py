"""Peer side of bench_speed.py: neural-tangents, run with its own interpreter.

Usage (called by bench_speed.py; one measurement per process)::

    PEER_PYTHON benchmarks/peer_speed.py analytic CASE DTYPE REPS OUT.npz
    PEER_PYTHON benchmarks/peer_speed.py empirical WHICH IMPL REPS OUT.npz [DTYPE]
    PEER_PYTHON benchmarks/peer_speed.py cnn21 READOUT DTYPE REPS OUT.npz

Prints one JSON line: first call (compile + run) and warm times, peak RSS.
"""

import json
import resource
import sys
import time

import jax

if sys.argv[1] in ("analytic", "cnn21"):
    DTYPE = sys.argv[3]
else:  # empirical: the dtype is the optional last argument
    DTYPE = sys.argv[6] if len(sys.argv) > 6 else "float64"
import numpy as np
import peer_bench  # (its import turns x64 on; set below per dtype)
from neural_tangents import stax

jax.config.update("jax_enable_x64", DTYPE == "float64")
W = 2**0.5


def empirical_net(which):
    if which == "fc":
        layers = [stax.Dense(2048, 1.5, 0.1), stax.Relu()] * 3 + [stax.Dense(1, 1.5, None)]
        return stax.serial(*layers), (64,)
    layers = [stax.Conv(64, (3, 3), (1, 1), "SAME", W_std=1.5, b_std=0.1), stax.Relu()] * 3
    layers += [stax.GlobalAvgPool(), stax.Dense(1, 1.5, None)]
    return stax.serial(*layers), (8, 8, 3)


def cnn21(readout):
    layers = [stax.Conv(128, (3, 3), (1, 1), "SAME", W_std=W, b_std=0.05), stax.Relu()] * 21
    layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(),
               stax.Dense(1, W, None)]
    return stax.serial(*layers)[2]


def timed(fn, reps):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return out, first, times


def main():
    mode = sys.argv[1]
    if mode == "analytic":
        case, reps, out = sys.argv[2], int(sys.argv[4]), sys.argv[5]
        x = np.load(out.replace(".npz", ".x.npy")).astype(DTYPE)
        kfn = jax.jit(peer_bench.net(case), static_argnames="get")
        k, first, times = timed(lambda: kfn(x, None, get=("nngp", "ntk")), reps)
        np.savez(out, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
    elif mode == "cnn21":
        readout, reps, out = sys.argv[2], int(sys.argv[4]), sys.argv[5]
        x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(DTYPE)
        kfn = jax.jit(cnn21(readout), static_argnames="get")
        k, first, times = timed(lambda: kfn(x[:1], x[1:], get="ntk"), reps)
        np.savez(out, ntk=np.asarray(k))
    else:
        import neural_tangents as nt

        which, impl, reps, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        (init_fn, apply_fn, _), shape = empirical_net(which)
        ours = np.load(out.replace(".npz", ".params.npz"))
        _, params = init_fn(jax.random.PRNGKey(0), (-1, *shape))
        leaves, tree = jax.tree_util.tree_flatten(params)
        mine = [ours[f"p{i}"] for i in range(len(ours.files))]
        # the peer's biases carry singleton axes ((1, C) for Dense, (1, 1, 1, C) for Conv)
        assert [np.size(a) for a in leaves] == [a.size for a in mine], "params layout"
        params = jax.tree_util.tree_unflatten(
            tree, [jax.numpy.asarray(m.reshape(np.shape(a)), DTYPE)
                   for a, m in zip(leaves, mine)])
        x = np.load(out.replace(".npz", ".x.npy")).astype(DTYPE)
        kfn = jax.jit(nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=impl))
        k, first, times = timed(lambda: kfn(x, None, params), reps)
        np.savez(out, ntk=np.asarray(k))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first": first, "times": times, "peak_mb": peak}))


if __name__ == "__main__":
    main()
