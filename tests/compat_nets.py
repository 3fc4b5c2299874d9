"""Stax nets written once for both sides of the compat goldens.

Each builder takes a ``stax`` module: ``neural_tangents.stax`` when
``tests/golden/make_golden_compat.py`` writes the goldens with the peer's
interpreter, ``ntkdsl.compat.stax`` in the tests. Nothing here imports either
library, so the two sides run the very same net definitions.
"""

from __future__ import annotations

import math
import random
import zlib

import numpy as np

N1, N2 = 4, 3


def _erf_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    prod = (1 + 2 * var1) * (1 + 2 * var2)
    return jnp.arcsin(2 * cov12 / jnp.sqrt(prod)) * 2 / np.pi


def _tanh():
    import jax.numpy as jnp

    return jnp.tanh, (lambda x: 1.0 - jnp.tanh(x) ** 2)


# ---- hand-written nets: (builder, input shape without batch, options) ----------------

def fc_dense_relu(stax):
    return stax.serial(stax.Dense(7, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def fc_acts_relu_family(stax):
    return stax.serial(stax.Dense(8, b_std=0.2), stax.LeakyRelu(0.2),
                       stax.Dense(8, W_std=1.3), stax.ABRelu(-0.3, 1.2),
                       stax.Dense(8), stax.Abs(), stax.Dense(2, b_std=0.3))


def fc_acts_smooth(stax):
    return stax.serial(stax.Dense(8, W_std=1.2, b_std=0.3), stax.Erf(1.5, 0.7, 0.2),
                       stax.Dense(8, W_std=1.4), stax.Gelu(),
                       stax.Dense(8, b_std=0.2), stax.Sin(1.3, 0.8, 0.4), stax.Dense(1))


def fc_acts_exp(stax):
    return stax.serial(stax.Dense(8, W_std=0.8, b_std=0.2), stax.Cos(1.1, 0.9, 0.3),
                       stax.Dense(8, W_std=0.9), stax.Exp(0.5, 0.4),
                       stax.Dense(8, W_std=0.7), stax.Gaussian(1.0, -0.5), stax.Dense(1))


def fc_acts_rbf_sign(stax):
    return stax.serial(stax.Dense(8), stax.Rbf(0.7), stax.Dense(8, b_std=0.1),
                       stax.Sigmoid_like(), stax.Dense(8, W_std=1.3), stax.Sign(),
                       stax.Dense(1, b_std=0.2))


def fc_polynomials(stax):
    return stax.serial(stax.Dense(8, W_std=0.9), stax.Monomial(2),
                       stax.Dense(8, W_std=0.5, b_std=0.1), stax.Polynomial([0.5, -1.0, 0.25]),
                       stax.Dense(1))


def fc_hermite(stax):
    return stax.serial(stax.Dense(8), stax.Hermite(3), stax.Dense(1))


def fc_rectified_monomial(stax):
    return stax.serial(stax.Dense(8, b_std=0.1), stax.RectifiedMonomial(2), stax.Dense(1))


def fc_layernorm_dropout(stax):
    return stax.serial(stax.Dense(8, b_std=0.2), stax.LayerNorm(), stax.Relu(),
                       stax.Dense(8, W_std=1.2), stax.Dropout(0.8), stax.Dense(1),
                       stax.Dropout(0.9, mode="test"))


def fc_python_elementwise(stax):
    import jax.scipy.special

    tanh, dtanh = _tanh()
    return stax.serial(stax.Dense(8, W_std=1.3, b_std=0.1),
                       stax.Elementwise(jax.scipy.special.erf, _erf_nngp),
                       stax.Dense(8, W_std=1.5, b_std=0.2),
                       stax.ElementwiseNumerical(tanh, 300, df=dtanh), stax.Dense(1))


def fc_branches(stax):
    return stax.serial(
        stax.Dense(8, b_std=0.1), stax.Relu(), stax.Dense(8, W_std=1.4),
        stax.FanOut(3),
        stax.parallel(stax.Dense(8, W_std=1.2),
                      stax.serial(stax.Dense(6), stax.Erf(), stax.Dense(8, b_std=0.3)),
                      stax.Identity()),
        stax.FanInSum(), stax.Relu(),
        stax.FanOut(2), stax.parallel(stax.Dense(4), stax.Dense(5, W_std=1.3)),
        stax.FanInConcat(), stax.Dense(6),
        stax.FanOut(2), stax.parallel(stax.Dense(6, b_std=0.5), stax.Dense(6, W_std=0.8)),
        stax.FanInProd(), stax.Dense(1))


def fc_repeat(stax):
    return stax.serial(stax.Dense(8, W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.repeat(stax.serial(stax.Dense(8, W_std=1.4, b_std=0.1),
                                               stax.Relu()), 3),
                       stax.Dense(1))


def fc_standard(stax):
    return stax.serial(stax.Dense(7, W_std=1.3, b_std=0.2, parameterization="standard"),
                       stax.Relu(),
                       stax.Dense(13, W_std=1.1, parameterization="standard"), stax.Erf(),
                       stax.Dense(3, b_std=0.1, parameterization="standard"))


def cnn_conv_pool(stax):
    return stax.serial(stax.Conv(4, (3, 3), padding="SAME", b_std=0.1), stax.Relu(),
                       stax.AvgPool((2, 2)), stax.Conv(4, (2, 2), W_std=1.3), stax.Erf(),
                       stax.SumPool((2, 2), (2, 2), "SAME"), stax.Flatten(), stax.Dense(1))


def cnn_transpose_local(stax):
    return stax.serial(stax.ConvTranspose(3, (2, 2), (2, 2), "SAME", b_std=0.1), stax.Relu(),
                       stax.ConvLocal(3, (3, 3), W_std=1.2, b_std=0.2), stax.Relu(),
                       stax.GlobalSumPool(), stax.Dense(1))


def cnn_resize_circular(stax):
    return stax.serial(stax.Conv(3, (3, 3), padding="CIRCULAR", W_std=1.4),
                       stax.ImageResize((-1, 8, 8, -1), "nearest"), stax.Relu(),
                       stax.Conv(3, (1, 1), b_std=0.1),
                       stax.ImageResize((-1, 8, 16, -1), "linear"), stax.Gelu(),
                       stax.GlobalAvgPool(), stax.Dense(2))


def cnn_resnet(stax):
    return stax.serial(
        stax.Conv(4, (3, 3), padding="SAME"),
        stax.FanOut(2),
        stax.parallel(stax.serial(stax.Relu(), stax.Conv(4, (3, 3), padding="SAME",
                                                         W_std=1.3, b_std=0.1)),
                      stax.Identity()),
        stax.FanInSum(), stax.Relu(),
        stax.FanOut(2),
        stax.parallel(stax.Conv(3, (1, 1)), stax.Conv(2, (3, 3), padding="SAME")),
        stax.FanInConcat(), stax.GlobalAvgPool(), stax.Dense(1, b_std=0.2))


def cnn_layernorm(stax):
    return stax.serial(stax.Conv(3, (2, 2), b_std=0.1), stax.LayerNorm(axis=(1, 2, 3)),
                       stax.Relu(), stax.Conv(3, (2, 2), padding="SAME"),
                       stax.LayerNorm(), stax.Erf(), stax.Flatten(), stax.Dense(1))


def cnn_1d_standard(stax):
    return stax.serial(stax.Conv(5, (3,), padding="SAME", b_std=0.1,
                                 parameterization="standard"), stax.Relu(),
                       stax.AvgPool((2,), (2,)),
                       stax.Conv(7, (2,), W_std=1.3, parameterization="standard"),
                       stax.Relu(), stax.Flatten(),
                       stax.Dense(1, parameterization="standard"))


def attention_softmax(stax):
    return stax.serial(stax.Dense(4, b_std=0.1),
                       stax.GlobalSelfAttention(4, 3, 2, 2, W_key_std=1.3, W_value_std=1.3,
                                                W_query_std=1.3, W_out_std=1.1, b_std=0.2),
                       stax.Relu(), stax.Flatten(), stax.Dense(1))


def attention_positional(stax):
    return stax.serial(stax.Conv(3, (1, 1), b_std=0.1),
                       stax.GlobalSelfAttention(3, 2, 3, 1, attention_mechanism="IDENTITY",
                                                pos_emb_type="SUM"),
                       stax.Erf(),
                       stax.GlobalSelfAttention(2, 2, 2, 2, attention_mechanism="RELU",
                                                pos_emb_type="CONCAT", W_out_std=1.2),
                       stax.GlobalAvgPool(), stax.Dense(1))


def graph_aggregate(stax):
    return stax.serial(stax.Dense(4, b_std=0.1), stax.Aggregate(), stax.Relu(),
                       stax.Dense(3, W_std=1.3), stax.Aggregate(), stax.Erf(),
                       stax.GlobalAvgPool(), stax.Dense(1))


# ---- random nets ---------------------------------------------------------------------

_ACTS = ("Relu", "Erf", "Gelu", "Sin", "LeakyRelu", "ABRelu", "Abs")


def _act(stax, name: str, rng: random.Random):
    if name == "LeakyRelu":
        return stax.LeakyRelu(round(rng.uniform(0, 0.5), 2))
    if name == "ABRelu":
        return stax.ABRelu(round(rng.uniform(-1, 0), 2), round(rng.uniform(0.5, 1.5), 2))
    return getattr(stax, name)()


def _affine_kw(rng: random.Random, param: str) -> dict:
    kw = {"W_std": round(rng.uniform(0.8, 1.6), 2), "parameterization": param}
    if rng.random() < 0.6:
        kw["b_std"] = round(rng.uniform(0.05, 0.5), 2)
    return kw


def random_fc(seed: int, param: str):
    def build(stax):
        rng = random.Random(seed)
        layers = []
        for _ in range(rng.randint(2, 4)):
            layers += [stax.Dense(rng.randint(3, 9), **_affine_kw(rng, param)),
                       _act(stax, rng.choice(_ACTS), rng)]
        layers.append(stax.Dense(rng.randint(1, 3), **_affine_kw(rng, param)))
        return stax.serial(*layers)

    build.__name__ = f"fc_random_{param}_{seed}"
    return build


def random_cnn(seed: int, param: str):
    def build(stax):
        rng = random.Random(seed)
        layers = []
        for _ in range(rng.randint(2, 3)):
            k = rng.choice((1, 2, 3))
            pad = rng.choice(("SAME", "VALID", "CIRCULAR")) if k > 1 else "SAME"
            stride = rng.choice((1, 1, 2))
            layers += [stax.Conv(rng.randint(2, 5), (k, k), (stride, stride), pad,
                                 **_affine_kw(rng, param)),
                       _act(stax, rng.choice(_ACTS), rng)]
            if rng.random() < 0.4:
                layers.append(stax.AvgPool((2, 2), (1, 1), rng.choice(("SAME", "VALID"))))
        layers.append(rng.choice((stax.Flatten, stax.GlobalAvgPool))())
        layers.append(stax.Dense(rng.randint(1, 3), **_affine_kw(rng, param)))
        return stax.serial(*layers)

    build.__name__ = f"cnn_random_{param}_{seed}"
    return build


#: name -> (builder, input shape without the batch axis, options)
#: options: "unit_rows" (rows scaled to |x|^2 = d), "no_11" (the peer's x1-x1 kernel is
#: NaN at correlation 1: only the x1-x2 kernel is compared), "random_apply" (apply_fn
#: draws dropout masks: called with rng=PRNGKey(3)), "graph" (inputs come with
#: adjacency patterns)
NETS: dict[str, tuple] = {
    "fc_dense_relu": (fc_dense_relu, (5,), ()),
    "fc_acts_relu_family": (fc_acts_relu_family, (5,), ()),
    "fc_acts_smooth": (fc_acts_smooth, (5,), ()),
    "fc_acts_exp": (fc_acts_exp, (5,), ()),
    "fc_acts_rbf_sign": (fc_acts_rbf_sign, (5,), ()),
    "fc_polynomials": (fc_polynomials, (5,), ()),
    "fc_hermite": (fc_hermite, (5,), ("unit_rows",)),
    "fc_rectified_monomial": (fc_rectified_monomial, (5,), ("no_11",)),
    "fc_layernorm_dropout": (fc_layernorm_dropout, (5,), ("random_apply",)),
    "fc_python_elementwise": (fc_python_elementwise, (5,), ()),
    "fc_branches": (fc_branches, (5,), ()),
    "fc_repeat": (fc_repeat, (5,), ()),
    "fc_standard": (fc_standard, (5,), ()),
    "cnn_conv_pool": (cnn_conv_pool, (6, 6, 2), ()),
    "cnn_transpose_local": (cnn_transpose_local, (3, 3, 2), ()),
    "cnn_resize_circular": (cnn_resize_circular, (4, 4, 2), ()),
    "cnn_resnet": (cnn_resnet, (5, 5, 2), ()),
    "cnn_layernorm": (cnn_layernorm, (5, 5, 2), ()),
    "cnn_1d_standard": (cnn_1d_standard, (8, 2), ()),
    "attention_softmax": (attention_softmax, (5, 3), ()),
    "attention_positional": (attention_positional, (3, 3, 2), ()),
    "graph_aggregate": (graph_aggregate, (5, 3), ("graph",)),
}
for _s in (1, 2, 3):
    for _p in ("ntk", "standard"):
        NETS[f"fc_random_{_p}_{_s}"] = (random_fc(_s, _p), (6,), ())
for _s in (1, 2):
    for _p in ("ntk", "standard"):
        NETS[f"cnn_random_{_p}_{_s}"] = (random_cnn(10 + _s, _p), (5, 5, 2),
                                         ())


def inputs(name: str, shape: tuple[int, ...], options=()) -> tuple[np.ndarray, np.ndarray]:
    """The goldens' inputs: ``(N1, *shape)`` and ``(N2, *shape)``, seeded by the name."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x1 = rng.normal(size=(N1, *shape))
    x2 = rng.normal(size=(N2, *shape))
    if "unit_rows" in options:
        d = math.prod(shape)
        x1, x2 = (x * np.sqrt(d) / np.linalg.norm(x.reshape(len(x), -1), axis=1).reshape(
            (-1,) + (1,) * len(shape)) for x in (x1, x2))
    return x1, x2


def patterns(name: str, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random weighted directed graphs ``(n, nodes, nodes)`` for graph nets' inputs."""
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 1)

    def one(x):
        n, nodes = x.shape[:2]
        return (rng.random((n, nodes, nodes)) < 0.5) * rng.uniform(0.5, 1.5, (n, nodes, nodes))

    return one(x1), one(x2)


def structure(tree) -> str:
    """A library-neutral text of a pytree's structure with leaf shapes (``None`` kept)."""
    if tree is None:
        return "None"
    if isinstance(tree, tuple | list):
        inner = ",".join(structure(t) for t in tree)
        return f"({inner})" if isinstance(tree, tuple) else f"[{inner}]"
    return "x".join(map(str, np.shape(tree))) or "scalar"
