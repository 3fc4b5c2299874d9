"""The stax front end's nodes: how a stax net becomes ntkdsl's layer graph.

A compat layer is a tree of :class:`Node` objects. Each node does three things:

* ``build(streams)``: appends its layers to the layer graph under construction
  (:class:`Streams`: the layers so far, and after a ``FanOut`` the open branches),
  so a whole stax net becomes one :class:`~ntkdsl.compiler.graph.Net` whose kernels
  the compiler computes exactly as for a spec;
* ``init(key, shape)`` / ``apply(params, x, **kwargs)``: the finite network with
  neural-tangents' parameter structure (``(W, b)`` per affine layer, ``()`` per
  parameter-free layer, a tuple per ``serial`` / ``parallel``), calling the native
  layer's own ``init`` / ``apply`` with the parameters converted.

A net is built for one input shape (a few peer layers, ``ImageResize`` and
``LayerNorm(axis=...)``, need it to choose the native layer), and checked by
the same static checks a spec gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from ..compiler.layers import Layer, Serial
from ..compiler.layers.combinators import Concat, Product, Sum

Shape = tuple[int, ...]


class CompatError(NotImplementedError):
    """A stax net (or a use of it) that ntkdsl cannot express exactly."""


@dataclass(frozen=True)
class Streams:
    """The graph under construction: ``layers`` so far, and the open branches after a
    ``FanOut`` (``None`` while there is one stream); ``shapes``: per stream, no batch axis."""

    layers: tuple[Layer, ...]
    shapes: tuple[Shape, ...]
    branches: tuple[tuple[Layer, ...], ...] | None = None

    @property
    def single(self) -> bool:
        return self.branches is None


def _split(key, n: int):
    # jax 0.4's threefry bits (as the peer's stax.serial / parallel split their keys)
    with jax.threefry_partitionable(False):
        return jax.random.split(key, max(n, 1))


def _batch_shape(shape) -> Shape:
    return tuple(int(s) for s in shape)


class Node:
    """A stax layer: ``name`` (the peer's, for messages), graph building, init and apply."""

    def build(self, st: Streams) -> Streams:
        raise NotImplementedError

    def init(self, key, shape):
        raise NotImplementedError

    def apply(self, params, x, **kwargs):
        raise NotImplementedError


# -- leaves ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Leaf(Node):
    """One peer layer mapped onto one native layer (``None``: the identity).

    ``make(shape)`` returns the native layer for inputs of ``shape`` (no batch axis).
    ``kind``: ``"plain"`` (params ``()``), ``"affine"`` (params ``(W, b)``, ``b`` None
    without bias; ``bias_ndim`` axes of the native bias), ``"dropout"`` (params ``()``,
    ``apply`` takes ``rng``), ``"aggregate"`` (params ``()``, ``apply`` takes
    ``pattern``), ``"attention"`` (the peer's six-tuple, see
    :func:`_attention_init`). ``extra_bias``: the peer keeps a bias array that does not
    enter (``b_std=0.0`` in the ntk parameterisation).
    """

    name: str
    make: Callable[[Shape], Layer | None]
    kind: str = "plain"
    bias_ndim: int = 1
    extra_bias: bool = False
    keep: float = 1.0  # dropout: the keep probability
    to_dense: Callable | None = None  # aggregate: the peer's pattern -> dense adjacency
    #: the peer's pooling layers report a batch of -1 (any) as 0 in init_fn's output shape
    zero_batch: bool = False

    def layer(self, shape: Shape) -> Layer | None:
        return self.make(tuple(shape))

    def build(self, st: Streams) -> Streams:
        if not st.single:
            raise CompatError(f"{self.name} is applied to {len(st.branches)} streams (after "
                              "a FanOut); ntkdsl supports layers on a list of inputs only "
                              "inside parallel(...)")
        layer = self.layer(st.shapes[0])
        if layer is None:
            return st
        return Streams((*st.layers, layer), (layer.out_shape(st.shapes[0]),))

    def init(self, key, shape):
        shape = _batch_shape(shape)
        layer = self.layer(shape[1:])
        if layer is None:
            return shape, ()
        batch = 0 if self.zero_batch and shape[0] < 0 else shape[0]
        out = (batch, *layer.out_shape(shape[1:]))
        if self.kind == "attention":
            return out, _attention_init(layer, key, shape)
        if self.kind != "affine":
            return out, ()
        # the peer's draws, key for key: W ~ N(0, 1) from the first half of the split, b
        # from the second, scaled in the standard parameterisation; so the same key gives
        # the same params as neural-tangents
        _, p = jax.eval_shape(lambda k: layer.init(k, shape[1:]), key)
        k1, k2 = jax.random.split(key)
        w = jax.random.normal(k1, p["w"].shape)
        b = None
        if "b" in p or self.extra_bias:
            b_shape = (1,) * (len(shape) - self.bias_ndim) + (*out[len(out) - self.bias_ndim:],)
            b = jax.random.normal(k2, b_shape)
        if layer.parameterization == "standard":
            w = w * (layer.W_std / layer.fan_in(shape[1:]) ** 0.5)
            b = None if b is None else b * layer.b_std
        return out, (w, b)

    def apply(self, params, x, **kwargs):
        layer = self.layer(x.shape[1:])
        if layer is None:
            return x
        if self.kind == "affine":
            w, b = params
            p = {"w": w}
            if b is not None and not self.extra_bias:
                p["b"] = jnp.reshape(b, b.shape[b.ndim - self.bias_ndim:])
            return layer.apply(p, x)
        if self.kind == "dropout":
            return _dropout(layer, self.keep, x, kwargs.get("rng"))
        if self.kind == "aggregate":
            from ..compiler.layers.graph import adjacency_scope

            pattern = kwargs.get("pattern")
            if pattern is None:  # the peer's identity adjacency
                return x
            with adjacency_scope(jnp.asarray(self.to_dense(pattern), x.dtype)):
                return layer.apply((), x)
        if self.kind == "attention":
            q, k, v, o, b, pos = params
            p = {"wk": k, "wv": v, "wo": o}
            if q is not None:
                p["wq"] = q
            if b is not None:
                p["b"] = jnp.reshape(b, b.shape[-1:])
            if pos is not None:
                p["pos"] = jnp.reshape(pos, pos.shape[1:])
            return layer.apply(p, x)
        return layer.apply((), x)


def _attention_init(layer, key, shape):
    """``GlobalSelfAttention``'s params as the peer draws them: ``(W_Q or None, W_K, W_V,
    W_out, b or None, pos_emb or None)`` from ``split(key, 6)`` in that order."""
    _, p = jax.eval_shape(lambda k: layer.init(k, shape[1:]), key)
    kq, kk, kv, ko, kb, kp = jax.random.split(key, 6)
    q = jax.random.normal(kq, p["wq"].shape) if "wq" in p else None
    b = (jax.random.normal(kb, (1,) * (len(shape) - 1) + p["b"].shape) if "b" in p
         else None)
    pos = jax.random.normal(kp, (1, *p["pos"].shape)) if "pos" in p else None
    return (q, jax.random.normal(kk, p["wk"].shape), jax.random.normal(kv, p["wv"].shape),
            jax.random.normal(ko, p["wo"].shape), b, pos)


def _dropout(layer, keep: float, x, rng):
    if getattr(layer, "mode", "train") != "train" or keep >= 1:
        return x
    if rng is None:
        raise ValueError("Dropout in mode='train' needs a random key: call "
                         "apply_fn(params, x, rng=key)")
    with jax.threefry_partitionable(False):  # the peer's masks for the same key
        mask = jax.random.bernoulli(rng, keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros((), x.dtype))


# -- combinators ----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SerialNode(Node):
    children: tuple[Node, ...]
    name: str = "serial"

    def build(self, st: Streams) -> Streams:
        for c in self.children:
            st = c.build(st)
        return st

    def init(self, key, shape):
        params = []
        for c in self.children:  # jax.example_libraries.stax.serial's key sequence
            key, k = jax.random.split(key)
            shape, p = c.init(k, shape)
            params.append(p)
        return shape, params  # a list, as jax.example_libraries.stax.serial gives

    def apply(self, params, x, **kwargs):
        rng = kwargs.pop("rng", None)
        rngs = _split(rng, len(self.children)) if rng is not None else \
            [None] * len(self.children)
        for c, p, r in zip(self.children, params, rngs):
            x = c.apply(p, x, rng=r, **kwargs)
        return x


@dataclass(frozen=True, eq=False)
class RepeatNode(Node):
    child: Node
    n: int
    name: str = "repeat"

    def build(self, st: Streams) -> Streams:
        for _ in range(self.n):
            st = self.child.build(st)
        return st

    def init(self, key, shape):
        shape = _batch_shape(shape)
        out, _ = self.child.init(key, shape)
        if tuple(out) != shape:
            raise ValueError(f"`init_fn` produces a different output shape {out} than the "
                             f"input shape {shape}. Please use the `serial(*([layer] * n)`) "
                             "construction in this setting.")
        params = []
        for _ in range(self.n):  # the peer's scan: rng, layer_rng = split(rng)
            key, k = jax.random.split(key)
            params.append(self.child.init(k, shape)[1])
        if not params:
            return out, jax.tree_util.tree_map(lambda a: a[:0], self.child.init(key, shape)[1])
        return out, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params)

    def apply(self, params, x, **kwargs):
        def step(h, p):
            return self.child.apply(p, h, **kwargs), None

        return jax.lax.scan(step, x, params, self.n)[0]


