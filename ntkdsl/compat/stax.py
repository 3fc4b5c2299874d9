"""neural-tangents' ``stax`` on ntkdsl: ``from ntkdsl.compat import stax``.

Every layer and combinator takes the peer's (neural-tangents 0.6.5) arguments with
its defaults and conventions (``b_std=None`` is no bias, Conv ``padding='VALID'``,
pooling strides 1, ``Dropout(rate)`` a keep probability) and returns an
``(init_fn, apply_fn, kernel_fn)`` triple. The net is turned into ntkdsl's layer
graph, the same one a spec compiles to (``ntkdsl.compat.to_spec`` prints that
spec), so its kernels are ntkdsl's. A layer or option ntkdsl cannot express
exactly raises ``NotImplementedError`` naming it; nothing is approximated
silently. docs/migrating.md has the table of what is supported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from ..compiler import layers as L
from ..compiler.layers import REGISTRY, LayerArgError
from ._nodes import (
    FanInNode,
    FanOutNode,
    Leaf,
    ParallelNode,
    RepeatNode,
    SerialNode,
    as_tuple,
    unsupported,
)
from ._python_layers import KernelFnPointwise, NumericalPointwise
from ._triple import StaxLayer, node_of

__all__ = [
    "ABRelu", "Abs", "Aggregate", "AvgPool", "Conv", "ConvLocal", "ConvTranspose", "Cos",
    "DotGeneral", "Dropout", "Elementwise", "ElementwiseNumerical", "Erf", "Exp",
    "ExpNormalized", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "Flatten", "Gabor",
    "Gaussian", "Gelu", "GlobalAvgPool", "GlobalSelfAttention", "GlobalSumPool", "Hermite",
    "Identity", "ImageResize", "Index", "LayerNorm", "LeakyRelu", "Monomial", "Polynomial",
    "Rbf", "RectifiedMonomial", "Relu", "Sigmoid_like", "Sign", "Sin", "Slice", "SumPool",
    "parallel", "repeat", "serial",
]


def _plain(name: str, layer) -> StaxLayer:
    return StaxLayer(Leaf(name, lambda shape: layer))


def _axes(name: str, batch_axis: int = 0, channel_axis: int = -1) -> None:
    if batch_axis != 0 or channel_axis not in (-1,):
        raise unsupported(name, f"batch_axis={batch_axis}, channel_axis={channel_axis}: ntkdsl "
                                "data are batch first and channel last (batch_axis=0, "
                                "channel_axis=-1)")


def _param(name: str, parameterization: str, s) -> str:
    p = str(parameterization).lower()
    if p not in ("ntk", "standard"):
        raise ValueError(f"Parameterization not supported: {parameterization}")
    if tuple(s) != (1, 1):
        raise unsupported(name, f"s={tuple(s)} (width scalings of the standard "
                                "parameterisation): only s=(1, 1)")
    return p


def _bias(name: str, b_std, p: str) -> tuple[float, bool]:
    """The native b_std and whether the peer keeps an unused bias array."""
    if b_std is None:
        return 0.0, False
    if float(b_std) == 0.0:
        if p == "standard":
            raise unsupported(name, "b_std=0.0 with parameterization='standard' (a trainable "
                                    "bias initialised at zero adds 1 to the NTK); use "
                                    "b_std=None (no bias) or a positive b_std")
        return 0.0, True
    return float(b_std), False


def _padding(padding) -> str:
    p = getattr(padding, "name", padding)
    p = str(p).upper()
    if p not in ("SAME", "VALID", "CIRCULAR"):
        raise ValueError(f"padding: expected 'SAME', 'VALID' or 'CIRCULAR', got {padding!r}")
    return p


# -- affine layers ----------------------------------------------------------------------

def Dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None, batch_axis: int = 0,
          channel_axis: int = -1, parameterization: str = "ntk", s: tuple[int, int] = (1, 1)):
    """Fully connected layer (the peer's ``stax.Dense``); params ``(W (C_in, out), b)``."""
    _axes("Dense", batch_axis, channel_axis)
    p = _param("Dense", parameterization, s)
    b, extra = _bias("Dense", b_std, p)
    layer = L.Dense(out=int(out_dim), W_std=float(W_std), b_std=b, parameterization=p)
    return StaxLayer(Leaf("Dense", lambda shape: layer, "affine", 1, extra))


def _conv(name: str, cls, out_chan, filter_shape, strides, padding, W_std, b_std,
          dimension_numbers, parameterization, s) -> StaxLayer:
    kernel = as_tuple(filter_shape)
    nd = len(kernel)
    if dimension_numbers is not None:
        spatial = "DHW"[3 - nd:] if nd <= 3 else None
        default = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C") if spatial else None
        if tuple(dimension_numbers) != default:
            raise unsupported(name, f"dimension_numbers={dimension_numbers}: ntkdsl "
                                    f"convolutions are channel last ({default})")
    p = _param(name, parameterization, s)
    b, extra = _bias(name, b_std, p)
    st = as_tuple(strides) if strides else (1,) * nd
    if len(st) != nd:
        raise ValueError(f"{name}: strides {st} and filter_shape {kernel} differ in length")
    layer = cls(out=int(out_chan), kernel=kernel, strides=st, padding=_padding(padding),
                W_std=float(W_std), b_std=b, parameterization=p)
    bias_ndim = nd + 1 if cls is L.ConvLocal else 1
    return StaxLayer(Leaf(name, lambda shape: layer, "affine", bias_ndim, extra))


def Conv(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
         padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
         dimension_numbers=None, parameterization: str = "ntk", s=(1, 1)):
    """Convolution (the peer's ``stax.Conv``, default ``padding='VALID'``, strides 1)."""
    return _conv("Conv", L.Conv, out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s)


def ConvTranspose(out_chan: int, filter_shape: Sequence[int],
                  strides: Sequence[int] | None = None, padding: str = "VALID",
                  W_std: float = 1.0, b_std: float | None = None, dimension_numbers=None,
                  parameterization: str = "ntk", s=(1, 1)):
    """Transposed convolution (the peer's ``stax.ConvTranspose``)."""
    return _conv("ConvTranspose", L.ConvTranspose, out_chan, filter_shape, strides, padding,
                 W_std, b_std, dimension_numbers, parameterization, s)


def ConvLocal(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
              padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
              dimension_numbers=None, parameterization: str = "ntk", s=(1, 1)):
    """Locally connected convolution (the peer's ``stax.ConvLocal``)."""
    return _conv("ConvLocal", L.ConvLocal, out_chan, filter_shape, strides, padding, W_std,
                 b_std, dimension_numbers, parameterization, s)


# -- linear maps ------------------------------------------------------------------------

def _pool(name: str, cls, window_shape, strides, padding) -> StaxLayer:
    window = as_tuple(window_shape)
    st = as_tuple(strides) if strides else (1,) * len(window)
    layer = cls(window=window, strides=st, padding=_padding(padding))
    return StaxLayer(Leaf(name, lambda shape: layer, zero_batch=True))


def AvgPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", normalize_edges: bool = False, batch_axis: int = 0,
            channel_axis: int = -1):
    """Average pooling (the peer's ``stax.AvgPool``: strides default to 1)."""
    _axes("AvgPool", batch_axis, channel_axis)
    if normalize_edges and _padding(padding) == "SAME":
        raise unsupported("AvgPool", "normalize_edges=True with SAME padding (ntkdsl counts "
                                     "padded zeros in the mean)")
    return _pool("AvgPool", L.AvgPool, window_shape, strides, padding)


def SumPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", batch_axis: int = 0, channel_axis: int = -1):
    """Sum pooling (the peer's ``stax.SumPool``: strides default to 1)."""
    _axes("SumPool", batch_axis, channel_axis)
    return _pool("SumPool", L.SumPool, window_shape, strides, padding)


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1):
    """Mean over every spatial axis."""
    _axes("GlobalAvgPool", batch_axis, channel_axis)
    return _plain("GlobalAvgPool", L.GlobalAvgPool())


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1):
    """Sum over every spatial axis."""
    _axes("GlobalSumPool", batch_axis, channel_axis)
    return _plain("GlobalSumPool", L.GlobalSumPool())


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0):
    """Flatten all axes but the batch axis."""
    if batch_axis != 0 or batch_axis_out != 0:
        raise unsupported("Flatten", "batch axes other than 0")
    return _plain("Flatten", L.Flatten())


def Identity():
    """The identity (no layer in the graph)."""
    return _plain("Identity", None)


def _layer_norm(axis, eps: float, shape) -> L.LayerNorm:
    nd = len(shape) + 1  # with the batch axis
    axes = tuple(sorted(a % nd for a in as_tuple(axis)))
    if axes == (nd - 1,):
        return L.LayerNorm(over="channels", eps=float(eps))
    if axes == tuple(range(1, nd)):
        return L.LayerNorm(over="all", eps=float(eps))
    raise unsupported("LayerNorm", f"axis={axis} for inputs of {nd} axes: ntkdsl normalises "
                                   "the channel axis (-1) or every non-batch axis")


