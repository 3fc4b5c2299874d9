"""First calls in fresh processes: ntkdsl (empty compile cache, then a second process
sharing it) against neural-tangents 0.6.5, on the analytic cases of ``cases.py``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_first_call.py                # cases a-e, 1 round
    .venv/bin/python benchmarks/bench_first_call.py --cases ab --rounds 3

Each measurement is its own interpreter; per case and round: ours with an empty
cache directory ("cold"), the peer, ours again on the same cache ("2nd"), the order
of the first two alternating from round to round. Both timers start once the library
is imported (the peer's worker, as ``peer_speed.py``, imports jax and neural_tangents
before its timer; ours imports jax and ``ntkdsl.compiler.kernels``), so "1st" is the
first ``kernel_fn`` call: trace + compile (or load) + run, in wall seconds and in the
process's CPU seconds (less moved by other load on a shared machine). "proc" is the
whole process as the parent sees it (interpreter start, imports, first call, one warm
call). Medians over rounds, with the load average at the start of each case. Float64,
nngp and ntk, x2 = None, as ``bench_speed.py``. Run it from a clean checkout: the
cache key holds a hash of ntkdsl's source, so an edit between the two processes makes
the second one miss (its "compiles" column then says so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import CASES  # noqa: E402

DEFAULT_PEER = str(HERE.parent / ".peer-venv" / "bin" / "python")


def worker(case: str, xfile: str) -> None:
    """Ours: one first call and one warm call of a case (cache dir from the environment)."""
    import jax  # noqa: F401  (imported before the timer, as the peer's worker does)
    import numpy as np

    import ntkdsl
    import ntkdsl.compiler.kernels  # the library imported before the timer, as the peer
    from ntkdsl import compile_cache

    x = np.load(xfile)
    model = ntkdsl.compile(CASES[case][0])
    t0, c0 = time.perf_counter(), time.process_time()
    model.kernel_fn(x, None, ("nngp", "ntk"))
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    model.kernel_fn(x, None, ("nngp", "ntk"))
    warm = time.perf_counter() - t0
    s = compile_cache.stats()
    print(json.dumps({"first": first, "first_cpu": first_cpu, "warm": warm,
                      "hits": s.hits, "compiles": s.compiles,
                      "sympy": "sympy" in sys.modules}))


def peer_worker(case: str, xfile: str) -> None:
    """The peer (run by its own python): the same measurement as ``peer_speed.py analytic``
    (``jax.jit`` of the stax kernel_fn, x64 on), with the first call's CPU time too."""
    import jax

    jax.config.update("jax_enable_x64", True)  # the peer's own process, as peer_bench.py
    import numpy as np
    import peer_bench

    x = np.load(xfile)
    kfn = jax.jit(peer_bench.net(case), static_argnames="get")
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(kfn(x, None, get=("nngp", "ntk")))
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    jax.block_until_ready(kfn(x, None, get=("nngp", "ntk")))
    print(json.dumps({"first": first, "first_cpu": first_cpu,
                      "warm": time.perf_counter() - t0}))


def _run(cmd, env=None, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["proc"] = wall
    return out


def _med(rs, key):
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="abcde")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--peer", default=DEFAULT_PEER, help="the peer's python")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "X.npy"), help=argparse.SUPPRESS)
    ap.add_argument("--peer-worker", nargs=2, metavar=("CASE", "X.npy"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.peer_worker:
        peer_worker(*args.peer_worker)
        return
    import numpy as np

    print("| case | load | ours 1st cold s | ours 1st 2nd process s | peer 1st s | cold/peer | "
          "2nd/peer | 1st CPU s: ours cold / 2nd / peer | CPU cold/peer | CPU 2nd/peer | "
          "ours / peer proc s | ours / peer warm s | cold: compiles, sympy | "
          "2nd: hits, compiles, sympy |")
    print("|---" * 14 + "|")
    with tempfile.TemporaryDirectory(prefix="ntkdsl-first-") as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            x = np.random.default_rng(0).standard_normal(CASES[case][1])
            base = str(tmp / case)
            np.save(base + "-peer.x.npy", x)
            load = f"{os.getloadavg()[0]:.1f}"
            ours_cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case,
                        base + "-peer.x.npy"]
            peer_cmd = [args.peer, str(Path(__file__).resolve()), "--peer-worker", case,
                        base + "-peer.x.npy"]
            cold, second, peer = [], [], []
            for r in range(args.rounds):
                env = {"NTKDSL_CACHE_DIR": str(tmp / f"cache-{case}-{r}")}
                if r % 2 == 0:
                    cold.append(_run(ours_cmd, env))
                    peer.append(_run(peer_cmd))
                else:
                    peer.append(_run(peer_cmd))
                    cold.append(_run(ours_cmd, env))
                second.append(_run(ours_cmd, env))
            errs = [r["error"] for r in cold + second + peer if "error" in r]
            if errs:
                print(f"| ({case}) | {load} | {errs[0]} |", flush=True)
                continue
            c, s, p = (_med(cold, "first"), _med(second, "first"), _med(peer, "first"))
            cc, sc, pc = (_med(r, "first_cpu") for r in (cold, second, peer))
            print(f"| ({case}) | {load} | {c:.2f} | {s:.2f} | {p:.2f} | {c / p:.2f} | "
                  f"{s / p:.2f} | {cc:.2f} / {sc:.2f} / {pc:.2f} | {cc / pc:.2f} | "
                  f"{sc / pc:.2f} | {_med(cold, 'proc'):.1f} / {_med(peer, 'proc'):.1f} | "
                  f"{_med(cold + second, 'warm'):.3f} / {_med(peer, 'warm'):.3f} | "
                  f"{cold[0]['compiles']}, {cold[0]['sympy']} | "
                  f"{second[0]['hits']}, {second[0]['compiles']}, {second[0]['sympy']} |",
                  flush=True)


if __name__ == "__main__":
    main()
