"""Write the golden kernels that ``tests/test_golden.py`` compares ntkdsl against.

This script runs ONLY with the peer's interpreter (neural-tangents 0.6.5 on jax 0.4.23),
never in the project's own environment, which must not depend on the peer::

    ../shared/tools/peer-env.sh DIR                 # once: creates the side environment
    DIR/bin/python tests/golden/make_golden.py      # rewrites tests/golden/*.npz
    DIR/bin/python tests/golden/make_golden.py --only conv2d_circular fc_tanh
    DIR/bin/python tests/golden/make_golden.py --table   # the coverage table of README.md

(on the team machine: ``/work/peer-venv/bin/python tests/golden/make_golden.py``).

Each architecture is described once, as a small list of layer records below; a record
renders both the spec text in ntkdsl's language (``../shared/LANGUAGE.md``) and the
peer's ``stax`` layer, so the two cannot drift apart. A few architectures carry a
hand-written spec instead, to exercise ``let``, ``block``, ``repeat`` and ``defaults``.

How our semantics map onto the peer's (see the team's "Semantics"):

* ``b_std = 0`` means "no bias": the peer gets ``b_std=None``.
* ``Conv`` defaults to ``padding=SAME`` in our language but ``VALID`` in the peer, and our
  ``AvgPool`` strides default to the window where the peer's default to 1: every peer
  argument is therefore passed explicitly.
* Data is channel last: the peer's ``Conv`` default ``dimension_numbers`` are channel last
  for 1, 2 and 3 spatial axes (``N...C`` / ``...IO``), and ``AvgPool`` / ``GlobalAvgPool`` /
  ``Dense`` use ``channel_axis=-1``; ``AvgPool`` keeps ``normalize_edges=False`` (padded
  zeros count in the denominator).
* ``Residual { B } shortcut { S }`` is ``serial(FanOut(2), parallel(B, S), FanInSum())``.
* ``Tanh`` has no closed form in the peer: ``ElementwiseNumerical(tanh, deg=300)`` with the
  exact derivative (relative quadrature error ~1e-11 at these scales; deg=100 is only ~1e-6).

Before writing anything the script checks, by brute force in numpy, that the peer's
single-layer Conv / AvgPool kernels (every padding, even and odd windows, strides 1 and 2,
GlobalAvgPool and Flatten readouts) equal the exact covariance of the finite layer under
our conventions (lax SAME padding, low side ``total // 2``; CIRCULAR the same amounts,
wrapped). So the goldens encode our semantics, not just the peer's.

Each ``NAME.npz`` holds: ``spec`` and ``net`` (strings), ``covers`` (what it exercises),
``x1`` (4, ...), ``x2`` (3, ...) in float64, and the peer's per-output kernels
``nngp_12``, ``ntk_12`` (4, 3) for (x1, x2) and ``nngp_11``, ``ntk_11`` (4, 4) for (x1, None).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TANH_DEG = 300
N1, N2 = 4, 3

# Spec-language defaults: an argument equal to its default is left out of the rendered
# spec, so the goldens also test that our defaults map onto the peer's explicit values.
_DEFAULTS = {"strides": 1, "padding": "SAME", "W_std": 1.0, "b_std": 0.0,
             "parameterization": "ntk"}


def _num(v) -> str:
    """A spec literal for a number or tuple (repr keeps every float64 bit)."""
    if isinstance(v, tuple):
        inner = ", ".join(_num(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, str):
        return f'"{v}"' if v in ("ntk", "standard") else v
    return repr(v)


def _expand(v, nd: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple) else (v,) * nd


# ----------------------------------------------------------------------------------
# Layer records: each renders a spec line and builds the peer layer.
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dense:
    out: int
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    def spec(self) -> str:
        return _call("Dense", [self.out], self, ("W_std", "b_std", "parameterization"))

    def peer(self, nd: int):
        from neural_tangents import stax
        return stax.Dense(self.out, W_std=self.W_std, b_std=self.b_std or None,
                          parameterization=self.parameterization)


@dataclass(frozen=True)
class Conv:
    out: int
    kernel: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    def spec(self) -> str:
        return _call("Conv", [self.out, self.kernel], self,
                     ("strides", "padding", "W_std", "b_std", "parameterization"))

    def peer(self, nd: int):
        from neural_tangents import stax
        # dimension_numbers=None: the peer's default is channel last for any nd.
        return stax.Conv(self.out, _expand(self.kernel, nd), _expand(self.strides, nd),
                         self.padding, W_std=self.W_std, b_std=self.b_std or None,
                         parameterization=self.parameterization)


@dataclass(frozen=True)
class AvgPool:
    window: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str = "VALID"

    def spec(self) -> str:
        args = [_num(self.window)]
        if self.strides is not None:
            args.append(f"strides = {_num(self.strides)}")
        if self.padding != "VALID":
            args.append(f"padding = {self.padding}")
        return f"AvgPool({', '.join(args)})"

    def peer(self, nd: int):
        from neural_tangents import stax
        strides = self.window if self.strides is None else self.strides
        return stax.AvgPool(_expand(self.window, nd), _expand(strides, nd), self.padding,
                            normalize_edges=False)


@dataclass(frozen=True)
class Act:
    """A pointwise layer or GlobalAvgPool / Flatten: a name and keyword arguments."""

    name: str
    args: tuple[tuple[str, float], ...] = ()
    positional: bool = False  # LeakyRelu(alpha) and ABRelu(a, b) are written positionally

    def spec(self) -> str:
        if not self.args:
            return self.name
        if self.positional:
            return f"{self.name}({', '.join(_num(v) for _, v in self.args)})"
        return f"{self.name}({', '.join(f'{k} = {_num(v)}' for k, v in self.args)})"

    def peer(self, nd: int):
        import jax.numpy as jnp
        from neural_tangents import stax
        kw = dict(self.args)
        if self.name == "Tanh":
            return stax.ElementwiseNumerical(jnp.tanh, TANH_DEG,
                                             df=lambda x: 1.0 - jnp.tanh(x) ** 2)
        if self.name == "Gelu":
            return stax.Gelu(approximate=False)
        if self.name == "Sigmoid":  # the peer has no Sigmoid (Sigmoid_like is an erf)
            import jax
            return stax.ElementwiseNumerical(
                jax.nn.sigmoid, TANH_DEG, df=lambda x: jax.nn.sigmoid(x) * jax.nn.sigmoid(-x))
        return getattr(stax, self.name)(**kw)


@dataclass(frozen=True)
class Residual:
    branch: tuple
    shortcut: tuple | None = None

    def spec_lines(self, indent: str) -> list[str]:
        lines = [f"{indent}Residual {{", *_body(self.branch, indent + "    ")]
        if self.shortcut is None:
            return [*lines, f"{indent}}}"]
        return [*lines, f"{indent}}} shortcut {{", *_body(self.shortcut, indent + "    "),
                f"{indent}}}"]

    def peer(self, nd: int):
        from neural_tangents import stax
        short = stax.Identity() if self.shortcut is None else _peer_serial(self.shortcut, nd)
        return stax.serial(stax.FanOut(2),
                           stax.parallel(_peer_serial(self.branch, nd), short),
                           stax.FanInSum())


def _call(name: str, positional: list, layer, keys: tuple[str, ...]) -> str:
    args = [_num(v) for v in positional]
    for k in keys:
        v = getattr(layer, k)
        if v != _DEFAULTS[k]:
            args.append(f"{k} = {_num(v)}")
    return f"{name}({', '.join(args)})"


def _body(layers: tuple, indent: str) -> list[str]:
    out: list[str] = []
    for layer in layers:
        if isinstance(layer, Residual):
            out += layer.spec_lines(indent)
        else:
            out.append(indent + layer.spec())
    return out


def _peer_serial(layers: tuple, nd: int):
    from neural_tangents import stax
    return stax.serial(*(layer.peer(nd) for layer in layers))


RELU, GELU, TANH, IDENTITY = Act("Relu"), Act("Gelu"), Act("Tanh"), Act("Identity")
GAP, FLATTEN = Act("GlobalAvgPool"), Act("Flatten")


def Erf(a=1.0, b=1.0, c=0.0):
    return Act("Erf", tuple((k, v) for k, v in (("a", a), ("b", b), ("c", c))
                            if v != {"a": 1.0, "b": 1.0, "c": 0.0}[k]))


def Sin(a=1.0, b=1.0, c=0.0):
    return Act("Sin", tuple((k, v) for k, v in (("a", a), ("b", b), ("c", c))
                            if v != {"a": 1.0, "b": 1.0, "c": 0.0}[k]))


def LeakyRelu(alpha):
    return Act("LeakyRelu", (("alpha", alpha),), positional=True)


def ABRelu(a, b):
    return Act("ABRelu", (("a", a), ("b", b)), positional=True)


# ----------------------------------------------------------------------------------
# The architectures
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    name: str
    in_shape: tuple[int, ...]  # without the batch axis, channel last
    layers: tuple
    covers: str
    spec: str | None = None  # hand-written spec; None renders one from `layers`
    repeat_row: bool = False  # x2[0] = x1[2]: an exactly repeated input (|rho| = 1)
    x_scale: float = 1.0
    notes: tuple[str, ...] = field(default=())
    unit_rows: bool = False  # rows scaled to |x|^2 = d (the peer's Hermite assumes unit variance)

    def spec_text(self) -> str:
        if self.spec is not None:
            return self.spec
        lines = [f"# golden {self.name}: {self.covers}", f"net {self.name} {{",
                 *_body(self.layers, "    "), "}", ""]
        return "\n".join(lines)


SQ2 = math.sqrt(2.0)

_FC_DEEP_RELU = """\
# golden fc_deep_relu: a deep ReLU net (6 hidden layers), He weights, biases
let W = sqrt(2)

