"""One side-by-side command for where a user waits: ntkdsl against neural-tangents 0.6.5.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_speed.py                 # every row, ~15 min idle
    .venv/bin/python benchmarks/bench_speed.py --rows analytic --cases ab --reps 3
    .venv/bin/python benchmarks/bench_speed.py --quick         # tiny reps: proves it runs

Rows (``--rows``, comma separated):

* ``analytic``: the kernel cases of ``cases.py`` (a-e, e = Myrtle-10 on 32x32x3) in
  float64, nngp + ntk, x2 = None: warm medians, ours / peer, first calls (ours in a
  fresh process with an empty compile cache, then a second fresh process sharing it;
  the peer has no persistent cache, so its first call is the same in both), peak RSS,
  max difference relative to the largest entry.
* ``float32``: the same cases in float32 on both sides; error of ours against our
  float64 result.
* ``cnn21``: the peer's README case (one NTK entry of a 21-layer 3x3 CNN on 32x32x3,
  GAP and Flatten readouts, float32 and float64); ``benchmarks/gpu.sh`` runs it.
* ``chunks``: our warm time per chunk size (``kernels.CHUNK_ENTRIES`` on CPU,
  ``ACCEL_CHUNK_ENTRIES`` on an accelerator), to tune the chunk from a measurement.
* ``empirical``: the finite net's empirical NTK, FC 3 x Dense(2048) on 256 inputs and a
  CNN of 3 x Conv(64, 3x3) + GAP on 64 images 8x8x3, ours (``implementation="auto"``)
  against each of the peer's implementations (1 Jacobian contraction, 2 NTK-vector
  products, 3 structured derivatives; ``--peer-impls``), on the same params (ours,
  loaded by the peer) and inputs, in each of ``--empirical-dtypes``: first call and
  warm median, ratio against the peer's fastest, max difference relative to the
  largest entry against the peer and (float32) against our float64.

Every measurement is its own interpreter; ours and the peer's alternate which goes first
(except the empirical rows, where ours writes the parameters the peer then loads). The
load average is printed beside each row: on a shared machine the absolute times move,
the ratios (from the same run) less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
EMPIRICAL = {
    "fc": ("net f { repeat 3 { Dense(2048, W_std=1.5, b_std=0.1); Relu } Dense(1, W_std=1.5) }",
           (256, 64), "FC 3 x Dense(2048) + Relu, 256 inputs of 64"),
    "cnn": ("net c { repeat 3 { Conv(64, 3, padding=SAME, W_std=1.5, b_std=0.1); Relu } "
            "GlobalAvgPool; Dense(1, W_std=1.5) }",
            (64, 8, 8, 3), "CNN 3 x Conv(64, 3x3) + Relu, GAP, 64 images 8x8x3"),
}


def _timed(fn, reps):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, first, times


def _report(first, times, **extra):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first": first, "times": times, "peak_mb": peak, **extra}))


def worker_analytic(case, dtype, reps, out):
    """Our kernel_fn on one case (its own interpreter; the cache dir comes from the env).

    The library is imported before the timer, as the peer's worker imports jax and
    neural_tangents before its own (``ntkdsl`` imports its compiler lazily, so
    ``ntkdsl.compiler.kernels`` is imported here by name), so "1st" is the first call:
    trace + compile (or load) + run, as in ``bench_first_call.py``.
    """
    import jax  # noqa: F401
    import numpy as np

    import ntkdsl
    import ntkdsl.compiler.kernels
    from ntkdsl import compile_cache

    x = np.load(out.replace(".npz", ".x.npy")).astype(dtype)
    model = ntkdsl.compile(CASES[case][0])
    k, first, times = _timed(lambda: model.kernel_fn(x, None, ("nngp", "ntk"), dtype=dtype),
                             reps)
    np.savez(out, nngp=k.nngp, ntk=k.ntk)
    s = compile_cache.stats()
    _report(first, times, hits=s.hits, compiles=s.compiles)


def _flat_params(model, params):
    """Our params in the peer's leaf order: per affine layer W then b (repeats unrolled)."""
    from ntkdsl.compiler.network import leaf_params

    out = []
    for _, p in leaf_params(model.net.body, params):
        if isinstance(p, dict):
            out.append(p["w"])
            if "b" in p:
                out.append(p["b"])
    return out


