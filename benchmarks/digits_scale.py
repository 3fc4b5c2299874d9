"""Issue 5's scale check: kernels of the sklearn digits through the two CNNs of
``examples/specs/digits_cnn.ntk``, tiled, with the progress bar, via the CLI.

Usage (from the repository root)::

    .venv/bin/python benchmarks/digits_scale.py [--n-flatten 1797] [--n-gap 500]
        [--batch-flatten 512] [--batch-gap 100]

Runs ``ntkdsl kernel`` in a child process per net (so its peak RSS is its own),
prints wall time and peak RSS (``getrusage`` of the children), and checks that the
result is symmetric, finite and has a positive diagonal. Pixels are scaled to [0, 1]
(8x8x1 images, channel last).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "specs" / "digits_cnn.ntk"


def run(net: str, x_path: Path, batch: int, out: Path) -> tuple[float, float]:
    """One ``ntkdsl kernel`` run; returns (seconds, peak RSS of that child in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [str(ROOT / ".venv" / "bin" / "ntkdsl"), "kernel", str(SPEC), "--net", net,
           "--x1", str(x_path), "--batch-size", str(batch), "-o", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited-for children so far
    return dt, max(peak, before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-flatten", type=int, default=1797)
    ap.add_argument("--n-gap", type=int, default=500)
    ap.add_argument("--batch-flatten", type=int, default=512)
    ap.add_argument("--batch-gap", type=int, default=100)
    args = ap.parse_args()

    import numpy as np
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    x = images[..., None]
    tmp = Path(tempfile.mkdtemp(prefix="ntkdsl-digits-"))
    rows = []
    # the smaller run first: RUSAGE_CHILDREN's maxrss is a running maximum
    for net, n, b in (("cnn_gap", args.n_gap, args.batch_gap),
                      ("cnn_flatten", args.n_flatten, args.batch_flatten)):
        xp = tmp / f"{net}.npy"
        np.save(xp, x[:n])
        out = tmp / f"{net}.npz"
        dt, peak = run(net, xp, b, out)
        k = np.load(out)
        for g in ("nngp", "ntk"):
            a = k[g]
            assert a.shape == (n, n) and np.isfinite(a).all(), (net, g)
            assert np.array_equal(a, a.T), (net, g, "not symmetric")
            assert (np.diag(a) > 0).all(), (net, g)
        rows.append((net, n, b, dt, peak))
    print(f"{'net':12} {'n':>5} {'batch':>6} {'time s':>8} {'peak RSS MB':>12}")
    for net, n, b, dt, peak in rows:
        print(f"{net:12} {n:5d} {b:6d} {dt:8.1f} {peak:12.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
