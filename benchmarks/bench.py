"""Side-by-side benchmark: ntkdsl's kernel_fn against neural-tangents 0.6.5.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench.py [--cases abcd] [--reps 7] [--peer PYTHON]

Each case runs in fresh interpreters, ours and the peer's alternating (the
order flips from case to case), each with a first call (compile + run, timed
as "first"), then ``--reps`` warm calls whose median is reported. Float64,
nngp and ntk together, x2 = None. Prints per case both medians, the ratio
ours / peer, first-call times, the peak RSS of each process, and the largest
difference between the two results relative to the largest entry.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import CASES  # noqa: E402

DEFAULT_PEER = str(Path(__file__).resolve().parent.parent / ".peer-venv" / "bin" / "python")


def ours_worker(case: str, reps: int, out: str) -> None:
    """Time our kernel_fn on one case (run in its own interpreter)."""
    import jax
    import numpy as np

    import ntkdsl

    spec, _, _ = CASES[case]
    x = np.load(out.replace(".npz", ".x.npy"))
    model = ntkdsl.compile(spec)
    t0 = time.perf_counter()
    k = model.kernel_fn(x, None, ("nngp", "ntk"))
    jax.block_until_ready((k.nngp, k.ntk))
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        k = model.kernel_fn(x, None, ("nngp", "ntk"))
        jax.block_until_ready((k.nngp, k.ntk))
        times.append(time.perf_counter() - t0)
    np.savez(out, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first": first, "times": times, "peak_mb": peak}))


def _run(cmd: list[str]) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="abcd")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternating rounds per case (the medians pool all rounds)")
    ap.add_argument("--peer", default=DEFAULT_PEER, help="the peer's python")
    ap.add_argument("--worker", nargs=3, metavar=("CASE", "REPS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        ours_worker(args.worker[0], int(args.worker[1]), args.worker[2])
        return

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="ntkdsl-bench-"))
    print(f"{'case':4} {'ours s':>9} {'peer s':>9} {'ratio':>6} {'ours 1st':>9} "
          f"{'peer 1st':>9} {'ours MB':>8} {'peer MB':>8} {'max rel diff':>12}")
    for i, case in enumerate(args.cases):
        _, shape, _ = CASES[case]
        x = np.random.default_rng(0).standard_normal(shape)
        res = {"ours": [], "peer": []}
        for r in range(args.rounds):
            sides = ["ours", "peer"] if (i + r) % 2 == 0 else ["peer", "ours"]
            for side in sides:
                out = str(tmp / f"{case}-{side}.npz")
                np.save(out.replace(".npz", ".x.npy"), x)
                if side == "ours":
                    cmd = [sys.executable, str(HERE / "bench.py"), "--worker", case,
                           str(args.reps), out]
                else:
                    cmd = [args.peer, str(HERE / "peer_bench.py"), case, str(args.reps), out]
                res[side].append(_run(cmd))
        med = {s: statistics.median([t for r in res[s] for t in r["times"]]) for s in res}
        first = {s: statistics.median([r["first"] for r in res[s]]) for s in res}
        peak = {s: max(r["peak_mb"] for r in res[s]) for s in res}
        a, b = np.load(tmp / f"{case}-ours.npz"), np.load(tmp / f"{case}-peer.npz")
        diff = max(float(np.abs(a[g] - b[g]).max() / np.abs(b[g]).max()) for g in ("nngp", "ntk"))
        print(f"({case})  {med['ours']:9.4f} {med['peer']:9.4f} {med['ours'] / med['peer']:6.3f} "
              f"{first['ours']:9.2f} {first['peer']:9.2f} {peak['ours']:8.0f} {peak['peer']:8.0f} "
              f"{diff:12.1e}", flush=True)


if __name__ == "__main__":
    main()