net fc_deep_relu(width = 32, depth = 6) {
    repeat depth {
        Dense(width, W_std = W, b_std = 0.1)
        Relu
    }
    Dense(1, W_std = W)
}
"""

_FC_DEEP_ERF = """\
# golden fc_deep_erf: 5 erf layers under `defaults`, readout without bias
net fc_deep_erf {
    defaults W_std = 1.6, b_std = 0.05
    repeat 5 { Dense(16); Erf }
    Dense(1, b_std = 0)
}
"""

_FC_MIXED = """\
# golden fc_mixed_param: standard parameterisation by `defaults`, one ntk layer, a block
block std_layer(n) {
    Dense(n)
    Erf(a = 1.2, b = 0.8)
}

net fc_mixed_param {
    defaults parameterization = "standard", W_std = 1.3, b_std = 0.2
    std_layer(6)
    std_layer(10)
    Dense(7, parameterization = "ntk", b_std = 0)
    Relu
    Dense(2)
}
"""

_MYRTLE = """\
# golden myrtle5: the example of LANGUAGE.md (blocks, let, repeat, AvgPool, GAP)
let W = sqrt(2)

block conv_relu(c) {
    Conv(c, 3, padding = SAME, W_std = W)
    Relu
}

net myrtle5(width = 16) {
    conv_relu(width)
    repeat 2 { conv_relu(width) }
    AvgPool(2)
    conv_relu(width)
    GlobalAvgPool
    Dense(10, W_std = W)
}
"""

_RESNET_PROJ = """\
# golden resnet_projection: residual blocks with 1x1 projection shortcuts, stride 2
block res_block(c, s) {
    Residual {
        Relu
        Conv(c, 3, strides = s, padding = SAME, W_std = 1.3, b_std = 0.1)
        Relu
        Conv(c, 3, padding = SAME, W_std = 1.3)
    } shortcut {
        Conv(c, 1, strides = s, padding = SAME, W_std = 0.9)
    }
}

