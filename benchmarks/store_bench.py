"""Benchmarks of the kernel store (see benchmarks/README.md, section "Kernel store").

    python benchmarks/store_bench.py digits    # all 1797 digits, GAP CNN, --workers 2,
                                               # killed and resumed, vs in-memory; plan vs measured
    python benchmarks/store_bench.py overhead  # store + Dask vs in-process kernel_fn, same tiles
    python benchmarks/store_bench.py myrtle    # plan of Myrtle-10 on 60,000 32x32x3 images

Numbers are printed; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "specs"


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ntkdsl", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0)[..., None]


def digits(args) -> None:
    """The issue's end-to-end run: plan, run with 2 workers, kill, resume, compare."""
    import ntkdsl
    from ntkdsl.plan import make_plan
    from ntkdsl.store import read_done

    work = Path(tempfile.mkdtemp(prefix="ntkdsl-digits-"))
    x = _digits()
    np.save(work / "x.npy", x)
    spec = str(SPECS / "digits_cnn.ntk")
    model = ntkdsl.compile_file(spec, net="cnn_gap")
    t0 = time.perf_counter()
    plan = make_plan(model, len(x), x.shape[1:], workers=2)
    print(plan.render(2))
    print(f"[plan itself took {time.perf_counter() - t0:.1f} s]")
    predicted = plan.wall_seconds(2)

    cmd = ["kernel", spec, "--net", "cnn_gap", "--x1", "x.npy", "--store", "k.zarr",
           "--workers", "2"]
    t0 = time.perf_counter()
    proc = _cli(*cmd, cwd=work)
    kill_at = max(1, int(args.kill_fraction * plan.tiles))
    while proc.poll() is None and len(read_done(work / "k.zarr")) < kill_at:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = time.perf_counter() - t0
    done = len(read_done(work / "k.zarr"))
    print(f"run 1: killed (SIGKILL, whole process group) after {first:.1f} s, "
          f"{done} of {plan.tiles} tiles done")
    t0 = time.perf_counter()
    proc = _cli(*cmd, cwd=work)
    _, err = proc.communicate()
    second = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"resume failed: {err}")
    m = re.search(r"(\d+) already done, computing (\d+)", err)
    print(f"run 2 (resume): {second:.1f} s; {m[0] if m else err.strip()}")
    print(f"measured wall, both runs: {first + second:.1f} s; predicted (one run, 2 workers): "
          f"{predicted:.1f} s; measured/predicted {(first + second) / predicted:.2f}")

    compare(work / "k.zarr", x, model, None if args.full_reference else args.blocks)


def compare(store, x, model, sample_blocks) -> None:
    """The store against in-memory ``kernel_fn`` with the same tiles.

    With ``sample_blocks`` (block indices), only the rows of those blocks: a
    kernel entry depends only on its pair of inputs, and in-memory tiles of
    those rows are then exactly the store's tiles between those blocks.
    """
    from ntkdsl.store import blocks, open_kernel

    ks = open_kernel(store)
    b = ks.metadata["tile"]
    spans = blocks(len(x), b)
    idx = (np.arange(len(x)) if sample_blocks is None else
           np.concatenate([np.arange(*spans[i]) for i in sample_blocks]))
    t0 = time.perf_counter()
    ref = model.kernel_fn(x[idx], None, dtype="float64", batch_size=b, progress=False)
    what = "all rows" if sample_blocks is None else f"the rows of blocks {sample_blocks}"
    print(f"in-memory kernel_fn, same tiles, {what} ({len(idx)}): "
          f"{time.perf_counter() - t0:.1f} s")
    for g in ("nngp", "ntk"):
        a = np.asarray(getattr(ks, g).oindex[idx, idx])
        r = np.asarray(getattr(ref, g))
        rel = float(np.abs(a - r).max() / np.abs(r).max())
        print(f"{g}: bit-identical {np.array_equal(a, r)}, max rel diff {rel:.1e}")


