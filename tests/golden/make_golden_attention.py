"""Write the peer's golden kernels for ``SelfAttention`` (``stax.GlobalSelfAttention``).

Runs ONLY with the peer's interpreter (neural-tangents 0.6.5 on jax 0.4.23), like
``make_golden.py``, whose layer records, inputs and file format it reuses::

    .peer-venv/bin/python tests/golden/make_golden_attention.py
    .peer-venv/bin/python tests/golden/make_golden_attention.py --only seq_softmax_none

The goldens go to ``tests/golden/attention/NAME.npz`` and are checked by
``tests/test_attention_golden.py``; ``attention/finite/NAME.npz`` hold the peer's
finite layer (its params and outputs) for the finite-width check. The kernel goldens
cover every mechanism x positional embedding the peer computes: all twelve under linear
scaling, and the identity mechanism (the only one with a closed form) under
``1/sqrt(key_size)`` scaling, on 1-D sequences and 2-D images, through small stacks,
plus three attention layers in a row (the later ones read the per-input covariances
the earlier update) and a transformer block.

Our ``SelfAttention(out, heads, key_size, value_size, mechanism, W_std, W_out_std, b_std,
positional, linear_scaling)`` maps onto ``stax.GlobalSelfAttention(n_chan_out=out,
n_chan_key=key_size, n_chan_val=value_size, n_heads=heads, linear_scaling,
W_key_std=W_query_std=W_value_std=W_std, W_out_std, b_std (None for 0),
attention_mechanism=MECHANISM, pos_emb_type=POSITIONAL)`` with the peer's defaults for the
rest: one-hot positional embeddings (``pos_emb_decay_fn=None``) with as many channels as
the input (``n_chan_pos_emb=None``), ``W_pos_emb_std=1``, ``val_pos_emb=False``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_golden as mg  # noqa: E402
from make_golden import GAP, RELU, Arch, Conv, Dense, Residual  # noqa: E402

OUT = HERE / "attention"
OUT_FINITE = HERE / "attention" / "finite"

_DEFAULTS = {"heads": 1, "key_size": None, "value_size": None, "mechanism": "softmax",
             "W_std": 1.0, "W_out_std": 1.0, "b_std": 0.0, "positional": "none",
             "linear_scaling": True}


@dataclass(frozen=True)
class Attention:
    """One ``SelfAttention`` call; arguments equal to our defaults are left out of the spec."""

    out: int
    heads: int = 1
    key_size: int | None = None
    value_size: int | None = None
    mechanism: str = "softmax"
    W_std: float = 1.0
    W_out_std: float = 1.0
    b_std: float = 0.0
    positional: str = "none"
    linear_scaling: bool = True

    def spec(self) -> str:
        args = [str(self.out)]
        for k, default in _DEFAULTS.items():
            v = getattr(self, k)
            if v == default:
                continue
            if isinstance(v, bool):
                text = "true" if v else "false"
            elif isinstance(v, str):
                text = f'"{v}"'
            else:
                text = repr(v)
            args.append(f"{k} = {text}")
        return f"SelfAttention({', '.join(args)})"

    def peer(self, nd: int):
        from neural_tangents import stax
        return stax.GlobalSelfAttention(
            n_chan_out=self.out,
            n_chan_key=self.out if self.key_size is None else self.key_size,
            n_chan_val=self.out if self.value_size is None else self.value_size,
            n_heads=self.heads, linear_scaling=self.linear_scaling,
            W_key_std=self.W_std, W_value_std=self.W_std, W_query_std=self.W_std,
            W_out_std=self.W_out_std, b_std=self.b_std or None,
            attention_mechanism=self.mechanism.upper(), pos_emb_type=self.positional.upper())


LN = mg.V2("LayerNorm", "LayerNorm", (), (("axis", -1), ("eps", 1e-12)))
SEQ, IMG = (5, 2), (3, 3, 2)


def _single(name: str, shape, mech: str, pos: str, linear: bool) -> Arch:
    """Conv -> SelfAttention -> Relu -> GlobalAvgPool -> Dense, with non-default scales."""
    att = Attention(6, heads=2, key_size=5, value_size=4, mechanism=mech, W_std=1.2,
                    W_out_std=0.9, b_std=0.2 if pos != "concat" else 0.0, positional=pos,
                    linear_scaling=linear)
    kind = "sequence" if len(shape) == 2 else "image"
    return Arch(name, shape, (Conv(3, 2, W_std=1.3, b_std=0.1), att, RELU, GAP, Dense(1)),
                f"{mech}, positional {pos}, {'linear' if linear else 'sqrt'} scaling, {kind}")


def _cases() -> tuple[Arch, ...]:
    archs = []
    mechs = ("softmax", "identity", "abs", "relu")
    positions = ("none", "sum", "concat")
    i = 0
    for mech in mechs:
        for pos in positions:
            shape = SEQ if i % 2 == 0 else IMG
            prefix = "seq" if shape is SEQ else "img"
            archs.append(_single(f"{prefix}_{mech}_{pos}", shape, mech, pos, True))
            i += 1
    for j, pos in enumerate(positions):
        shape = SEQ if j % 2 == 0 else IMG
        prefix = "seq" if shape is SEQ else "img"
        archs.append(_single(f"{prefix}_sqrt_identity_{pos}", shape, "identity", pos, False))
    archs += [
        Arch("img_two_layers", IMG,
             (Conv(4, 2), Attention(5, mechanism="softmax", W_std=1.4, b_std=0.1),
              RELU, Attention(4, heads=3, mechanism="relu", positional="sum"),
              Attention(3, mechanism="identity", linear_scaling=False, W_std=0.8),
              mg.FLATTEN, Dense(1)),
             "three attention layers in a row (softmax, relu + sum, sqrt identity) "
             "with Flatten: the later layers read updated per-input covariances"),
        Arch("seq_transformer", (4, 3),
             (Dense(4, W_std=1.1),
              Residual((Attention(4, heads=2, positional="sum", W_out_std=0.8),)),
              LN,
              Residual((Dense(8, b_std=0.1), RELU, Dense(4, W_std=1.2))),
              LN, GAP, Dense(1)),
             "a transformer block: Residual attention, LayerNorm, Residual MLP, LayerNorm, "
             "GlobalAvgPool"),
        Arch("seq_defaults_standard_readout", SEQ,
             (Dense(3), Attention(4), RELU, GAP, Dense(1, parameterization="standard")),
             "every SelfAttention default (softmax, one head, linear scaling, no bias)"),
    ]
    return tuple(archs)


ARCHS = _cases()

#: single layers whose finite outputs the peer computes for given params (the finite
#: layer's maths, not only its limit): name, layer, input shape
FINITE = (
    ("softmax_sum_img", Attention(5, heads=3, key_size=4, value_size=2, W_std=1.3,
                                  W_out_std=0.7, b_std=0.4, positional="sum"), (3, 2, 4)),
    ("relu_concat_seq", Attention(4, heads=2, key_size=3, value_size=5, mechanism="relu",
                                  W_std=0.9, positional="concat"), (6, 3)),
    ("abs_none_seq", Attention(3, mechanism="abs", b_std=0.2), (5, 2)),
    ("sqrt_identity_concat_img", Attention(4, heads=2, key_size=6, value_size=3,
                                           mechanism="identity", W_std=1.1,
                                           positional="concat", linear_scaling=False),
     (2, 3, 3)),
    ("sqrt_identity_sum_seq", Attention(3, heads=2, mechanism="identity", b_std=0.3,
                                        positional="sum", linear_scaling=False), (4, 2)),
)


def make_finite(name: str, att: Attention, shape, versions: str) -> Path:
    """The peer's init and apply for one layer: its params and outputs on random inputs."""
    import jax
    import numpy as np

    init_fn, apply_fn, _ = att.peer(len(shape) - 1)
    _, params = init_fn(jax.random.PRNGKey(zlib.crc32(name.encode())), (-1, *shape))
    q, k, v, w_out, b, pos = params
    x = np.random.default_rng(zlib.crc32(name.encode())).standard_normal((3, *shape))
    y = np.asarray(apply_fn(params, x), dtype=np.float64)
    arrays = {"wk": k, "wv": v, "wo": w_out}
    if q is not None:
        arrays["wq"] = q
    if b is not None:
        arrays["b"] = np.reshape(b, (-1,))
    if pos is not None:
        arrays["pos"] = np.reshape(pos, shape)
    spec = f"net {name} {{ {att.spec()} }}\n"
    path = OUT_FINITE / f"{name}.npz"
    np.savez_compressed(path, spec=np.str_(spec), net=np.str_(name), peer=np.str_(versions),
                        x=x, y=y, **{f"param_{n}": np.asarray(a, np.float64)
                                     for n, a in arrays.items()})
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the attention goldens (all, or ``--only`` some)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these goldens")
    args = parser.parse_args(argv)
    try:
        import jax
        import neural_tangents
    except ImportError:
        sys.exit("make_golden_attention.py needs the peer's interpreter: see its docstring")
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")  # linear scaling warns that the query weights are tied
    versions = f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__}"
    OUT.mkdir(exist_ok=True)
    mg.HERE = OUT  # make() writes NAME.npz under mg.HERE
    for arch in ARCHS:
        if args.only and arch.name not in args.only:
            continue
        path = mg.make(arch, versions)
        print(f"wrote attention/{path.name} ({path.stat().st_size} bytes)")
    OUT_FINITE.mkdir(exist_ok=True)
    for name, att, shape in FINITE:
        if args.only and name not in args.only:
            continue
        path = make_finite(name, att, shape, versions)
        print(f"wrote attention/finite/{path.name} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