net resnet_projection {
    Conv(8, 3, padding = SAME)
    res_block(8, 2)
    res_block(8, 1)
    Relu
    GlobalAvgPool
    Dense(1, b_std = 0.2)
}
"""

_DEEP_CONV = """\
# golden deep_conv_relu: 5 conv+ReLU layers (default SAME, stride 1), Flatten readout
let W = sqrt(2)

net deep_conv_relu {
    repeat 5 {
        Conv(4, 3, W_std = W, b_std = 0.05)
        Relu
    }
    Flatten
    Dense(1, W_std = W)
}
"""


def _repeat(n: int, *layers) -> tuple:
    return layers * n


def _conv_relu(c):
    return (Conv(c, 3, padding="SAME", W_std=SQ2), RELU)


ARCHS: tuple[Arch, ...] = (
    # ---- fully connected --------------------------------------------------------
    Arch("fc_relu", (5,),
         (Dense(16, W_std=1.5, b_std=0.1), RELU, Dense(1, W_std=1.5, b_std=0.1)),
         "Dense, Relu, b_std", repeat_row=True),
    Arch("fc_leaky_relu", (5,),
         (Dense(8, W_std=1.3), LeakyRelu(0.2), Dense(4, W_std=0.9, b_std=0.5)),
         "LeakyRelu, Dense without then with bias"),
    Arch("fc_abrelu", (6,),
         (Dense(8, W_std=1.1, b_std=0.2), ABRelu(-0.4, 1.3), Dense(1)),
         "ABRelu with a negative slope"),
    Arch("fc_erf", (5,),
         (Dense(8, W_std=1.2, b_std=0.3), Erf(a=1.5, b=0.7, c=0.2), Dense(1, W_std=1.1)),
         "Erf(a, b, c) with c != 0 (non-zero mean)", repeat_row=True),
    Arch("fc_gelu", (5,),
         (Dense(8, W_std=1.4, b_std=0.1), GELU, Dense(8), GELU, Dense(1, b_std=0.05)),
         "Gelu (exact), two hidden layers"),
    Arch("fc_sin", (5,),
         (Dense(8, W_std=1.2, b_std=0.2), Sin(a=1.3, b=0.8, c=0.4), Dense(8), Sin(),
          Dense(1)),
         "Sin(a, b, c) and Sin with defaults"),
    Arch("fc_tanh", (5,),
         (Dense(8, W_std=1.5, b_std=0.2), TANH, Dense(8, W_std=1.5, b_std=0.2), TANH,
          Dense(1, W_std=1.5)),
         "Tanh (quadrature in both)", repeat_row=True),
    Arch("fc_identity", (5,),
         (Dense(8, W_std=2.0, b_std=0.3), IDENTITY, Dense(3, W_std=0.7)),
         "Identity (a linear net)"),
    Arch("fc_deep_relu", (5,),
         (*_repeat(6, Dense(32, W_std=SQ2, b_std=0.1), RELU), Dense(1, W_std=SQ2)),
         "deep (6 hidden) ReLU; let, net parameters, repeat", spec=_FC_DEEP_RELU),
    Arch("fc_deep_erf", (5,),
         (*_repeat(5, Dense(16, W_std=1.6, b_std=0.05), Erf()), Dense(1, W_std=1.6)),
         "deep (5 hidden) Erf with defaults; `defaults` statement", spec=_FC_DEEP_ERF),
    Arch("fc_standard", (5,),
         (Dense(7, W_std=1.4, b_std=0.2, parameterization="standard"), RELU,
          Dense(13, W_std=1.2, b_std=0.1, parameterization="standard"), Erf(),
          Dense(3, W_std=0.8, b_std=0.3, parameterization="standard")),
         "standard parameterisation, widths 7/13/3, with bias"),
    Arch("fc_standard_nobias", (4,),
         (Dense(5, W_std=1.3, parameterization="standard"), RELU,
          Dense(11, W_std=1.3, parameterization="standard"), RELU,
          Dense(1, parameterization="standard")),
         "standard parameterisation, widths 5/11/1, no bias"),
    Arch("fc_mixed_param", (5,),
         (Dense(6, W_std=1.3, b_std=0.2, parameterization="standard"), Erf(a=1.2, b=0.8),
          Dense(10, W_std=1.3, b_std=0.2, parameterization="standard"), Erf(a=1.2, b=0.8),
          Dense(7, W_std=1.3), RELU,
          Dense(2, W_std=1.3, b_std=0.2, parameterization="standard")),
         "standard and ntk mixed; defaults parameterization; block", spec=_FC_MIXED),
    Arch("fc_residual", (5,),
         (Dense(8, b_std=0.1),
          Residual((RELU, Dense(8, W_std=1.2, b_std=0.1))),
          Residual((GELU, Dense(8, W_std=1.1)), (Dense(8, W_std=0.5, b_std=0.2),)),
          RELU, Dense(1)),
         "Residual with identity and with Dense shortcut"),
    # ---- 1-D convolutions ------------------------------------------------------------
    Arch("conv1d_same_valid", (10, 3),
         (Conv(8, 3, padding="SAME", W_std=1.3, b_std=0.1), RELU,
          Conv(8, 5, strides=2, padding="VALID", W_std=1.3), RELU, GAP,
          Dense(1, W_std=1.2, b_std=0.1)),
         "1-D Conv k3 SAME, k5 stride 2 VALID; GlobalAvgPool"),
    Arch("conv1d_circular_even", (8, 2),
         (Conv(4, 2, padding="CIRCULAR", W_std=1.2, b_std=0.2), Erf(),
          Conv(4, 4, strides=2, padding="CIRCULAR", W_std=1.1), Sin(), FLATTEN, Dense(1)),
         "1-D CIRCULAR with even kernels 2 and 4, stride 2; Flatten"),
    Arch("conv1d_avgpool_tanh", (6, 2),
         (Conv(4, (3,), W_std=1.4, b_std=0.1), TANH,
          AvgPool(3, strides=1, padding="SAME"), AvgPool(2), GAP, Dense(1)),
         "1-D one-element tuple kernel, Tanh on full covariance, AvgPool SAME and default"),
    Arch("conv1d_mixed_deep", (7, 2),
         (Conv(4, 3, W_std=1.3, b_std=0.1), GELU,
          Conv(4, 3, W_std=1.2), Sin(a=0.9, b=1.1, c=0.3),
          Conv(4, 2, padding="CIRCULAR", W_std=1.4), LeakyRelu(0.1),
          Conv(4, 3, padding="VALID", W_std=1.2, b_std=0.2), ABRelu(0.5, 1.2),
          Conv(4, 1, W_std=1.1), IDENTITY, GAP, Dense(1)),
         "deep (5 conv) with Gelu, Sin, LeakyRelu, ABRelu, Identity on full covariance"),
    # ---- 2-D convolutions ------------------------------------------------------------
    Arch("conv2d_same_flatten", (6, 6, 2),
         (Conv(8, 3, W_std=1.4, b_std=0.1), RELU, Conv(8, 3, W_std=1.4, b_std=0.1), RELU,
          FLATTEN, Dense(1, W_std=1.2)),
         "2-D Conv k3 with default SAME; Flatten (per-position path)"),
    Arch("conv2d_even_same", (7, 6, 2),
         (Conv(6, 2, padding="SAME", W_std=1.3, b_std=0.2), RELU,
          Conv(6, 4, strides=2, padding="SAME", W_std=1.3), GELU, GAP, Dense(1)),
         "2-D even kernels 2 and 4 with SAME (asymmetric pads), stride 2, odd sizes"),
    Arch("conv2d_nonsquare_valid", (7, 6, 2),
         (Conv(6, (3, 2), strides=(2, 1), padding="VALID", W_std=1.2, b_std=0.1),
          LeakyRelu(0.1), Conv(6, (1, 3), padding="VALID"), ABRelu(0.3, 1.1), FLATTEN,
          Dense(2, b_std=0.2)),
         "2-D non-square kernels (3,2), (1,3), strides (2,1), VALID"),
    Arch("conv2d_circular", (6, 6, 2),
         (Conv(6, 3, padding="CIRCULAR", W_std=1.3, b_std=0.1), RELU,
          Conv(6, 3, strides=2, padding="CIRCULAR"), RELU,
          Conv(6, (2, 3), padding="CIRCULAR"), Erf(a=1.2, b=0.9), GAP, Dense(1)),
         "2-D CIRCULAR: k3, k3 stride 2, non-square (2,3)"),
    Arch("conv2d_k1_dense_spatial", (5, 5, 3),
         (Conv(8, 1, padding="VALID", W_std=1.1, b_std=0.3), RELU,
          Dense(8, W_std=1.2, b_std=0.1), RELU, Conv(4, 1, strides=2), FLATTEN, Dense(1)),
         "1x1 Conv, Dense on spatial input (per position), 1x1 stride 2"),
    Arch("conv2d_avgpool_default", (8, 8, 2),
         (Conv(6, 3, W_std=1.4), RELU, AvgPool(2), Conv(6, 3, W_std=1.4), RELU, AvgPool(3),
          FLATTEN, Dense(1)),
         "AvgPool with default strides (= window) and VALID, 8 -> 4 -> 1"),
    Arch("conv2d_avgpool_explicit", (6, 6, 2),
         (Conv(4, 3, W_std=1.3, b_std=0.1), RELU,
          AvgPool((3, 3), strides=(1, 1), padding="SAME"),
          AvgPool(2, strides=1, padding="CIRCULAR"),
          AvgPool((2, 3), strides=(2, 1), padding="VALID"), Conv(4, 1, W_std=1.2), Erf(),
          AvgPool(2, strides=2, padding="SAME"), FLATTEN, Dense(1)),
         "AvgPool explicit strides; SAME (asymmetric), CIRCULAR, VALID; non-square"),
    Arch("conv2d_standard", (6, 6, 2),
         (Conv(5, 3, W_std=1.3, b_std=0.2, parameterization="standard"), RELU,
          Conv(9, (2, 3), strides=(1, 2), W_std=1.2, parameterization="standard"), RELU,
          AvgPool(3, strides=2, padding="CIRCULAR"), FLATTEN,
          Dense(3, W_std=0.9, b_std=0.1, parameterization="standard")),
         "standard parameterisation Conv (widths 5, 9) and Dense after Flatten; "
         "AvgPool CIRCULAR stride 2"),
    # ---- 3-D convolutions ------------------------------------------------------------
    Arch("conv3d", (4, 4, 4, 2),
         (Conv(4, 3, W_std=1.3, b_std=0.1), RELU,
          Conv(4, (2, 2, 1), strides=2, padding="VALID", W_std=1.2), GELU, GAP, Dense(1)),
         "3-D Conv k3 SAME and (2,2,1) stride 2 VALID; GlobalAvgPool"),
    Arch("conv3d_circular_flatten", (4, 4, 3, 2),
         (Conv(3, (3, 1, 2), strides=(1, 2, 1), padding="CIRCULAR", b_std=0.2),
          Sin(a=0.9, b=1.2, c=0.3), AvgPool(2, strides=1, padding="SAME"), FLATTEN,
          Dense(1, W_std=1.1)),
         "3-D CIRCULAR non-square kernel and strides; 3-D AvgPool SAME; Flatten"),
    # ---- residual networks -----------------------------------------------------------
    Arch("resnet_identity", (5, 5, 2),
         (Conv(8, 3, W_std=1.2, b_std=0.1),
          Residual((RELU, Conv(8, 3, W_std=1.2, b_std=0.1), RELU, Conv(8, 3))),
          Residual((RELU, Conv(8, 3, W_std=0.8),)),
          RELU, GAP, Dense(1)),
         "Residual blocks with identity shortcuts (conv)"),
    Arch("resnet_projection", (6, 6, 2),
         (Conv(8, 3),
          Residual((RELU, Conv(8, 3, strides=2, W_std=1.3, b_std=0.1), RELU,
                    Conv(8, 3, W_std=1.3)), (Conv(8, 1, strides=2, W_std=0.9),)),
          Residual((RELU, Conv(8, 3, strides=1, W_std=1.3, b_std=0.1), RELU,
                    Conv(8, 3, W_std=1.3)), (Conv(8, 1, strides=1, W_std=0.9),)),
          RELU, GAP, Dense(1, b_std=0.2)),
         "Residual with 1x1 projection shortcuts, stride 2; blocks with parameters",
         spec=_RESNET_PROJ),
    # ---- larger nets -----------------------------------------------------------------
    Arch("myrtle5", (8, 8, 3),
         (*_conv_relu(16), *_conv_relu(16), *_conv_relu(16), AvgPool(2), *_conv_relu(16),
          GAP, Dense(10, W_std=SQ2)),
         "the LANGUAGE.md example: Myrtle-style CNN", spec=_MYRTLE),
    Arch("deep_conv_relu", (5, 5, 2),
         (*_repeat(5, Conv(4, 3, W_std=SQ2, b_std=0.05), RELU), FLATTEN,
          Dense(1, W_std=SQ2)),
         "deep (5 conv) ReLU, Flatten readout", spec=_DEEP_CONV),
)


# ----------------------------------------------------------------------------------
# Brute-force check that the peer's conventions are ours (lax SAME, wrap, zero-counting)
# ----------------------------------------------------------------------------------
def _patches(x: np.ndarray, window, strides, padding: str) -> np.ndarray:
    """(n, *spatial, C) -> (n, *out, prod(window), C): each output position's window."""
    pads, outs = [], []
    for n, k, s in zip(x.shape[1:-1], window, strides):
        if padding == "VALID":
            out, lo, hi = (n - k) // s + 1, 0, 0
        else:
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            lo, hi = total // 2, total - total // 2
        pads.append((lo, hi))
        outs.append(out)
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
    res = np.empty((x.shape[0], *outs, math.prod(window), x.shape[-1]))
    for pos in itertools.product(*(range(o) for o in outs)):
        sl = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, strides, window))
        res[(slice(None), *pos)] = xp[(slice(None), *sl, slice(None))].reshape(
            x.shape[0], -1, x.shape[-1])
    return res