@dataclass(frozen=True, eq=False)
class FanOutNode(Node):
    num: int
    name: str = "FanOut"

    def build(self, st: Streams) -> Streams:
        if not st.single:
            raise CompatError("FanOut applied to several streams (nested fan-outs without "
                              "a fan-in between) is not supported")
        return Streams(st.layers, st.shapes * self.num, ((),) * self.num)

    def init(self, key, shape):
        return [_batch_shape(shape)] * self.num, ()

    def apply(self, params, x, **kwargs):
        return [x] * self.num


@dataclass(frozen=True, eq=False)
class ParallelNode(Node):
    children: tuple[Node, ...]
    name: str = "parallel"

    def build(self, st: Streams) -> Streams:
        if st.single or len(st.branches) != len(self.children):
            got = 1 if st.single else len(st.branches)
            raise CompatError(f"parallel of {len(self.children)} layers needs "
                              f"{len(self.children)} input streams (from FanOut), got {got}")
        branches, shapes = [], []
        for c, b, s in zip(self.children, st.branches, st.shapes):
            out = c.build(Streams(b, (s,)))
            if not out.single:
                raise CompatError(f"a branch of parallel ({c.name}) ends with several "
                                  "streams; ntkdsl supports branches with one output")
            branches.append(out.layers)
            shapes.append(out.shapes[0])
        return Streams(st.layers, tuple(shapes), tuple(branches))

    def init(self, key, shape):
        outs, params = [], []
        for c, k, s in zip(self.children, _split(key, len(self.children)), shape):
            o, p = c.init(k, s)
            outs.append(o)
            params.append(p)
        return outs, tuple(params)

    def apply(self, params, x, **kwargs):
        rng = kwargs.pop("rng", None)
        rngs = _split(rng, len(self.children)) if rng is not None else \
            [None] * len(self.children)
        return [c.apply(p, xi, rng=r, **kwargs)
                for c, p, xi, r in zip(self.children, params, x, rngs)]


