"""First-call time of deep nets: ``repeat`` compiled as a loop, against unrolled and the peer.

Each measurement runs in a fresh Python process (so nothing is cached: no jit
cache, no compiled tile functions) and times the first ``kernel_fn(x)`` call
(NNGP and NTK, float64: tracing, compiling and running) in wall-clock and CPU
seconds (the CPU time is the fairer number on a shared, loaded machine), then a
second call (running only), and reports the process's peak resident memory.

Nets:

* ``fc``: ``repeat D { Dense(512); Relu }  Dense(1)`` on 8 rows of 16 features;
* ``cnn``: ``repeat D { Conv(64, 3); Relu }  GlobalAvgPool  Dense(1)`` on 4 rows of
  8x8x3 images (the full spatial covariance, 64 x 64 positions per pair).

Implementations:

* ``after``: this checkout (a shape-keeping repeat is a ``lax.scan``);
* ``before``: an older source tree given with ``--before DIR`` (e.g.
  ``git archive <commit> | tar -x -C DIR``), where ``repeat`` was unrolled;
* ``peer``: neural-tangents' ``stax.repeat`` (itself a loop), run by the
  interpreter given with ``--peer-python`` (default: the repository's
  ``.peer-venv``), float64.

Usage::

    python benchmarks/bench_compile_depth.py --before /tmp/ntkdsl_before
    python benchmarks/bench_compile_depth.py --only after --depths 10,50,200,1000

It prints one line per run and a table at the end. The machine may be
shared: read the load average it prints with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD_NTKDSL = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
case, depth = sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
import ntkdsl
import jax
t_import = time.perf_counter() - t0
if case == "fc":
    src = f"net n {{ repeat {depth} {{ Dense(512, W_std = sqrt(2)); Relu }} Dense(1) }}"
    x = np.random.default_rng(0).standard_normal((8, 16))
else:
    src = (f"net n {{ repeat {depth} {{ Conv(64, 3, W_std = sqrt(2)); Relu }} "
           "GlobalAvgPool  Dense(1) }")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
m = ntkdsl.compile(src)
t0, c0 = time.perf_counter(), time.process_time()
k = m.kernel_fn(x)
t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
t0 = time.perf_counter()
k = m.kernel_fn(x)
t_second = time.perf_counter() - t0
assert np.isfinite(k.ntk).all() and k.nngp.dtype == np.float64
print(json.dumps({"import": t_import, "first": t_first, "first_cpu": c_first,
                  "second": t_second,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ntk00": float(k.ntk[0, 0]), "jax": jax.__version__}))
"""

CHILD_PEER = r"""
import json, resource, sys, time
import numpy as np
case, depth = sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
import neural_tangents
t_import = time.perf_counter() - t0
w = 2 ** 0.5
if case == "fc":
    block = stax.serial(stax.Dense(512, W_std=w), stax.Relu())
    tail = [stax.Dense(1)]
    x = np.random.default_rng(0).standard_normal((8, 16))
else:
    block = stax.serial(stax.Conv(64, (3, 3), padding="SAME", W_std=w), stax.Relu())
    tail = [stax.GlobalAvgPool(), stax.Dense(1)]
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
# stax.repeat needs a body that keeps the shape: the first iteration (16 -> 512
# features, 3 -> 64 channels) is written out, as ntkdsl peels it
if case == "fc":
    layers = [block, stax.repeat(block, depth - 1)]
else:
    # a stax Conv flips the kernel's spatial axis order (its is_reversed flag), so a
    # one-conv body changes the scan carry's structure: repeat pairs of blocks
    layers = [block, stax.repeat(stax.serial(block, block), (depth - 1) // 2)]
    layers += [block] * ((depth - 1) % 2)
_, _, kernel_fn = stax.serial(*layers, *tail)
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
x = jax.numpy.asarray(x, dtype=jax.numpy.float64)
t0, c0 = time.perf_counter(), time.process_time()
k = kernel_fn(x, None, ("nngp", "ntk"))
k = [np.asarray(a) for a in k]
t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
t0 = time.perf_counter()
k = [np.asarray(a) for a in kernel_fn(x, None, ("nngp", "ntk"))]
t_second = time.perf_counter() - t0
assert k[1].dtype == np.float64
print(json.dumps({"import": t_import, "first": t_first, "first_cpu": c_first,
                  "second": t_second,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ntk00": float(k[1][0, 0]),
                  "jax": jax.__version__, "nt": neural_tangents.__version__}))
"""


def run_one(impl: str, case: str, depth: int, args) -> dict:
    """One fresh process; its JSON line, or ``{"error": ...}``."""
    if impl == "peer":
        cmd = [args.peer_python, "-c", CHILD_PEER, "-", case, str(depth)]
    else:
        tree = str(ROOT if impl == "after" else Path(args.before).resolve())
        cmd = [args.python, "-c", CHILD_NTKDSL, tree, case, str(depth)]
    # the first call is to compile: ntkdsl's on-disk cache of compiled functions is off
    env = dict(os.environ, PYTHONPATH="", NTKDSL_CACHE_DIR="off")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "JAX_TRACEBACK" not in ln
                 and not ln.startswith("---")]
        return {"error": lines[-1] if lines else "failed"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process"] = wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="source tree of ntkdsl before the change (unrolled repeat)")
    ap.add_argument("--peer-python", default=str(ROOT / ".peer-venv" / "bin" / "python"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--only", default="after,before,peer", help="implementations to run")
    ap.add_argument("--cases", default="fc:200,cnn:50",
                    help="comma-separated CASE:DEPTH (CASE fc or cnn)")
    ap.add_argument("--depths", help="instead of --cases: these depths of the fc net")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    impls = [i for i in args.only.split(",") if i != "before" or args.before]
    if args.depths:
        cases = [("fc", int(d)) for d in args.depths.split(",")]
    else:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for case, depth in cases:
        for impl in impls:
            r = run_one(impl, case, depth, args)
            rows.append((case, depth, impl, r))
            print(case, depth, impl, json.dumps(r), f"load {os.getloadavg()[0]:.1f}",
                  flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("\n| net | depth | implementation | first call (s) | its CPU time (s) | second call (s) "
          "| peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for case, depth, impl, r in rows:
        if "error" in r:
            print(f"| {case} | {depth} | {impl} | {r['error']} | | | |")
        else:
            print(f"| {case} | {depth} | {impl} | {r['first']:.2f} | {r['first_cpu']:.2f} | "
                  f"{r['second']:.3f} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
