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
    per_nonlinearity(x)


#: every built-in nonlinearity (with arguments where it needs them)
NONLINEARITIES = ["Relu", "LeakyRelu(0.1)", "ABRelu(-0.5, 1)", "Erf", "Gelu", "Sin",
                  "Identity", "Tanh", "Softplus", "Abs", "Sign", "RectifiedMonomial(2)", "Cos",
                  "Exp", "Gaussian", "Rbf", "Monomial(2)", "Hermite(2)", "Sigmoid"]


def per_nonlinearity(x) -> None:
    """Each nonlinearity in a 3-hidden-layer FC net, float32 against float64.

    ``x`` holds a repeated row (correlation 1) and a pair at correlation -1; the
    float32 kernels must be finite there (no NaN) as everywhere.
    """
    print()
    print("| nonlinearity (fc 3 x, float32) | max rel. error vs float64 | finite | "
          "identical entries |")
    print("|---|---|---|---|")
    for act in NONLINEARITIES:
        spec = ("net n { " + f"Dense(64, W_std=1.5, b_std=0.1); {act}; " * 3
                + "Dense(1) }")
        try:
            m = ntkdsl.compile(spec)
            a = m.kernel_fn(x)
            b = m.kernel_fn(x, dtype="float32")
        except Exception as e:  # a row that fails says why, the others still run
            print(f"| {act} | {type(e).__name__}: {str(e).splitlines()[0][:60]} | | |")
            continue
        finite = all(np.isfinite(getattr(b, g)).all() for g in ("nngp", "ntk"))
        print(f"| {act} | {max_rel_error(a, b):.1e} | {'yes' if finite else 'NO'} | "
              f"{'yes' if identical(b) else 'NO'} |")


if __name__ == "__main__":
    main()