def overhead(args) -> None:
    """Store + in-process engine and store + Dask (1, 2 workers) vs kernel_fn, same tiles."""
    import ntkdsl
    from ntkdsl.engine import compute_kernel_store, local_cluster

    x = _digits()[: args.n]
    model = ntkdsl.compile_file(str(SPECS / "digits_cnn.ntk"), net="cnn_gap")
    b = args.tile
    model.kernel_fn(x[:b], x[b:2 * b], batch_size=b, progress=False)  # compile both tiles
    model.kernel_fn(x[:b], None, batch_size=b, progress=False)
    t0 = time.perf_counter()
    model.kernel_fn(x, None, batch_size=b, progress=False)
    base = time.perf_counter() - t0
    print(f"n={args.n}, tile {b}: in-process kernel_fn {base:.1f} s (compiled beforehand)")
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/x.npy", x)
        t0 = time.perf_counter()
        compute_kernel_store(model, f"{d}/x.npy", None, f"{d}/a.zarr", tile_size=b)
        t = time.perf_counter() - t0
        print(f"store, in-process engine: {t:.1f} s ({100 * (t / base - 1):+.1f}%)")
        from distributed import Client

        for workers in (1, 2):
            with local_cluster(workers) as cluster, Client(cluster) as client:
                client.run(lambda: __import__("ntkdsl.model"))  # workers started
                t0 = time.perf_counter()
                compute_kernel_store(model, f"{d}/x.npy", None, f"{d}/w{workers}.zarr",
                                     tile_size=b, client=client)
                t = time.perf_counter() - t0
            print(f"store, Dask LocalCluster of {workers}: {t:.1f} s incl. each worker's "
                  f"compile ({100 * (t / base - 1):+.1f}% vs in-process)")


def myrtle(args) -> None:
    """The plan for Myrtle-10 kernels on 60,000 CIFAR-sized images."""
    import ntkdsl
    from ntkdsl.plan import make_plan

    model = ntkdsl.compile_file(str(SPECS / "myrtle10.ntk"), net="myrtle10")
    # cluster workers each have their own memory: 16 GiB per CPU worker, an 80 GiB GPU
    for device, workers, memory in (("cpu", args.workers, 16 << 30), ("gpu", 8, 80 << 30)):
        t0 = time.perf_counter()
        plan = make_plan(model, 60000, (32, 32, 3), device=device, workers=workers,
                         memory=memory, tile=args.tile, calibration_rows=args.rows)
        print(f"--- {device}, {workers} workers")
        print(plan.render(workers))
        print(f"[plan took {time.perf_counter() - t0:.1f} s]")


def main() -> None:
    """Run the benchmark named on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="which", required=True)
    d = sub.add_parser("digits")
    d.add_argument("--kill-fraction", type=float, default=0.4)
    d.add_argument("--full-reference", action="store_true",
                   help="compare every entry (as long as the run itself, in one process)")
    d.add_argument("--blocks", type=int, nargs="+", default=[0, 3, 7],
                   help="blocks whose rows are compared (default 0 3 7; 7 is the ragged one)")
    c = sub.add_parser("compare", help="compare an existing digits store")
    c.add_argument("store")
    c.add_argument("--blocks", type=int, nargs="+", default=[0, 3, 7])
    o = sub.add_parser("overhead")
    o.add_argument("--n", type=int, default=600)
    o.add_argument("--tile", type=int, default=100)
    m = sub.add_parser("myrtle")
    m.add_argument("--workers", type=int, default=64)
    m.add_argument("--tile", type=int, default=None)
    m.add_argument("--rows", type=int, default=2, help="calibration tile rows")
    args = ap.parse_args()
    if args.which == "compare":
        import ntkdsl

        model = ntkdsl.compile_file(str(SPECS / "digits_cnn.ntk"), net="cnn_gap")
        compare(args.store, _digits(), model, args.blocks)
        return
    {"digits": digits, "overhead": overhead, "myrtle": myrtle}[args.which](args)


if __name__ == "__main__":
    main()