def _brute_nngp(kind, window, strides, padding, readout, x1, x2, W=1.3, b=0.2):
    """The exact NNGP of one Conv (or AvgPool) layer followed by GAP or Flatten."""
    p1, p2 = _patches(x1, window, strides, padding), _patches(x2, window, strides, padding)
    nsp = x1.ndim - 2
    if kind == "conv":
        f1, f2 = p1.reshape(*p1.shape[:nsp + 1], -1), p2.reshape(*p2.shape[:nsp + 1], -1)
        scale, shift = W**2 / f1.shape[-1], b**2
    else:  # avg pool: zeros of the padding count in the mean
        f1, f2 = p1.mean(axis=-2), p2.mean(axis=-2)
        scale, shift = 1.0 / x1.shape[-1], 0.0
    f1 = f1.reshape(f1.shape[0], -1, f1.shape[-1])
    f2 = f2.reshape(f2.shape[0], -1, f2.shape[-1])
    if readout == "gap":
        return scale * f1.mean(1) @ f2.mean(1).T + shift
    return scale * np.einsum("ipc,jpc->ij", f1, f2) / f1.shape[1] + shift


def check_peer_conventions() -> int:
    """Assert the peer's single-layer kernels equal the brute force; return the count."""
    from neural_tangents import stax

    rng = np.random.default_rng(1)
    convs = [(3, 1, "SAME"), (2, 1, "SAME"), (4, 2, "SAME"), (3, 2, "VALID"),
             (2, 2, "CIRCULAR"), (3, 2, "CIRCULAR"), (4, 1, "CIRCULAR")]
    pools = [(2, None, "VALID"), (3, 1, "SAME"), (2, 2, "SAME"), (3, 2, "CIRCULAR"),
             (2, 1, "CIRCULAR")]
    n = 0
    for spatial in ((7,), (7, 6)):
        x1 = rng.standard_normal((3, *spatial, 2))
        x2 = rng.standard_normal((2, *spatial, 2))
        nd = len(spatial)
        cases = [("conv", k, s, p) for k, s, p in convs] + [("pool", *c) for c in pools]
        for (kind, k, s, pad), readout in itertools.product(cases, ("gap", "flatten")):
            # 2-D: make the window non-square and the strides differ by axis
            window = (k,) if nd == 1 else (k, max(k - 1, 1))
            strides = ((k if s is None else s),) if nd == 1 else (
                (k if s is None else s), 1 if s is None else max(s - 1, 1))
            if kind == "pool" and s is None:
                strides = window
            if kind == "conv":
                layer = stax.Conv(3, window, strides, pad, W_std=1.3, b_std=0.2)
            else:
                layer = stax.AvgPool(window, strides, pad)
            top = stax.GlobalAvgPool() if readout == "gap" else stax.Flatten()
            _, _, kfn = stax.serial(layer, top)
            got = np.asarray(kfn(x1, x2, "nngp"))
            want = _brute_nngp(kind, window, strides, pad, readout, x1, x2)
            err = np.abs(got - want).max() / np.abs(want).max()
            if not err < 1e-12:
                raise AssertionError(
                    f"peer convention differs from ours: {kind} window={window} "
                    f"strides={strides} padding={pad} readout={readout}: rel err {err:.2e}")
            n += 1
    return n