def worker_empirical(which, dtype, reps, out, implementation="auto"):
    """Our empirical NTK of one finite net (float64 params and inputs, cast to ``dtype``)."""
    import jax
    import numpy as np

    import ntkdsl
    from ntkdsl.empirical import _choose

    spec, shape, _ = EMPIRICAL[which]
    model = ntkdsl.compile(spec)
    with jax.enable_x64(True):
        params = model.init(jax.random.key(0), shape[1:])
        x = np.random.default_rng(1).standard_normal(shape)
        params = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), params)
        x = x.astype(dtype)
        impl = _choose(model.apply, params, x, None, implementation, None)[0]
    np.save(out.replace(".npz", ".x.npy"), x)
    np.savez(out.replace(".npz", ".params.npz"),
             **{f"p{i}": np.asarray(a) for i, a in enumerate(_flat_params(model, params))})
    k, first, times = _timed(
        lambda: np.asarray(model.empirical_ntk(params, x, implementation=implementation)), reps)
    np.savez(out, ntk=k)
    _report(first, times, implementation=impl, dtype=str(k.dtype))


CNN21 = ("net g {{ repeat 21 {{ Conv(128, 3, padding=SAME, W_std=sqrt(2), b_std=0.05); Relu }} "
         "{readout}; Dense(1, W_std=sqrt(2)) }}")


def worker_cnn21(readout, dtype, reps, out):
    """One NTK entry of the peer's README CNN: 21 x (Conv 3x3 + Relu), GAP or Flatten
    (the library imported before the timer, as in :func:`worker_analytic`)."""
    import jax  # noqa: F401
    import numpy as np

    import ntkdsl
    import ntkdsl.compiler.kernels

    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(dtype)
    model = ntkdsl.compile(CNN21.format(readout="GlobalAvgPool" if readout == "gap"
                                        else "Flatten"))
    k, first, times = _timed(lambda: model.kernel_fn(x[:1], x[1:], "ntk", dtype=dtype), reps)
    np.savez(out, ntk=k)
    _report(first, times)


def worker_chunks(case, entries, reps, out):
    """Our warm time on one case with a given chunk size (entries per kernel array)."""
    import numpy as np

    import ntkdsl
    from ntkdsl.compiler import kernels

    kernels.CHUNK_ENTRIES = kernels.ACCEL_CHUNK_ENTRIES = int(entries)
    x = np.load(out.replace(".npz", ".x.npy"))
    model = ntkdsl.compile(CASES[case][0])
    _, first, times = _timed(lambda: model.kernel_fn(x, None, ("nngp", "ntk")), reps)
    _report(first, times)


