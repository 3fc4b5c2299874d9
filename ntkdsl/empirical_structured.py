"""The empirical NTK of a compiled net, layer by layer, without a whole-net Jacobian.

The tangent kernel is a sum over parameterised layers. For a layer ``y = L(theta, x)``
inside the net, with ``g_o = d f_o / d y`` the signal backpropagated to its output,

    Theta_layer(a, b) = 1/O sum_o < d_theta L(x_a)^T g_o(a), d_theta L(x_b)^T g_o(b) >.

ntkdsl knows the layer graph, so it gets every layer's input ``x`` (one forward pass)
and every ``g_o`` (one backward pass per output unit, through zero perturbations
added to each layer's output) and contracts them per layer:

* **Dense on features** ``y = s_w x W + s_b b``: ``d_W = s_w x g^T`` is an outer
  product, so the contribution is ``s_w^2 (x_a . x_b) (g_a . g_b) + s_b^2 (g_a . g_b)``:
  two Gram matrices; the ``C_in x C_out`` weight gradient is never formed. This is
  what makes a wide fully connected net's empirical NTK cheap.
* **every other layer with parameters** (Conv, Dense per position, attention, norms):
  its own backward ``d_theta L(x_a)^T g_o(a)`` per example (for a Conv, the
  patch-wise correlation of its input with ``g``: a tensor of the filter's size),
  contracted between examples. That is a Jacobian of one layer only, with the
  layer's parameters (never the whole net's) per example.

Layers without parameters cost nothing beyond the two passes. The rows of a batch
must be independent (as for every implementation of :func:`ntkdsl.empirical_ntk`).
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, fields
from functools import lru_cache, partial

import jax
import jax.numpy as jnp

from .compiler.graph import Net
from .compiler.layers import Layer
from .diagnostics import InputError

_state = threading.local()


class _Tap:
    """A leaf layer of the net that records its input and adds a perturbation to its output."""

    def __init__(self, layer, index: int):
        self.layer = layer
        self.index = index

    def __getattr__(self, name):  # combinators may read a child's attributes
        return getattr(self.layer, name)

    def apply(self, params, x):
        rec = getattr(_state, "record", None)
        y = self.layer.apply(params, x)
        if rec is not None:
            if self.index in rec:
                raise InputError("a layer is applied more than once per input (a scanned "
                                 "or shared layer): use implementation='jacobian' or 'ntvp'")
            rec[self.index] = (x, params, y.shape, y.dtype)
        eps = getattr(_state, "eps", None)
        if eps is not None and self.index in eps:
            y = y + eps[self.index]
        return y


class _Unrolled:
    """A ``repeat`` whose finite net scans over stacked params, applied iteration by iteration.

    Inside a ``lax.scan`` a tap would see one traced iteration for all of them; unrolled,
    every iteration has its own taps (the params and the arithmetic are the same).
    """

    def __init__(self, node, body, count: int, taps: list):
        self.node = node
        self.iterations = [_tap_tree(body, taps) for _ in range(count)]

    def __getattr__(self, name):
        return getattr(self.node, name)

    def apply(self, params, x):
        peeled, stacked = params
        for it, p in zip(self.iterations, peeled):
            x = it.apply(p, x)
        for j, it in enumerate(self.iterations[len(peeled):]):
            x = it.apply(jax.tree_util.tree_map(lambda a, j=j: a[j], stacked), x)
        return x


def _tap_tree(node, taps: list):
    """A copy of the layer tree with every leaf layer wrapped in a :class:`_Tap`."""
    if node is None:
        return None
    rep = node.repetition() if hasattr(node, "repetition") else None
    if rep is not None:  # a repeat (layers/repeat.py): (peeled, stacked) params
        return _Unrolled(node, rep[0], rep[1], taps)
    if getattr(node, "combine", None) is None:
        tap = _Tap(node, len(taps))
        taps.append(tap)
        return tap
    new = copy.copy(node)  # no __post_init__: the children become taps
    for f in fields(node):
        v = getattr(node, f.name)
        if isinstance(v, Layer):
            object.__setattr__(new, f.name, _tap_tree(v, taps))
        elif isinstance(v, tuple) and any(isinstance(e, Layer) for e in v):
            object.__setattr__(new, f.name, tuple(_tap_tree(e, taps) if isinstance(e, Layer)
                                                  else e for e in v))
    return new


@lru_cache(maxsize=64)
def _tapped(net: Net):
    taps: list = []
    return _tap_tree(net.body, taps), tuple(taps)


@dataclass(frozen=True)
class StructuredApply:
    """The structured empirical NTK's view of a net (hashable: a stable jit key)."""

    net: Net


def _record(body, params, x):
    _state.record = {}
    try:
        out = body.apply(params, x)
        return out, _state.record
    finally:
        _state.record = None