# ---- v2 layers ---------------------------------------------------------------------
@dataclass(frozen=True)
class V2:
    """A v2 layer: its spec line as written, and the peer's ``stax`` call (name, args).

    ``args`` / ``kwargs`` are passed as they are, except that a value ``("nd", v)``
    is expanded to one entry per spatial axis.
    """

    text: str
    fn: str
    args: tuple = ()
    kwargs: tuple = ()

    def spec(self) -> str:
        return self.text

    def peer(self, nd: int):
        from neural_tangents import stax

        def val(v):
            return _expand(v[1], nd) if isinstance(v, tuple) and v[:1] == ("nd",) else v

        return getattr(stax, self.fn)(*(val(a) for a in self.args),
                                      **{k: val(v) for k, v in self.kwargs})


def _ct(out, k, s=1, pad="SAME", W=1.0, b=0.0, par="ntk", local=False):
    """ConvTranspose / ConvLocal with the peer's explicit arguments."""
    name = "ConvLocal" if local else "ConvTranspose"
    text = Conv(out, k, s, pad, W, b, par).spec().replace("Conv(", name + "(", 1)
    return V2(text, name, (out, ("nd", k), ("nd", s), pad),
              (("W_std", W), ("b_std", b or None), ("parameterization", par)))


def _sumpool(w, s=None, pad="VALID"):
    text = AvgPool(w, s, pad).spec().replace("AvgPool", "SumPool")
    return V2(text, "SumPool", (("nd", w), ("nd", w if s is None else s), pad))