def _run(cmd, env=None, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _load():
    return f"{os.getloadavg()[0]:.1f}"


def _diff(a, b, names):
    import numpy as np

    return max(float(np.abs(a[g] - b[g]).max() / np.abs(b[g]).max()) for g in names)


def _med(r):
    return statistics.median(r["times"]) if r.get("times") else float("nan")


def analytic_rows(args, tmp, dtype):
    import numpy as np

    print(f"\n### analytic kernels, {dtype} (nngp + ntk, x2 = None)\n")
    print("| case | load | ours s | peer s | ours/peer | ours 1st (cold) | ours 1st (2nd "
          "process) | peer 1st | 1st cold/peer | 2nd/peer | ours MB | peer MB | "
          + ("max rel diff |" if dtype == "float64" else "err vs our float64 |"))
    print("|---" * 13 + "|")
    for i, case in enumerate(args.cases):
        shape = CASES[case][1]
        x = np.random.default_rng(0).standard_normal(shape)
        base = str(tmp / f"{case}-{dtype}")
        np.save(base + ".x.npy", x)
        cache = tmp / f"cache-{case}-{dtype}"
        load = _load()
        ours_cmd = [sys.executable, str(HERE / "bench_speed.py"), "--worker", "analytic", case,
                    dtype, str(args.reps), base + "-ours.npz"]
        peer_cmd = [args.peer, str(HERE / "peer_speed.py"), "analytic", case, dtype,
                    str(args.reps), base + "-peer.npz"]
        np.save(base + "-ours.x.npy", x)
        np.save(base + "-peer.x.npy", x)
        env = {"NTKDSL_CACHE_DIR": str(cache)}
        if i % 2 == 0:
            cold, peer = _run(ours_cmd, env), _run(peer_cmd)
        else:
            peer, cold = _run(peer_cmd), _run(ours_cmd, env)
        second = _run(ours_cmd, env)
        shutil.rmtree(cache, ignore_errors=True)
        if "error" in cold or "error" in peer or "error" in second:
            print(f"| ({case}) | {load} | " + " | ".join(
                str(r.get("error", "")) for r in (cold, second, peer)) + " |")
            continue
        a = np.load(base + "-ours.npz")
        if dtype == "float64":
            err = _diff(a, np.load(base + "-peer.npz"), ("nngp", "ntk"))
        else:
            ref = tmp / f"{case}-float64-ours.npz"
            err = _diff(a, np.load(ref), ("nngp", "ntk")) if ref.exists() else float("nan")
        ours = statistics.median(cold["times"] + second["times"])
        pm = _med(peer)
        print(f"| ({case}) | {load} | {ours:.4f} | {pm:.4f} | {ours / pm:.3f} | "
              f"{cold['first']:.2f} | {second['first']:.2f} (hits {second['hits']}, compiles "
              f"{second['compiles']}) | {peer['first']:.2f} | "
              f"{cold['first'] / peer['first']:.2f} | "
              f"{second['first'] / peer['first']:.2f} | "
              f"{max(cold['peak_mb'], second['peak_mb']):.0f} | {peer['peak_mb']:.0f} | "
              f"{err:.1e} |", flush=True)


def empirical_rows(args, tmp):
    import numpy as np

    for dtype in args.empirical_dtypes:
        print(f"\n### empirical NTK ({dtype}; first call / warm median s)\n")
        print("| net | load | ours (impl) | peer 1 jacobian | peer 2 ntvp | peer 3 structured "
              "| ours / peer fastest | ours MB | peer MB (max) | max rel diff vs peer "
              "| ours vs our float64 |")
        print("|---" * 11 + "|")
        for which in args.empirical:
            base = str(tmp / f"emp-{which}-{dtype}")
            load = _load()
            ours = _run(["nice", "-n", str(args.nice), sys.executable,
                         str(HERE / "bench_speed.py"), "--worker", "empirical", which, dtype,
                         str(args.reps), base + ".npz"])
            if "error" in ours:
                print(f"| {which} | {load} | {ours['error']} |", flush=True)
                continue
            peers = {}
            for impl in args.peer_impls[which]:
                out = base + f"-peer{impl}.npz"
                shutil.copy(base + ".x.npy", out.replace(".npz", ".x.npy"))
                shutil.copy(base + ".params.npz", out.replace(".npz", ".params.npz"))
                peers[impl] = _run(["nice", "-n", str(args.nice), args.peer,
                                    str(HERE / "peer_speed.py"), "empirical", which, str(impl),
                                    str(args.reps), out, dtype], timeout=args.peer_timeout)
            ok = {i: r for i, r in peers.items() if "error" not in r}
            a = np.load(base + ".npz")["ntk"]

            def rel(b, a=a):
                return float(np.abs(a - b).max() / np.abs(a).max())

            diff = max((rel(np.load(base + f"-peer{i}.npz")["ntk"]) for i in ok),
                       default=float("nan"))
            ref = tmp / f"emp-{which}-float64.npz"
            own = rel(np.load(ref)["ntk"]) if dtype != "float64" and ref.exists() else 0.0
            fastest = min((_med(r) for r in ok.values()), default=float("nan"))
            cells = [f"{peers[i]['first']:.2f} / {_med(peers[i]):.3f}" if i in ok else
                     (peers[i]["error"] if i in peers else "not run") for i in (1, 2, 3)]
            peer_mb = max((r["peak_mb"] for r in ok.values()), default=float("nan"))
            print(f"| {which} | {load} | {ours['first']:.2f} / {_med(ours):.3f} "
                  f"({ours['implementation']}) | " + " | ".join(cells)
                  + f" | {_med(ours) / fastest:.3f} | {ours['peak_mb']:.0f} | {peer_mb:.0f} | "
                  f"{diff:.1e} | {own:.1e} |", flush=True)


def cnn21_rows(args, tmp):
    import numpy as np

    print("\n### the peer's README case: one NTK entry, 21 x (Conv 3x3 + Relu), 32x32x3\n")
    print("| readout | dtype | load | ours s | peer s | ours/peer | ours 1st | peer 1st | "
          "rel diff |")
    print("|---" * 9 + "|")
    for readout in ("gap", "flatten"):
        for dtype in ("float32", "float64"):
            base = str(tmp / f"cnn21-{readout}-{dtype}")
            load = _load()
            ours = _run([sys.executable, str(HERE / "bench_speed.py"), "--worker", "cnn21",
                         readout, dtype, str(args.reps), base + "-ours.npz"],
                        {"NTKDSL_CACHE_DIR": "off"})
            peer = _run([args.peer, str(HERE / "peer_speed.py"), "cnn21", readout, dtype,
                         str(args.reps), base + "-peer.npz"])
            if "error" in ours or "error" in peer:
                print(f"| {readout} | {dtype} | {load} | {ours.get('error', '')} | "
                      f"{peer.get('error', '')} |")
                continue
            a, b = np.load(base + "-ours.npz")["ntk"], np.load(base + "-peer.npz")["ntk"]
            diff = float(np.abs(a - b).max() / np.abs(b).max())
            print(f"| {readout} | {dtype} | {load} | {_med(ours):.4f} | {_med(peer):.4f} | "
                  f"{_med(ours) / _med(peer):.3f} | {ours['first']:.2f} | {peer['first']:.2f} | "
                  f"{diff:.1e} |", flush=True)


def chunk_rows(args, tmp):
    import numpy as np

    print("\n### chunk size sweep (ours, warm median s; entries per kernel array)\n")
    sizes = [1 << e for e in args.chunk_exponents]
    print("| case | load | " + " | ".join(f"2^{e}" for e in args.chunk_exponents) + " |")
    print("|---" * (len(sizes) + 2) + "|")
    for case in args.cases:
        base = str(tmp / f"chunk-{case}")
        np.save(base + ".x.npy", np.random.default_rng(0).standard_normal(CASES[case][1]))
        load = _load()
        cells = []
        for n in sizes:
            r = _run([sys.executable, str(HERE / "bench_speed.py"), "--worker", "chunks", case,
                      str(n), str(args.reps), base + ".npz"], {"NTKDSL_CACHE_DIR": "off"})
            cells.append(r.get("error", f"{_med(r):.4f}"))
        print(f"| ({case}) | {load} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="analytic,float32,empirical")
    ap.add_argument("--cases", default="abcde")
    ap.add_argument("--empirical", default="fc,cnn")
    ap.add_argument("--empirical-dtypes", default="float64,float32",
                    help="dtypes of the empirical rows (params and inputs cast on both sides)")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness of the empirical rows' processes (a shared machine)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--peer", default=DEFAULT_PEER, help="the peer's python")
    ap.add_argument("--peer-timeout", type=int, default=600,
                    help="seconds per peer empirical process (a slow implementation is cut)")
    ap.add_argument("--chunk-exponents", type=lambda v: [int(e) for e in v.split(",")],
                    default=[14, 16, 18, 20, 22, 24, 26],
                    help="the 'chunks' row: chunk sizes 2^e to try")
    ap.add_argument("--peer-impls", dest="peer_impls_arg", default="",
                    help="the peer's empirical implementations per net, e.g. 'fc=3;cnn=1,3'")
    ap.add_argument("--quick", action="store_true", help="1 rep, cases a and b, CNN only")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "analytic":
            worker_analytic(rest[0], rest[1], int(rest[2]), rest[3])
        elif kind == "cnn21":
            worker_cnn21(rest[0], rest[1], int(rest[2]), rest[3])
        elif kind == "chunks":
            worker_chunks(rest[0], rest[1], int(rest[2]), rest[3])
        else:
            worker_empirical(rest[0], rest[1], int(rest[2]), rest[3], *rest[4:])
        return
    if args.quick:
        args.reps, args.cases, args.empirical = 1, "ab", "cnn"
    args.empirical = [e for e in args.empirical.split(",") if e]
    args.empirical_dtypes = [d for d in args.empirical_dtypes.split(",") if d]
    # the peer's Jacobian contraction of the FC net needs 256 x 8.5M params x 8 B = 17 GB
    args.peer_impls = {"fc": (2, 3), "cnn": (1, 2, 3)}
    for item in filter(None, args.peer_impls_arg.split(";")):
        net, impls = item.split("=")
        args.peer_impls[net] = tuple(int(i) for i in impls.split(","))
    import jax
    import jaxlib

    print(f"ntkdsl bench_speed, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} / jaxlib {jaxlib.__version__} "
          f"(ours), backend {jax.default_backend()}; peer {args.peer}")
    tmp = Path(tempfile.mkdtemp(prefix="ntkdsl-speed-"))
    try:
        rows = args.rows.split(",")
        if "empirical" in rows:
            empirical_rows(args, tmp)
        if "analytic" in rows or "float32" in rows:
            analytic_rows(args, tmp, "float64")
        if "float32" in rows:
            analytic_rows(args, tmp, "float32")
        if "cnn21" in rows:
            cnn21_rows(args, tmp)
        if "chunks" in rows:
            chunk_rows(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