def LayerNorm(axis=-1, eps: float = 1e-12, batch_axis: int = 0, channel_axis: int = -1):
    """Layer normalisation over ``axis`` (the channel axis, or every non-batch axis)."""
    _axes("LayerNorm", batch_axis, channel_axis)
    return StaxLayer(Leaf("LayerNorm", partial(_layer_norm, axis, eps)))


def Dropout(rate: float, mode: str = "train"):
    """Dropout with keep probability ``rate`` (the peer's convention; the spec's ``p`` is
    ``1 - rate``). ``apply_fn(params, x, rng=key)`` in ``mode='train'``."""
    if not 0 < rate <= 1:
        raise ValueError(f"Dropout: rate is the keep probability, in (0, 1]; got {rate}")
    if mode not in ("train", "test"):
        raise ValueError(f"Dropout: mode must be 'train' or 'test', got {mode!r}")
    layer = L.Dropout(p=1.0 - float(rate), mode=mode)
    return StaxLayer(Leaf("Dropout", lambda shape: layer, "dropout", keep=float(rate)))


_RESIZE = {"nearest": "nearest", "linear": "linear", "bilinear": "linear",
           "trilinear": "linear"}


def _resize(out: tuple, method: str, shape) -> L.Resize:
    full = (None, *shape)
    if len(out) != len(full):
        raise ValueError(f"ImageResize: shape {out} has {len(out)} entries, inputs have "
                         f"{len(full)} axes")
    factors = []
    for i, (o, n) in enumerate(zip(out, full)):
        if i == 0 or i == len(full) - 1:
            if o not in (-1, n):
                raise unsupported("ImageResize", "resizing the batch or channel axis")
            continue
        o = n if o == -1 else o
        if o % n:
            raise unsupported("ImageResize", f"axis {i}: {n} -> {o} is not an integer "
                                             "upsampling (ntkdsl's Resize multiplies by "
                                             "integer factors)")
        factors.append(o // n)
    return L.Resize(factor=tuple(factors), method=method)


def ImageResize(shape: Sequence[int], method, antialias: bool = True, precision=None,
                batch_axis: int = 0, channel_axis: int = -1):
    """Image resizing by integer factors, ``method`` nearest or (bi/tri)linear."""
    _axes("ImageResize", batch_axis, channel_axis)
    m = str(getattr(method, "name", method)).lower()
    if m not in _RESIZE:
        raise unsupported("ImageResize", f"method={method!r}: only nearest and linear")
    return StaxLayer(Leaf("ImageResize", partial(_resize, tuple(shape), _RESIZE[m])))


# -- nonlinearities ---------------------------------------------------------------------

def Relu(do_stabilize: bool = False):
    """``max(x, 0)``."""
    return _plain("Relu", L.Relu())


def LeakyRelu(alpha: float, do_stabilize: bool = False):
    """``x`` for ``x > 0``, else ``alpha x``."""
    return _plain("LeakyRelu", L.LeakyRelu(alpha=float(alpha)))


def ABRelu(a: float, b: float, do_stabilize: bool = False):
    """``a min(x, 0) + b max(x, 0)``."""
    return _plain("ABRelu", L.ABRelu(a=float(a), b=float(b)))


def Abs(do_stabilize: bool = False):
    """``|x|``."""
    return _plain("Abs", L.Abs())


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0):
    """``a erf(b x) + c``."""
    return _plain("Erf", L.Erf(a=float(a), b=float(b), c=float(c)))


def Sigmoid_like():
    """The peer's erf sigmoid ``0.5 erf(x / 2.4020563531719796) + 0.5``."""
    return _plain("Sigmoid_like", L.Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5))


def Gelu(approximate: bool = False):
    """``x Phi(x)`` (exact form only)."""
    if approximate:
        raise unsupported("Gelu", "approximate=True (the tanh approximation); ntkdsl's Gelu "
                                  "is the exact x Phi(x)")
    return _plain("Gelu", L.Gelu())


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0):
    """``a sin(b x + c)``."""
    return _plain("Sin", L.Sin(a=float(a), b=float(b), c=float(c)))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0):
    """``a cos(b x + c)``."""
    return _plain("Cos", L.Cos(a=float(a), b=float(b), c=float(c)))