def _ln(over="channels", eps=None, axis=-1):
    args = ([] if over == "channels" else [f'over = "{over}"']) + (
        [] if eps is None else [f"eps = {eps!r}"])
    text = f"LayerNorm({', '.join(args)})" if args else "LayerNorm"
    return V2(text, "LayerNorm", (), (("axis", axis), ("eps", 1e-12 if eps is None else eps)))


def _dropout(p, mode="train"):
    text = f"Dropout({p!r})" if mode == "train" else f'Dropout({p!r}, mode = "{mode}")'
    return V2(text, "Dropout", (1.0 - p, mode))


def _resize(factor, method, shape):
    text = f"Resize({_num(factor)})" if method == "nearest" else \
        f'Resize({_num(factor)}, method = "{method}")'
    return V2(text, "ImageResize", ((-1, *shape, -1), method))


GSP = V2("GlobalSumPool", "GlobalSumPool")

ARCHS_V2: tuple[Arch, ...] = (
    Arch("fc_layernorm_dropout", (5,),
         (Dense(6, W_std=1.3, b_std=0.1), _ln(), RELU, Dense(6, W_std=1.2), _dropout(0.3),
          Dense(7, b_std=0.2), _ln("all", 0.01), Erf(), _dropout(0.2, "test"), Dense(1)),
         "LayerNorm (channels; all with eps), Dropout train and test (FC)",
         repeat_row=True),
    Arch("conv2d_sumpool", (6, 6, 2),
         (Conv(5, 3, W_std=1.2), RELU, _sumpool(2), Conv(5, 2, padding="VALID"), RELU,
          _sumpool((2, 1), 1, "SAME"), Conv(4, 2, padding="CIRCULAR", W_std=0.5), RELU,
          _sumpool(2, 1, "CIRCULAR"), GSP, Dense(1)),
         "SumPool default strides, SAME and CIRCULAR, non-square; GlobalSumPool"),
    Arch("conv2d_layernorm_dropout", (5, 5, 2),
         (Conv(6, 3, b_std=0.1), _ln("all", axis=(1, 2, 3)), RELU, Conv(6, 2, W_std=1.3),
          _ln(), RELU, _dropout(0.25), Conv(6, 3), RELU, _dropout(0.4, "test"), GAP,
          Dense(1)),
         "LayerNorm over all and over channels on full covariances; Dropout (CNN)"),
    Arch("conv2d_transpose", (3, 3, 2),
         (Conv(5, 2), RELU, _ct(5, 3, 2), RELU, _ct(4, (2, 3), (2, 1), "VALID", 1.1, 0.2),
          RELU, FLATTEN, Dense(1)),
         "ConvTranspose SAME stride 2, VALID non-square with bias; Flatten"),
    Arch("conv2d_transpose_circular", (3, 3, 2),
         (_ct(6, 3, 2, "CIRCULAR", 1.2, 0.1, "standard"), RELU, _ct(4, 2, 1, "CIRCULAR"),
          RELU, GAP, Dense(1)),
         "ConvTranspose CIRCULAR (odd and even kernels), standard parameterisation; GAP"),
    Arch("conv2d_local", (5, 5, 2),
         (_ct(5, 3, 1, "SAME", 1.3, 0.3, local=True), RELU,
          _ct(5, 2, 2, "VALID", local=True), RELU, FLATTEN, Dense(1)),
         "ConvLocal SAME with bias, VALID stride 2; Flatten (diagonal path)"),
    Arch("conv2d_local_gap", (4, 4, 2),
         (_ct(5, (3, 2), 1, "CIRCULAR", 1.2, 0.2, "standard", local=True), RELU,
          Conv(5, 3), RELU, _ct(4, 2, 1, "SAME", local=True), RELU, GAP, Dense(1)),
         "ConvLocal CIRCULAR standard, ConvLocal before GAP (full state, zero between "
         "positions)"),
    Arch("conv2d_resize", (3, 3, 2),
         (Conv(5, 2), RELU, _resize(2, "nearest", (6, 6)), Conv(5, 3), RELU,
          _resize((2, 1), "linear", (12, 6)), Conv(4, 3), RELU, GAP, Dense(1)),
         "Resize nearest and linear (non-square factor) -> ImageResize"),
    Arch("conv1d_v2", (6, 2),
         (_ct(4, 3, 2, "SAME"), RELU, _ct(4, 3, 2, "SAME", local=True), RELU,
          _resize(3, "linear", (18,)), _sumpool(3, 2, "CIRCULAR"), GSP, Dense(1)),
         "1-D ConvTranspose, ConvLocal, Resize linear, SumPool CIRCULAR, GlobalSumPool"),
    Arch("conv3d_v2", (3, 3, 2, 2),
         (_ct(4, 2, (1, 2, 1)), _ln(), RELU, _ct(4, 2, 1, "CIRCULAR", local=True), RELU,
          _sumpool((1, 2, 2), 1, "SAME"), Conv(3, 2), RELU, GAP, Dense(1)),
         "3-D ConvTranspose, ConvLocal CIRCULAR, LayerNorm, SumPool (no 3-D Resize: the "
         "peer's 3-D ImageResize kernel is wrong, see README)"),
)
ARCHS = ARCHS + ARCHS_V2


