"""float32 against float64: the table in docs/kernels.md (Precision).

Run: .venv/bin/python benchmarks/float32_accuracy.py
"""

import numpy as np

import ntkdsl


def max_rel_error(a, b) -> float:
    """The largest error over nngp and ntk, relative to the largest float64 entry."""
    return max(float(np.max(np.abs(getattr(b, g) - getattr(a, g))) / np.max(np.abs(getattr(a, g))))
               for g in ("nngp", "ntk"))


def identical(b) -> bool:
    """Rows 0 and 1 are the same input: their entries must be equal bit for bit."""
    return all(getattr(b, g)[0, 0] == getattr(b, g)[0, 1] for g in ("nngp", "ntk"))


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 6))
    x[1] = x[0]
    x[3] = -x[2] * 2  # correlation -1
    ximg = rng.normal(size=(6, 6, 6, 2))
    ximg[1] = ximg[0]
    nets = [(f"fc {d} x {act}", x, "net n { " + f"Dense(64, W_std=1.5, b_std=0.1); {act}; " * d
             + "Dense(1) }") for d, act in [(3, "Relu"), (3, "Erf"), (3, "Tanh"), (3, "Gelu"),
                                             (20, "Relu"), (20, "Erf")]]
    nets.append(("cnn 2 x Conv+Relu, GAP", ximg,
                 "net c { Conv(8, 3, W_std=1.4, b_std=0.1); Relu; Conv(8, 3, W_std=1.4); Relu; "
                 "GlobalAvgPool; Dense(1) }"))
    print("| net (float32) | max rel. error vs float64 | identical inputs give identical entries |")
    print("|---|---|---|")
    for label, inputs, spec in nets:
        m = ntkdsl.compile(spec)
        a, b = m.kernel_fn(inputs), m.kernel_fn(inputs, dtype="float32")
        print(f"| {label} | {max_rel_error(a, b):.1e} | {'yes' if identical(b) else 'NO'} |")


if __name__ == "__main__":
    main()
