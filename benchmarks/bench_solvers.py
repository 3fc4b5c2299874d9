"""Benchmarks of the iterative solvers (docs/solvers.md): scale, the peer, preconditioners.

Subcommands (each prints its numbers and writes ``DIR/*.json``):

``data DIR --n N --m M``
    Seeded FC regression data: ``x_train (N, 8)``, ``y_train (N, 1)`` (a smooth
    function plus noise), ``x_test (M, 8)``, as ``.npy`` files.
``cli DIR --n N --m M --solver S [--options K=V,...] [--storage ...] [--time 10,inf]``
    ``ntkdsl predict examples/specs/fc_relu.ntk --net fc3`` on the first ``N``
    training points and ``M`` test points (copied to ``DIR/nN_mM/``), from the
    ``.npy`` files alone (no ``--store``), under ``nice``; wall time, peak RSS
    (``VmHWM``) and the largest anonymous and file-backed resident sizes (sampled
    from ``/proc/PID/status`` every 0.2 s: the memory-mapped float32 kernels are
    file pages the kernel can drop), the solver line.
``compare A.npz B.npz``
    Largest relative differences of means and variances (per time) of two outputs.
``peer DIR --n N --m M``
    Kernels of the first ``N`` points (computed once by ntkdsl, saved as ``.npy``),
    then in separate processes: ntkdsl dense, ntkdsl iterative (CG + LOVE), the peer's
    ``gradient_descent_mse_ensemble`` (NTK-GP mean + cov at the times), each timed on
    the same kernels, with peak RSS and the differences to ntkdsl dense.
``precond DIR --n N``
    Pivoted Cholesky vs Nystrom at ranks 100, 300, 1000 on the NTK of the first N
    points: CG iterations and time of the block solve ``(Theta + sigma I) X = [Y]``.
``mixed DIR --n N``
    float32 kernel storage: plain CG against the float64 solution, and iterative
    refinement with float64 residuals: the accuracy reached.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples/specs/fc_relu.ntk"
NET = "fc3"
PEER = ROOT / ".peer-venv/bin/python"
NICE = int(os.environ.get("BENCH_NICE", "10"))  # the machine is shared


def make_data(folder: Path, n: int, m: int, d: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.standard_normal((n + m, d))
    w = rng.standard_normal(d) / np.sqrt(d)
    y = np.sin(2 * x @ w) + 0.5 * np.cos(x[:, 0] * x[:, 1]) + 0.1 * rng.standard_normal(n + m)
    np.save(folder / "x_train.npy", x[:n])
    np.save(folder / "y_train.npy", y[:n, None])
    np.save(folder / "x_test.npy", x[n:])
    print(f"wrote {folder}: x_train {x[:n].shape}, y_train {(n, 1)}, x_test {x[n:].shape}")


def _status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


def run_monitored(cmd: list[str], env=None, memory_limit_gb: float | None = None) -> dict:
    """Run ``cmd``; wall time, peak VmHWM / RssAnon / RssFile in MB, its stderr and stdout.

    ``memory_limit_gb`` caps the child's address space (``RLIMIT_AS``, through
    util-linux's ``prlimit``: no ``preexec_fn`` fork of this multithreaded process), so
    a run that does not fit fails with an allocation error instead of pushing the
    machine into swap or the OOM killer.
    """
    import resource

    if memory_limit_gb:
        cmd = ["prlimit", f"--as={int(memory_limit_gb * 1024**3)}", "--", *cmd]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = {"VmHWM": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            st = _status(proc.pid)
            for k in peak:
                peak[k] = max(peak[k], st.get(k, 0.0))
            stop.wait(0.2)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"rc": proc.returncode, "wall_s": time.perf_counter() - t0, "cpu_s": cpu,
            "peak_mb": peak, "stdout": out, "stderr": err}


def _load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cli(folder: Path, n: int, m: int, solver: str, options: str, storage: str, times: str,
        diag_reg: float, tag: str) -> dict:
    x = np.load(folder / "x_train.npy", mmap_mode="r")
    sub = folder / f"n{n}_m{m}"
    sub.mkdir(exist_ok=True)
    np.save(sub / "x_train.npy", np.asarray(x[:n]))
    np.save(sub / "y_train.npy", np.load(folder / "y_train.npy")[:n])
    np.save(sub / "x_test.npy", np.load(folder / "x_test.npy")[:m])
    out = folder / f"pred_{tag}.npz"
    cmd = ["nice", "-n", str(NICE), sys.executable, "-m", "ntkdsl", "predict", str(SPEC),
           "--net", NET,
           "--x-train", str(sub / "x_train.npy"), "--y-train", str(sub / "y_train.npy"),
           "--x-test", str(sub / "x_test.npy"), "--time", times, "--loss", "mean",
           "--diag-reg", str(diag_reg), "--solver", solver, "--storage", storage,
           "-o", str(out)]
    if options:
        cmd += ["--solver-options", options]
    load0 = _load_avg()
    rec = run_monitored(cmd)
    rec.update({"n": n, "solver": solver, "options": options, "storage": storage,
                "times": times, "diag_reg": diag_reg, "load_before": load0,
                "load_after": _load_avg(), "output": str(out), "cmd": " ".join(cmd)})
    (folder / f"run_{tag}.json").write_text(json.dumps(rec, indent=1))
    print(f"{tag}: rc {rec['rc']}, {rec['wall_s']:.1f} s wall, {rec['cpu_s']:.1f} s CPU, "
          f"peak RSS {rec['peak_mb']['VmHWM']:.0f}"
          f" MB (anon {rec['peak_mb']['RssAnon']:.0f}, file {rec['peak_mb']['RssFile']:.0f}), "
          f"load {load0} -> {rec['load_after']}")
    print(rec["stderr"].strip()[-3000:])
    print(rec["stdout"].strip())
    return rec


def compare(a: str, b: str) -> dict:
    x, y = np.load(a), np.load(b)
    out = {}
    for i, t in enumerate(x["time"]):
        dm = float(np.max(np.abs(x["mean"][i] - y["mean"][i])) / np.max(np.abs(y["mean"][i])))
        va, vb = np.diagonal(x["cov"][i]), np.diagonal(y["cov"][i])
        dv = float(np.max(np.abs(va - vb)) / np.max(np.abs(vb)))
        dc = float(np.max(np.abs(x["cov"][i] - y["cov"][i])) / np.max(np.abs(y["cov"][i])))
        out[f"{t:g}"] = {"mean": dm, "var": dv, "cov": dc}
        print(f"t={t:g}: mean {dm:.2e}, variances {dv:.2e}, cov {dc:.2e} (relative to the "
              f"largest entry of {b})")
    return out


def _kernels(folder: Path, n: int, m: int) -> Path:
    """NNGP/NTK train, test-train and test-test kernels of the first n points as .npy."""
    import jax

    import ntkdsl

    kdir = folder / f"kernels{n}"
    if (kdir / "KTT.npy").exists():
        return kdir
    kdir.mkdir(exist_ok=True)
    model = ntkdsl.compile_file(str(SPEC), net=NET)
    x = np.asarray(np.load(folder / "x_train.npy", mmap_mode="r")[:n])
    xt = np.load(folder / "x_test.npy")[:m]
    from ntkdsl.solvers.model import train_kernels_to_disk

    arrays = train_kernels_to_disk(model, x, ("nngp", "ntk"), str(kdir))
    os.replace(kdir / "nngp.npy", kdir / "K.npy")
    os.replace(kdir / "ntk.npy", kdir / "T.npy")
    del arrays
    with jax.enable_x64(True):
        kx = model.kernel_fn(xt, x, ("nngp", "ntk"), dtype=np.float64, progress=False)
        ktt = model.kernel_fn(xt, None, "nngp", dtype=np.float64, progress=False)
    np.save(kdir / "KX.npy", np.asarray(kx.nngp))
    np.save(kdir / "TX.npy", np.asarray(kx.ntk))
    np.save(kdir / "KTT.npy", np.asarray(ktt))
    np.save(kdir / "y.npy", np.load(folder / "y_train.npy")[:n])
    return kdir


def ours_worker(kdir: str, n: int, m: int, times: str, reg: float, solver: str,
                options: str, out: str, second_call: bool = True) -> None:
    """One timed ntkdsl prediction from saved kernels (run in its own process)."""
    import resource

    import jax

    from ntkdsl import predict as P
    from ntkdsl.cli.predict import parse_solver_options

    load = lambda name: np.load(f"{kdir}/{name}.npy", mmap_mode="r")  # noqa: E731
    if solver == "dense":
        kk, th = np.array(load("K")[:n, :n]), np.array(load("T")[:n, :n])
    else:  # the iterative path streams the memory-mapped kernels
        kk, th = load("K"), load("T")
        if kk.shape[0] != n:
            kk, th = np.array(kk[:n, :n]), np.array(th[:n, :n])
    kx, tx = np.array(load("KX")[:m, :n]), np.array(load("TX")[:m, :n])
    ktt, y = np.array(load("KTT")[:m, :m]), np.array(load("y")[:n])
    ts = np.array([float(t) for t in times.split(",")])
    c0 = time.process_time()
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        dyn = P.gradient_descent_mse_gp(kk, y, ntk_train_train=th, kind="ntk", diag_reg=reg,
                                        loss="mean", solver=solver,
                                        solver_options=parse_solver_options(options))
        g = dyn(ts, kx, ktt, tx)
        mean, cov = np.asarray(g.mean), np.asarray(g.cov)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    second = None
    if second_call:
        t1 = time.perf_counter()
        with jax.enable_x64(True):
            g2 = dyn(ts, kx[: m // 2], ktt[: m // 2, : m // 2], tx[: m // 2])
            np.asarray(g2.cov)
        second = time.perf_counter() - t1
    np.savez(out.replace(".json", ".npz"), mean=mean, cov=cov, time=ts)
    info = {k: (v if isinstance(v, (int, float, str)) else str(v))
            for k, v in getattr(g, "info", {}).items()}
    rec = {"wall_s": wall, "cpu_s": cpu, "second_call_s": second, "info": info,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(out).write_text(json.dumps(rec))
    print(json.dumps(rec))


def _rel_diff(a: str, b: str) -> dict:
    x, y = np.load(a), np.load(b)
    mx, my = x["mean"].reshape(x["cov"].shape[0], -1), y["mean"].reshape(y["cov"].shape[0], -1)
    vx = np.diagonal(x["cov"], axis1=1, axis2=2)
    vy = np.diagonal(y["cov"], axis1=1, axis2=2)
    return {"mean": float(np.max(np.abs(mx - my)) / np.max(np.abs(my))),
            "var": float(np.max(np.abs(vx - vy)) / np.max(np.abs(vy))),
            "cov": float(np.max(np.abs(x["cov"] - y["cov"])) / np.max(np.abs(y["cov"])))}


def peer(folder: Path, n: int, m: int, times: str, reg: float, which: str,
         options: str, memory_limit_gb: float | None = None, second_call: bool = True) -> dict:
    t0 = time.perf_counter()
    kdir = _kernels(folder, n, m)
    print(f"kernels of {n} points: {time.perf_counter() - t0:.1f} s ({kdir})")
    recs = {}
    for who in which.split(","):
        out = str(folder / f"bench_{who}_{n}.json")
        if who == "peer":
            cmd = ["nice", "-n", str(NICE), str(PEER), str(ROOT / "benchmarks/peer_predict.py"),
                   str(kdir), str(n), str(m), times, str(reg), "ensemble", out]
        else:
            solver = "dense" if who == "dense" else "cg"
            cmd = ["nice", "-n", str(NICE), sys.executable, __file__, "_ours", str(kdir), str(n),
                   str(m), times, str(reg), solver, options if who != "dense" else "", out,
                   "1" if second_call else "0"]
        load0 = _load_avg()
        rec = run_monitored(cmd, memory_limit_gb=memory_limit_gb)
        rec["load_before"], rec["load_after"] = load0, _load_avg()
        if rec["rc"] == 0:
            rec["result"] = json.loads(Path(out).read_text())
        recs[who] = rec
        print(f"{who} n={n}: rc {rec['rc']}, process {rec['wall_s']:.1f} s wall "
              f"{rec['cpu_s']:.1f} s CPU, peak RSS "
              f"{rec['peak_mb']['VmHWM']:.0f} MB, load {load0}; "
              f"{rec.get('result', rec['stderr'][-2000:])}")
    dense_npz = str(folder / f"bench_dense_{n}.npz")
    for who in recs:
        if who != "dense" and recs[who]["rc"] == 0 and os.path.exists(dense_npz):
            recs[who]["vs_dense"] = _rel_diff(str(folder / f"bench_{who}_{n}.npz"), dense_npz)
            print(f"{who} vs ntkdsl dense: {recs[who]['vs_dense']}")
    (folder / f"peer_{n}.json").write_text(json.dumps(recs, indent=1, default=str))
    return recs


def precond(folder: Path, n: int, ranks: str, reg: float) -> None:
    from ntkdsl.solvers import ArrayOperator, cg_solve, make_preconditioner, regularized

    kdir = _kernels(folder, n, 100)
    th = np.load(kdir / "T.npy", mmap_mode="r")
    y = np.load(kdir / "y.npy")
    rows = []
    for method in ("cholesky", "nystrom"):
        for rank in (int(r) for r in ranks.split(",")):
            op = ArrayOperator(th, name="ntk_train_train")
            sysop = regularized(op, reg)
            t0 = time.perf_counter()
            pc = make_preconditioner(op, method, rank, shift=sysop.shift)
            t_pc = time.perf_counter() - t0
            res = cg_solve(sysop, y, precond=pc, tol=1e-10, max_iter=5000)
            t_cg = time.perf_counter() - t0 - t_pc
            rows.append({"method": method, "rank": rank, "iterations": res.iterations,
                         "residual": res.max_residual, "build_s": t_pc, "cg_s": t_cg,
                         "load": _load_avg()})
            print(f"n={n} {method:8s} rank {rank:5d}: {res.iterations:4d} products, residual "
                  f"{res.max_residual:.2e}, build {t_pc:.1f} s, CG {t_cg:.1f} s, load "
                  f"{_load_avg()}", flush=True)
    t0 = time.perf_counter()
    op = ArrayOperator(th, name="ntk_train_train")
    try:
        res = cg_solve(regularized(op, reg), y, precond=None, tol=1e-10, max_iter=3000)
        print(f"n={n} none: {res.iterations} products, residual {res.max_residual:.2e}, "
              f"{time.perf_counter() - t0:.1f} s")
    except Exception as e:
        print(f"n={n} none: {e}")
    (folder / f"precond_{n}.json").write_text(json.dumps(rows, indent=1))


def mixed(folder: Path, n: int, reg: float) -> None:
    from ntkdsl.solvers import ArrayOperator, cg_solve, make_preconditioner, refine, regularized

    kdir = _kernels(folder, n, 100)
    th64 = np.load(kdir / "T.npy", mmap_mode="r")
    f32 = kdir / "T32.npy"
    if not f32.exists():
        mm = np.lib.format.open_memmap(f32, mode="w+", dtype=np.float32, shape=th64.shape)
        for i0 in range(0, n, 1000):
            mm[i0:i0 + 1000] = th64[i0:i0 + 1000]
        mm.flush()
        del mm
    th32 = np.load(f32, mmap_mode="r")
    y = np.load(kdir / "y.npy")
    high = regularized(ArrayOperator(th64), reg)
    low = regularized(ArrayOperator(th32), reg)
    pc = make_preconditioner(low.base, "cholesky", 300, shift=low.shift)
    ref64 = cg_solve(high, y, precond=pc, tol=1e-12, max_iter=5000)
    t0 = time.perf_counter()
    plain = cg_solve(low, y, precond=pc, tol=1e-10, max_iter=5000)
    t_plain = time.perf_counter() - t0
    res_plain = np.linalg.norm(y - high.matmat(plain.x)) / np.linalg.norm(y)
    t0 = time.perf_counter()
    ref = refine(low, high, y, precond=pc, tol=1e-10, inner_tol=1e-6)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = cg_solve(high, y, precond=pc, tol=1e-10, max_iter=5000)
    t_full = time.perf_counter() - t0
    rel = lambda a: float(np.max(np.abs(a - ref64.x)) / np.max(np.abs(ref64.x)))  # noqa: E731
    rec = {"n": n, "diag_reg": reg,
           "float32_plain": {"s": t_plain, "products": plain.iterations,
                             "float64_residual": float(res_plain), "rel_err": rel(plain.x)},
           "float32_refined": {"s": t_ref, "products": ref.iterations,
                               "steps": ref.restarts, "float64_residual": ref.max_residual,
                               "rel_err": rel(ref.x)},
           "float64": {"s": t_full, "products": full.iterations,
                       "float64_residual": full.max_residual, "rel_err": rel(full.x)},
           "load": _load_avg()}
    print(json.dumps(rec, indent=1))
    (folder / f"mixed_{n}.json").write_text(json.dumps(rec, indent=1))


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_ours":
        ours_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
                    float(sys.argv[6]), sys.argv[7], sys.argv[8], sys.argv[9],
                    sys.argv[10] != "0")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("data")
    p.add_argument("dir", type=Path)
    p.add_argument("--n", type=int, default=40_000)
    p.add_argument("--m", type=int, default=200)
    p = sub.add_parser("cli")
    p.add_argument("dir", type=Path)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--m", type=int, default=50)
    p.add_argument("--solver", default="cg")
    p.add_argument("--options", default="")
    p.add_argument("--storage", default="auto")
    p.add_argument("--time", default="10,inf")
    p.add_argument("--diag-reg", type=float, default=1e-3)
    p.add_argument("--tag", default=None)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("peer")
    p.add_argument("dir", type=Path)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--m", type=int, default=200)
    p.add_argument("--time", default="inf")
    p.add_argument("--diag-reg", type=float, default=1e-3)
    p.add_argument("--which", default="dense,iterative,peer")
    p.add_argument("--options", default="covariance=love,love_tol=1e-8,tol=1e-10")
    p.add_argument("--memory-limit-gb", type=float, default=None,
                   help="address-space cap of each run (RLIMIT_AS): a run that does not "
                        "fit fails with an allocation error")
    p.add_argument("--no-second-call", action="store_true",
                   help="skip ntkdsl's timed second call on half the test points")
    p = sub.add_parser("precond")
    p.add_argument("dir", type=Path)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--ranks", default="100,300,1000")
    p.add_argument("--diag-reg", type=float, default=1e-3)
    p = sub.add_parser("mixed")
    p.add_argument("dir", type=Path)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--diag-reg", type=float, default=1e-3)
    a = ap.parse_args(argv)
    if a.cmd == "data":
        make_data(a.dir, a.n, a.m)
    elif a.cmd == "cli":
        cli(a.dir, a.n, a.m, a.solver, a.options, a.storage, a.time, a.diag_reg,
            a.tag or f"{a.solver}_{a.n}")
    elif a.cmd == "compare":
        compare(a.a, a.b)
    elif a.cmd == "peer":
        peer(a.dir, a.n, a.m, a.time, a.diag_reg, a.which, a.options, a.memory_limit_gb,
             not a.no_second_call)
    elif a.cmd == "precond":
        precond(a.dir, a.n, a.ranks, a.diag_reg)
    else:
        mixed(a.dir, a.n, a.diag_reg)


if __name__ == "__main__":
    main()