# ---- the v2 nonlinearities -----------------------------------------------------------
def _act(name, **kw):
    return Act(name, tuple(kw.items()))


ARCHS_NONLIN: tuple[Arch, ...] = (
    Arch("fc_abs_sign_cos", (5,),
         (Dense(8, W_std=1.2, b_std=0.1), _act("Abs"), Dense(8),
          _act("Cos", a=1.1, b=0.9, c=0.3), Dense(8, W_std=1.3), _act("Sign"), Dense(1)),
         "Abs, Cos(a, b, c), Sign (no NTK contribution)", repeat_row=True),
    Arch("fc_exp_gaussian_rbf", (5,),
         (Dense(8, W_std=0.9, b_std=0.1), _act("Exp", a=0.8, b=0.6), Dense(8, W_std=1.1),
          _act("Gaussian", a=1.3, b=-0.7), Dense(8), _act("Rbf", gamma=0.6), Dense(1),
          ), "Exp(a, b), Gaussian(a, b), Rbf(gamma)", repeat_row=True),
    Arch("fc_defaults_exp_gaussian_rbf_cos", (5,),
         (Dense(8, W_std=0.8), _act("Exp"), Dense(8, W_std=0.5), _act("Gaussian"), Dense(8),
          _act("Rbf"), Dense(8), _act("Cos"), Dense(1)),
         "Exp, Gaussian, Rbf, Cos with their defaults"),
    Arch("fc_monomials", (5,),
         (Dense(8, b_std=0.2), _act("Monomial", degree=3), Dense(8, W_std=0.7),
          _act("Polynomial", coef=(0.3, -1.0, 0.5, 0.2)), Dense(1)),
         "Monomial(3), Polynomial(coef)"),
    # no RectifiedMonomial golden: the peer's kernels of it are NaN at correlation 1 (its
    # (x, None) kernels: arccos(1) = 0 and 0 / sin(0)) and, deeper in a net, its NTK; ntkdsl's
    # are checked against mpmath (tests/test_symbolic.py, tests/test_nonlinearities.py)
    Arch("fc_hermite", (6,),
         (Dense(6), _act("Hermite", degree=3), Dense(6), _act("Hermite", degree=2), Dense(6),
          _act("Hermite", degree=1), Dense(1)),
         "Hermite(3), (2), (1) on unit-variance inputs", repeat_row=True, unit_rows=True),
    Arch("fc_sigmoid", (5,),
         (Dense(8, W_std=1.5, b_std=0.2), _act("Sigmoid"), Dense(8, W_std=2.0, b_std=0.1),
          _act("Sigmoid"), Dense(1)),
         "Sigmoid (quadrature in both)", repeat_row=True),
    Arch("conv2d_nonlin_pool", (5, 5, 2),
         (Conv(4, 3, W_std=1.3, b_std=0.1), _act("Abs"), AvgPool(2, strides=1, padding="SAME"),
          Conv(4, 2, W_std=0.9), _act("Exp", a=0.7, b=0.5), Conv(4, 3), _act("Rbf", gamma=0.4),
          AvgPool(2), Conv(4, 1), _act("Sign"), GAP, Dense(1)),
         "CNN with AvgPool: Abs, Exp, Rbf, Sign on full covariances"),
    Arch("conv2d_poly_pool", (5, 5, 2),
         (Conv(4, 3, W_std=1.2, b_std=0.1), _act("Monomial", degree=2),
          AvgPool(2, strides=1, padding="SAME"), Conv(4, 3, W_std=0.6),
          _act("Polynomial", coef=(0.2, 1.0, -0.3)), AvgPool(2), Conv(4, 1),
          _act("Gaussian", a=1.2, b=-0.5), Conv(4, 1), _act("Cos", b=0.8),
          Conv(4, 1, W_std=1.4), _act("Sigmoid"), GAP, Dense(1)),
         "CNN with AvgPool: Monomial, Polynomial, Gaussian, Cos, Sigmoid"),
)
ARCHS = ARCHS + ARCHS_NONLIN

