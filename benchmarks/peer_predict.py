"""The peer's predictions from saved kernels, for benchmarks/bench_solvers.py (peer venv only).

Run with neural-tangents' interpreter (``.peer-venv/bin/python``):

    peer_predict.py DIR N M TIMES DIAG_REG MODE OUT.json

``DIR`` holds ``K.npy``, ``T.npy`` (train NNGP / NTK, at least ``N x N``), ``KX.npy``,
``TX.npy`` (``M x N`` test-train), ``KTT.npy`` (``M x M``), ``y.npy``. MODE is
``ensemble`` (``gradient_descent_mse_ensemble``, NTK-GP mean + cov at TIMES, the
kernels looked up by index through a kernel_fn) or ``inference`` (``gp_inference`` of
the NTK at t = inf). Prints/writes the wall time of the predictive computation (the
kernels are read before the clock starts), peak RSS and the outputs' path.
"""

import json
import resource
import sys
import time
from collections import namedtuple

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402


def main():
    folder, n, m, times, reg, mode, out = sys.argv[1:8]
    n, m, reg = int(n), int(m), float(reg)
    times = [float(t) for t in times.split(",")]
    load = lambda name: np.load(f"{folder}/{name}.npy", mmap_mode="r")  # noqa: E731
    kk = jnp.asarray(np.array(load("K")[:n, :n], np.float64))
    th = jnp.asarray(np.array(load("T")[:n, :n], np.float64))
    kx = jnp.asarray(np.array(load("KX")[:m, :n], np.float64))
    tx = jnp.asarray(np.array(load("TX")[:m, :n], np.float64))
    ktt = jnp.asarray(np.array(load("KTT")[:m, :m], np.float64))
    y = jnp.asarray(np.array(load("y")[:n], np.float64).reshape(n, -1))
    Kern = namedtuple("Kern", ["nngp", "ntk"])

    def kernel_fn(x1, x2, get, **_):
        i = np.asarray(x1[:, 0]).astype(int)
        if x2 is None:
            if i[0] >= n:  # test-test
                blk = Kern(ktt, None)
            else:
                blk = Kern(kk, th)
        else:
            blk = Kern(kx, tx)
        if isinstance(get, str):
            return getattr(blk, get)
        return Kern(*(getattr(blk, g) if g in get else None for g in Kern._fields))

    x_train = np.arange(n, dtype=np.float64)[:, None]
    x_test = (n + np.arange(m, dtype=np.float64))[:, None]
    c0 = time.process_time()
    t0 = time.perf_counter()
    if mode == "ensemble":
        fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, diag_reg=reg)
        res = fn(jnp.asarray([t if np.isfinite(t) else 1e30 for t in times]), x_test,
                 "ntk", compute_cov=True)
        mean, cov = res
    else:
        fn = nt.predict.gp_inference(kk if False else th, y, diag_reg=reg)
        res = fn("ntk", tx, ktt)
        mean, cov = res
    mean = np.asarray(mean)
    cov = np.asarray(cov)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    np.savez(out.replace(".json", ".npz"), mean=mean, cov=cov)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "jax": jax.__version__,
           "nt": getattr(nt, "__version__", "0.6.5")}
    with open(out, "w") as f:
        json.dump(rec, f)
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