def Exp(a: float = 1, b: float = 1):
    """``a exp(b x)``."""
    return _plain("Exp", L.Exp(a=float(a), b=float(b)))


def Gaussian(a: float = 1, b: float = -1):
    """``a exp(b x^2)``."""
    return _plain("Gaussian", L.Gaussian(a=float(a), b=float(b)))


def Rbf(gamma: float = 1.0):
    """``sqrt(2) sin(sqrt(2 gamma) x + pi/4)`` (NNGP: the RBF kernel of its input)."""
    return _plain("Rbf", L.Rbf(gamma=float(gamma)))


def Sign():
    """``sign(x)``."""
    return _plain("Sign", L.Sign())


def Hermite(degree: int):
    """The normalised probabilists' Hermite polynomial of ``degree``."""
    return _plain("Hermite", L.Hermite(degree=int(degree)))


def Monomial(degree: int):
    """``x ** degree``."""
    return _plain("Monomial", L.Monomial(degree=int(degree)))


def RectifiedMonomial(degree: int):
    """``max(x, 0) ** degree``."""
    return _plain("RectifiedMonomial", L.RectifiedMonomial(degree=int(degree)))


def Polynomial(coef: Sequence[float]):
    """``sum_i coef[i] x**i``."""
    return _plain("Polynomial", L.Polynomial(coef=tuple(float(c) for c in coef)))


def Elementwise(fn: Callable | None = None, nngp_fn: Callable | None = None,
                d_nngp_fn: Callable | None = None):
    """A nonlinearity from Python: ``fn`` for the finite net, ``nngp_fn(cov12, var1, var2)``
    (``E[fn(u) fn(v)]``) for the kernels; ``d_nngp_fn`` defaults to ``d nngp_fn / d cov12``.
    Not expressible as a spec (``to_spec`` refuses it)."""
    if fn is None and nngp_fn is None:
        raise ValueError("Elementwise: at least one of fn and nngp_fn must be given")
    layer = KernelFnPointwise(fn=fn, nngp_fn=nngp_fn, d_nngp_fn=d_nngp_fn)
    if nngp_fn is None:
        layer = NumericalPointwise(fn=fn)
    return _plain("Elementwise", layer)


def ElementwiseNumerical(fn: Callable, deg: int, df: Callable | None = None):
    """A nonlinearity from Python whose kernels come from ntkdsl's 2-D quadrature of ``fn``
    and ``df`` (default: ``jax.grad(fn)``). ``deg`` (the peer's Gauss-Hermite degree) is
    not used: ntkdsl's rule is accurate to 1e-6 relative for variances up to 10."""
    return _plain("ElementwiseNumerical", NumericalPointwise(fn=fn, df=df))


# -- combinators ------------------------------------------------------------------------

def serial(*layers):
    """Layers one after another; params a tuple of the layers' params."""
    return StaxLayer(SerialNode(tuple(node_of(lyr) for lyr in layers)))


def parallel(*layers):
    """Layers side by side on a list of inputs (after ``FanOut``)."""
    return StaxLayer(ParallelNode(tuple(node_of(lyr) for lyr in layers)))


def repeat(layer, n: int):
    """``layer`` ``n`` times (independent params stacked on a leading axis, as the peer)."""
    if int(n) != n or n < 0:
        raise ValueError(f"repeat: n must be a non-negative integer, got {n}")
    return StaxLayer(RepeatNode(node_of(layer), int(n)))


def FanOut(num: int):
    """``num`` copies of the input."""
    return StaxLayer(FanOutNode(int(num)))


def FanInSum():
    """The sum of the inputs (independent Gaussian branches: kernels add)."""
    return StaxLayer(FanInNode("FanInSum"))


def FanInProd():
    """The elementwise product of the inputs."""
    return StaxLayer(FanInNode("FanInProd"))


def FanInConcat(axis: int = -1):
    """The inputs concatenated along the channel axis."""
    return StaxLayer(FanInNode("FanInConcat", int(axis)))


# -- layers ntkdsl does not express (yet) -----------------------------------------------

def _registered(*names: str):
    for n in names:
        if n in REGISTRY:
            return REGISTRY[n]
    return None