def _forward(body, params, x):
    """``(outputs (n, O), {tap: (input, params)}, {tap: zero perturbation})`` of one batch."""
    out, rec = _record(body, params, x)
    used = {i: r for i, r in rec.items() if jax.tree_util.tree_leaves(r[1])}
    eps0 = {i: jnp.zeros(shape, dtype) for i, (_, _, shape, dtype) in used.items()}
    return out.reshape(out.shape[0], -1), used, eps0


def _signals(body, params, x, eps0):
    """``{tap: (O, n, *y_shape[1:])}``: d f_o / d y of every parameterised layer's output."""
    def f(eps):
        _state.eps = eps
        try:
            out = body.apply(params, x)
        finally:
            _state.eps = None
        return out.reshape(out.shape[0], -1)

    out, pull = jax.vjp(f, eps0)
    n, n_out = out.shape
    cts = jnp.broadcast_to(jnp.eye(n_out, dtype=out.dtype)[:, None, :], (n_out, n, n_out))
    return jax.lax.map(lambda ct: pull(ct)[0], cts)


def _gram_rule(layer, x, p) -> bool:
    """Dense on feature vectors: its contribution is a product of two Gram matrices."""
    return (getattr(layer, "spec_name", None) == "Dense" and x.ndim == 2
            and set(p) <= {"w", "b"} and hasattr(layer, "scales"))


def _per_example_grads(layer, x, p, g):
    """``d_theta L(x_a)^T g_o(a)`` for every output o and example a: leaves (O, n, ...)."""
    def one(xa, ga):
        _, pull = jax.vjp(lambda q: layer.apply(q, xa[None]), p)
        return pull(ga[None])[0]

    return jax.vmap(jax.vmap(one, (0, 0)), (None, 0))(x, g)


def _contract(tree1, tree2):
    return sum(jnp.einsum("oa...,ob...->ab", a, b, precision=jax.lax.Precision.HIGHEST)
               for a, b in zip(jax.tree_util.tree_leaves(tree1), jax.tree_util.tree_leaves(tree2)))


@partial(jax.jit, static_argnums=0)
def ntk_structured_tile(sa: StructuredApply, params, x1, x2):
    """One ``(n1, n2)`` tile of the structured empirical NTK (``x2=None``: x1 with itself)."""
    body, taps = _tapped(sa.net)
    hi = jax.lax.Precision.HIGHEST
    out1, rec1, eps1 = _forward(body, params, x1)
    g1 = _signals(body, params, x1, eps1)
    if x2 is None:
        rec2, g2 = rec1, g1
    else:
        _, rec2, eps2 = _forward(body, params, x2)
        g2 = _signals(body, params, x2, eps2)
    n_out = out1.shape[1]
    total = jnp.zeros((x1.shape[0], (x1 if x2 is None else x2).shape[0]), out1.dtype)
    for i, (xa, p, _, _) in rec1.items():
        layer, xb = taps[i].layer, rec2[i][0]
        ga, gb = g1[i], g2[i]
        if _gram_rule(layer, xa, p):
            sw, sb = layer.scales(p["w"].shape[0])
            gg = jnp.einsum("oad,obd->ab", ga, gb, precision=hi)
            total = total + sw**2 * jnp.matmul(xa, xb.T, precision=hi) * gg
            if "b" in p:
                total = total + sb**2 * gg
        else:
            da = _per_example_grads(layer, xa, p, ga)
            db = da if x2 is None else _per_example_grads(layer, xb, p, gb)
            total = total + _contract(da, db)
    return total / n_out


def structured_cost(net: Net, params, x1, x2) -> tuple[int, int] | None:
    """``(flops, bytes)`` estimates of the structured NTK of one tile, or ``None``.

    ``None`` when the net cannot be tapped (a layer applied more than once, a
    transformation inside the finite net). Flops count the contractions: for a
    Dense on features ``n1 n2 (C_in + O C_out)``, for any other parameterised layer
    ``n1 n2 O |theta|``; bytes the per-example layer gradients ``(n1 + n2) O |theta|``
    and the signals of every layer's output.
    """
    body, taps = _tapped(net)
    seen: dict = {}

    def probe(p, x):
        out, rec, _ = _forward(body, p, x)
        seen.update({i: (xi.shape, {k: v.shape for k, v in jax.tree_util.tree_leaves_with_path(q)},
                         shape) for i, (xi, q, shape, _) in rec.items()})
        return out

    try:
        out = jax.eval_shape(probe, params, x1)
    except Exception:  # any failure to trace means "not available"
        return None
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    n_out = math.prod(out.shape[1:])
    flops = 0
    mem = 0
    for i, (xshape, leaves, yshape) in seen.items():
        ny = math.prod(yshape[1:])
        mem += (n1 + n2) * n_out * ny
        layer = taps[i].layer
        gram = (getattr(layer, "spec_name", None) == "Dense" and len(xshape) == 2
                and hasattr(layer, "scales"))
        if gram:
            flops += n1 * n2 * (xshape[-1] + n_out * ny)
        else:
            size = sum(math.prod(v) for v in leaves.values())
            flops += n1 * n2 * n_out * size
            mem += (n1 + n2) * n_out * size
    return flops, mem * 8