# ----------------------------------------------------------------------------------
def _inputs(arch: Arch) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(arch.name.encode()))
    x1 = arch.x_scale * rng.standard_normal((N1, *arch.in_shape))
    x2 = arch.x_scale * rng.standard_normal((N2, *arch.in_shape))
    if arch.repeat_row:
        x2[0] = x1[2]
    if arch.unit_rows:
        for x in (x1, x2):
            flat = x.reshape(len(x), -1)
            flat *= np.sqrt(flat.shape[1]) / np.linalg.norm(flat, axis=1, keepdims=True)
    return x1, x2


def make(arch: Arch, versions: str) -> Path:
    """Compute the peer's kernels for one architecture and write ``NAME.npz``."""
    from neural_tangents import stax

    nd = len(arch.in_shape) - 1
    _, _, kernel_fn = stax.serial(*(layer.peer(nd) for layer in arch.layers))
    x1, x2 = _inputs(arch)
    k12 = kernel_fn(x1, x2, ("nngp", "ntk"))
    k11 = kernel_fn(x1, None, ("nngp", "ntk"))
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in (
        ("nngp_12", k12.nngp), ("ntk_12", k12.ntk), ("nngp_11", k11.nngp),
        ("ntk_11", k11.ntk))}
    for k, v in arrays.items():
        want = (N1, N2) if k.endswith("12") else (N1, N1)
        if v.shape != want or not np.all(np.isfinite(v)):
            raise AssertionError(f"{arch.name}: peer {k} has shape {v.shape} or non-finite")
    path = HERE / f"{arch.name}.npz"
    np.savez_compressed(path, spec=np.str_(arch.spec_text()), net=np.str_(arch.name),
                        covers=np.str_(arch.covers), peer=np.str_(versions),
                        x1=x1, x2=x2, **arrays)
    return path


def table() -> str:
    """The coverage table of README.md, in markdown."""
    rows = ["| golden | input (no batch) | covers |", "|---|---|---|"]
    rows += [f"| `{a.name}` | {a.in_shape} | {a.covers} |" for a in ARCHS]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Check the peer's conventions, then write the goldens (all, or ``--only`` some)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these goldens")
    parser.add_argument("--table", action="store_true", help="print the README table")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    try:
        import jax
        import neural_tangents
    except ImportError:
        sys.exit("make_golden.py needs the peer's interpreter: see its docstring")
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")  # ElementwiseNumerical warns on every construction
    versions = f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__}"
    names = [a.name for a in ARCHS]
    if len(set(names)) != len(names):
        raise AssertionError("duplicate golden names")
    if args.only and set(args.only) - set(names):
        sys.exit(f"unknown golden(s): {sorted(set(args.only) - set(names))}")
    print(f"peer conventions match ours in {check_peer_conventions()} single-layer cases")
    for arch in ARCHS:
        if args.only and arch.name not in args.only:
            continue
        path = make(arch, versions)
        print(f"wrote {path.name} ({path.stat().st_size} bytes)")
    if not args.only:  # drop goldens of architectures no longer listed
        for stale in set(HERE.glob("*.npz")) - {HERE / f"{n}.npz" for n in names}:
            stale.unlink()
            print(f"removed stale {stale.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