def GlobalSelfAttention(n_chan_out: int, n_chan_key: int, n_chan_val: int, n_heads: int,
                        linear_scaling: bool = True, W_key_std: float = 1.0,
                        W_value_std: float = 1.0, W_query_std: float = 1.0,
                        W_out_std: float = 1.0, b_std: float | None = None,
                        attention_mechanism: str = "SOFTMAX", pos_emb_type: str = "NONE",
                        pos_emb_p_norm: float = 2, pos_emb_decay_fn=None,
                        n_chan_pos_emb: int | None = None, W_pos_emb_std: float = 1.0,
                        val_pos_emb: bool = False, batch_axis: int = 0,
                        channel_axis: int = -1):
    """Multi-head self-attention over all positions (the peer's ``GlobalSelfAttention``),
    as ntkdsl's ``SelfAttention``: one weight scale for queries, keys and values, one-hot
    positional embeddings of the input's channel count added to queries and keys only."""
    name = "GlobalSelfAttention"
    _axes(name, batch_axis, channel_axis)
    cls = _registered("SelfAttention")
    if cls is None:
        raise unsupported(name, "this ntkdsl has no SelfAttention layer")
    if not W_key_std == W_value_std == W_query_std:
        raise unsupported(name, f"W_key_std={W_key_std}, W_value_std={W_value_std}, "
                                f"W_query_std={W_query_std}: ntkdsl's SelfAttention has one "
                                "W_std for queries, keys and values")
    pos = str(getattr(pos_emb_type, "name", pos_emb_type)).lower()
    if pos != "none" and (pos_emb_decay_fn is not None or n_chan_pos_emb is not None
                          or W_pos_emb_std != 1.0 or val_pos_emb):
        raise unsupported(name, "positional embeddings other than the default one-hot ones "
                                "(pos_emb_decay_fn=None, n_chan_pos_emb=None, "
                                "W_pos_emb_std=1, val_pos_emb=False)")
    b, extra = _bias(name, b_std, "ntk")
    if extra:
        raise unsupported(name, "b_std=0.0 (an unused bias); use b_std=None")
    mech = str(getattr(attention_mechanism, "name", attention_mechanism)).lower()
    try:
        layer = cls(out=int(n_chan_out), heads=int(n_heads), key_size=int(n_chan_key),
                    value_size=int(n_chan_val), mechanism=mech, W_std=float(W_key_std),
                    W_out_std=float(W_out_std), b_std=b, positional=pos,
                    linear_scaling=bool(linear_scaling))
    except LayerArgError as err:
        raise unsupported(name, err.message) from None
    return StaxLayer(Leaf(name, lambda shape: layer, "attention"))


def Aggregate(aggregate_axis=None, batch_axis: int = 0, channel_axis: int = -1,
              to_dense: Callable | None = lambda p: p, implementation: str = "DENSE"):
    """Graph aggregation ``y[j] = sum_i pattern[i, j] x[i]`` over node features
    ``(N, nodes, C)``; the graphs come as ``kernel_fn(..., pattern=(p1, p2))`` and
    ``apply_fn(..., pattern=p)`` (dense ``(N, nodes, nodes)``; ``None``: the identity)."""
    _axes("Aggregate", batch_axis, channel_axis)
    cls = _registered("Aggregate")
    if cls is None:
        raise unsupported("Aggregate", "this ntkdsl has no Aggregate layer")
    impl = str(getattr(implementation, "value", implementation)).upper()
    if impl != "DENSE":
        raise unsupported("Aggregate", f"implementation={implementation!r}: only DENSE "
                                       "(an (N, nodes, nodes) adjacency)")
    if aggregate_axis not in (None, 1, (1,), [1]):
        raise unsupported("Aggregate", f"aggregate_axis={aggregate_axis}: ntkdsl aggregates "
                                       "the one node axis of (N, nodes, channels) inputs")
    layer = cls()
    return StaxLayer(Leaf("Aggregate", lambda shape: layer, "aggregate",
                          to_dense=to_dense or (lambda p: p)))


def _refuse(name: str, why: str):
    def layer(*args, **kwargs):
        raise unsupported(name, why)

    layer.__name__ = name
    layer.__doc__ = f"Not supported: raises ``NotImplementedError`` ({why})."
    return layer


ExpNormalized = _refuse("ExpNormalized", "ntkdsl has no layer whose kernel reads normalised "
                                         "covariances")
Gabor = _refuse("Gabor", "no built-in; write exp(-x**2) * sin(x) as an activation formula "
                         "in a spec, or use stax.ElementwiseNumerical")
Index = _refuse("Index", "ntkdsl has no indexing layer")
Slice = _refuse("Slice", "ntkdsl has no slicing layer")
DotGeneral = _refuse("DotGeneral", "ntkdsl has no constant-tensor contraction layer")
