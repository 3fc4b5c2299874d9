"""The four benchmark cases of issue 5, as ntkdsl specs and input shapes.

The peer's versions (``peer_bench.py``) are written out by hand with the same
layers; ``bench.py`` checks that both give the same kernels.
"""

W = "sqrt(2)"

#: name -> (spec text, input shape with batch, description)
CASES = {
    "a": (
        f"net a {{ repeat 3 {{ Dense(512, W_std={W}, b_std=0.05); Relu }} Dense(1, W_std={W}) }}",
        (2000, 64),
        "3 x (Dense(512) + Relu) + Dense(1), 2000 inputs of dimension 64",
    ),
    "b": (
        f"net b {{ repeat 3 {{ Conv(64, 3, padding=SAME, W_std={W}, b_std=0.05); Relu }} "
        f"GlobalAvgPool; Dense(1, W_std={W}) }}",
        (64, 8, 8, 1),
        "3 x (Conv 3x3 SAME + Relu) + GlobalAvgPool + Dense, 64 images 8x8x1",
    ),
    "c": (
        f"net c {{ Conv(64, 3, W_std={W}); Relu; Conv(64, 3, W_std={W}); Relu; AvgPool(2) "
        f"Conv(64, 3, W_std={W}); Relu; AvgPool(2); Conv(64, 3, W_std={W}); Relu "
        f"GlobalAvgPool; Dense(10, W_std={W}) }}",
        (12, 16, 16, 3),
        "Myrtle-5: 4 x (Conv 3x3 SAME + Relu), AvgPool(2) after the 2nd and 3rd, GAP, Dense; "
        "12 images 16x16x3",
    ),
    "d": (
        f"net d {{ repeat 3 {{ Conv(64, 3, padding=SAME, W_std={W}, b_std=0.05); Relu }} "
        f"Flatten; Dense(1, W_std={W}) }}",
        (512, 8, 8, 3),
        "3 x (Conv 3x3 SAME + Relu) + Flatten + Dense, 512 images 8x8x3",
    ),
    "e": (
        "net e { repeat 3 { Conv(64, 3, padding=SAME, W_std=" + W + ") ; Relu } AvgPool(2) "
        "repeat 3 { Conv(64, 3, padding=SAME, W_std=" + W + "); Relu } AvgPool(2) "
        "repeat 3 { Conv(64, 3, padding=SAME, W_std=" + W + "); Relu } GlobalAvgPool; "
        "Dense(10, W_std=" + W + ") }",
        (4, 32, 32, 3),
        "Myrtle-10 (examples/specs/myrtle10.ntk): 3 x 3 Conv+Relu, AvgPool(2) between, GAP, "
        "Dense(10); 4 images 32x32x3",
    ),
}