_FAN_IN = {"FanInSum": Sum, "FanInConcat": Concat, "FanInProd": Product}


@dataclass(frozen=True, eq=False)
class FanInNode(Node):
    name: str  # FanInSum, FanInConcat, FanInProd
    axis: int = -1

    def build(self, st: Streams) -> Streams:
        if st.single:
            raise CompatError(f"{self.name} needs several input streams (after FanOut and "
                              "parallel), got one")
        nd = len(st.shapes[0])
        if self.name == "FanInConcat" and self.axis not in (-1, nd - 1):
            raise CompatError(f"FanInConcat(axis={self.axis}) concatenates along a "
                              "non-channel axis; ntkdsl's Concat joins the channel axis "
                              "(axis=-1) only")
        paths = tuple(Serial(layers=b) if b else None for b in st.branches)
        layer = _FAN_IN[self.name](paths=paths)
        return Streams((*st.layers, layer), (layer.out_shape(st.shapes[0]),))

    def init(self, key, shapes):
        shapes = [_batch_shape(s) for s in shapes]
        if self.name == "FanInConcat":
            ax = self.axis % len(shapes[0])
            out = list(shapes[0])
            out[ax] = sum(s[ax] for s in shapes)
            return tuple(out), ()
        return shapes[0], ()

    def apply(self, params, x, **kwargs):
        if self.name == "FanInSum":
            return sum(x[1:], x[0])
        if self.name == "FanInProd":
            out = x[0]
            for xi in x[1:]:
                out = out * xi
            return out
        return jnp.concatenate(x, axis=self.axis)


@dataclass(frozen=True, eq=False)
class NetNode(Node):
    """A compiled spec's whole net as one stax layer (``Model.stax()``): native params."""

    net: Any
    name: str = "Model"

    def build(self, st: Streams) -> Streams:
        if not st.single:
            raise CompatError("a Model's net applied to several streams")
        body = self.net.body
        return Streams((*st.layers, *body.layers), (body.out_shape(st.shapes[0]),))

    def init(self, key, shape):
        from ..compiler.network import init

        shape = _batch_shape(shape)
        params = init(self.net, key, shape[1:])
        return (shape[0], *self.net.body.out_shape(shape[1:])), params

    def apply(self, params, x, **kwargs):
        from ..compiler.network import apply

        return apply(self.net, params, x)


def unsupported(name: str, why: str = "") -> CompatError:
    """The error for a peer layer or option that ntkdsl cannot express."""
    return CompatError(f"stax.{name} is not supported by ntkdsl" + (f": {why}" if why else ""))


@dataclass(frozen=True)
class Built:
    """A stax net built for one input shape: the native net and its output shape."""

    net: Any
    out_shape: Shape
    python_layers: tuple[str, ...] = field(default=())


def as_tuple(v: Sequence[int] | int) -> tuple[int, ...]:
    """An int or a sequence of ints (a stax window, stride or shape) as a tuple of ints."""
    return tuple(int(a) for a in v) if isinstance(v, Sequence) else (int(v),)
