"""The empirical NTK of a compiled net, layer by layer, without a whole-net Jacobian.

The tangent kernel is a sum over parameterised layers. For a layer ``y = L(theta, x)``
inside the net, with ``g_o = d f_o / d y`` the signal backpropagated to its output,

    Theta_layer(a, b) = 1/O sum_o < d_theta L(x_a)^T g_o(a), d_theta L(x_b)^T g_o(b) >.

ntkdsl knows the layer graph, so it gets every layer's input ``x`` and every ``g_o``
(one forward pass, and one backward pass per output unit, through zero perturbations
added to each layer's output) and contracts them per layer:

* **a layer linear in its weights** (it declares ``patches``: Dense, Conv)
  ``y = s_w patches(x) W + s_b b``: ``d_W = s_w X^T g`` with ``X = patches(x)`` the
  rows its weights multiply, one per output position ``p``. The contribution is either
  ``s_w^2 sum_pq (X_a[p] . X_b[q]) (g_a[p] . g_b[q])``, Gram matrices (for a Dense on
  feature vectors, one position: ``s_w^2 (x_a . x_b) (g_a . g_b)``, the ``C_in x
  C_out`` weight gradient never formed, which makes a wide fully connected net
  cheap), or the inner products of the per-example weight gradients ``X_a^T g_a``
  (batched matmuls), whichever has fewer flops (:class:`LinearPlan`); the bias adds
  ``s_b^2`` times the Gram of the position-summed signals.
* **every other layer with parameters** (attention, norms, transposed and local
  convolutions): its own backward ``d_theta L(x_a)^T g_o(a)`` per example,
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

#: bytes of backpropagated signals computed in one batched backward (beyond, one output
#: unit after another)
SIGNALS_BUDGET = 256 * 2**20


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


def _passes(body, params, x):
    """One forward and ``O`` backward passes of one batch.

    Returns ``(outputs (n, O), {tap: (input, params, y_shape, dtype)}, {tap: (O, n,
    *y_shape[1:])})``, the last the signals d f_o / d y of every parameterised layer's
    output. The taps record inside the vjp's forward pass, so the net runs forward once.
    """
    shapes = jax.eval_shape(lambda p, xx: _forward(body, p, xx)[2], params, x)
    eps0 = {i: jnp.zeros(s.shape, s.dtype) for i, s in shapes.items()}

    def f(eps):
        _state.eps = eps
        try:
            out, rec = _record(body, params, x)
        finally:
            _state.eps = None
        return out.reshape(out.shape[0], -1), {i: rec[i][:2] for i in eps}

    out, pull, rec = jax.vjp(f, eps0, has_aux=True)
    n, n_out = out.shape
    cts = jnp.broadcast_to(jnp.eye(n_out, dtype=out.dtype)[:, None, :], (n_out, n, n_out))
    per_output = n * sum(math.prod(s.shape[1:]) for s in shapes.values()) * out.dtype.itemsize
    if n_out * per_output <= SIGNALS_BUDGET:
        # a loop (lax.map) around the backward runs it many times slower on CPU (a conv
        # net's: 12x) than the batched backward of every output at once
        signals = jax.vmap(lambda ct: pull(ct)[0])(cts)
    else:
        signals = jax.lax.map(lambda ct: pull(ct)[0], cts)
    return out, {i: (*r, shapes[i].shape, shapes[i].dtype) for i, r in rec.items()}, signals


@dataclass(frozen=True)
class LinearPlan:
    """How one layer linear in its weights (``layer.patches``) contributes, from shapes only.

    ``apply(p, x) = s_w patches(x) @ w.reshape(F, C) + s_b b`` with ``P`` output
    positions. Two exact ways to contract it, the cheaper one is taken:

    * ``"gram"``: ``s_w^2 sum_pq (X_a[p] . X_b[q]) (G_a[p] . G_b[q])`` (summed over the
      outputs ``o``): ``n1 n2 P^2 (F + O C)`` flops; for a Dense on feature vectors
      (``P = 1``) two Gram matrices, the ``F x C`` weight gradient never formed;
    * ``"grads"``: each example's weight gradient ``X_a^T G_a`` (a batched matmul,
      ``n O P F C`` flops) and their inner products (``n1 n2 O F C``), what a
      per-example Jacobian does, without vmapping the layer's backward (which turns
      a convolution into a grouped one, many times slower on CPU).

    The bias adds ``s_b^2 (sum_p G_a[p]) . (sum_q G_b[q])`` in both.
    """

    rule: str
    flops: int
    jacobian_flops: int
    bytes: int


def _linear_plan(layer, x_shape, p_shapes: dict, y_shape, n1: int, n2: int, n2_new: int,
                 n_out: int) -> LinearPlan | None:
    """The :class:`LinearPlan` of a layer, or ``None`` when it is not linear in ``{w, b}``."""
    if not (hasattr(layer, "patches") and hasattr(layer, "scales") and "w" in p_shapes
            and set(p_shapes) <= {"w", "b"} and len(y_shape) >= 2):
        return None
    c = y_shape[-1]
    f = math.prod(p_shapes["w"]) // c
    pos = math.prod(y_shape[1:-1])
    formed = (n1 + n2_new) * n_out * pos * f * c
    grads = formed + n1 * n2 * n_out * f * c
    gram = n1 * n2 * pos * pos * (f + n_out * c)
    patches = (n1 + n2_new) * pos * f
    if gram <= grads:
        return LinearPlan("gram", gram, grads, 8 * (patches + 2 * n1 * n2 * pos * pos))
    return LinearPlan("grads", grads, grads,
                      8 * (patches + (n1 + n2_new) * n_out * f * c))


def _linear_contribution(plan: LinearPlan, layer, p, xa, xb, ga, gb, same: bool):
    """One linear layer's ``(n1, n2)`` contribution (before the 1/O average)."""
    hi = jax.lax.Precision.HIGHEST
    n_out, n1 = ga.shape[:2]
    n2 = gb.shape[1]
    c = ga.shape[-1]
    f = p["w"].size // c
    sw, sb = layer.scales(f)
    # (n, P, O C): every output unit's signal at each position, as one row per position
    g1 = jnp.moveaxis(ga.reshape(n_out, n1, -1, c), 0, 2).reshape(n1, -1, n_out * c)
    g2 = g1 if same else jnp.moveaxis(gb.reshape(n_out, n2, -1, c), 0, 2).reshape(
        n2, -1, n_out * c)
    x1 = layer.patches(xa).reshape(n1, -1, f)
    x2 = x1 if same else layer.patches(xb).reshape(n2, -1, f)
    if plan.rule == "gram":
        kx = jnp.einsum("apf,bqf->apbq", x1, x2, precision=hi)
        kg = jnp.einsum("apk,bqk->apbq", g1, g2, precision=hi)
        total = sw**2 * jnp.einsum("apbq,apbq->ab", kx, kg, precision=hi)
    else:
        d1 = jnp.einsum("apf,apk->afk", x1, g1, precision=hi).reshape(n1, -1)
        d2 = d1 if same else jnp.einsum("apf,apk->afk", x2, g2, precision=hi).reshape(n2, -1)
        total = sw**2 * jnp.matmul(d1, d2.T, precision=hi)
    if "b" in p:
        s1, s2 = g1.sum(1), g2.sum(1)
        total = total + sb**2 * jnp.matmul(s1, s2.T, precision=hi)
    return total


def _per_example_grads(layer, x, p, g):
    """``d_theta L(x_a)^T g_o(a)`` for every output o and example a: leaves (O, n, ...)."""
    def one(xa, ga):
        _, pull = jax.vjp(lambda q: layer.apply(q, xa[None]), p)
        return pull(ga[None])[0]

    return jax.vmap(jax.vmap(one, (0, 0)), (None, 0))(x, g)


def _contract(tree1, tree2):
    return sum(jnp.einsum("oa...,ob...->ab", a, b, precision=jax.lax.Precision.HIGHEST)
               for a, b in zip(jax.tree_util.tree_leaves(tree1), jax.tree_util.tree_leaves(tree2)))


def _shapes(p) -> dict:
    return {k: tuple(jnp.shape(v)) for k, v in p.items()} if isinstance(p, dict) else {}


@partial(jax.jit, static_argnums=0)
def ntk_structured_tile(sa: StructuredApply, params, x1, x2):
    """One ``(n1, n2)`` tile of the structured empirical NTK (``x2=None``: x1 with itself)."""
    body, taps = _tapped(sa.net)
    out1, rec1, g1 = _passes(body, params, x1)
    rec2, g2 = (rec1, g1) if x2 is None else _passes(body, params, x2)[1:]
    n1, n_out = out1.shape
    n2 = n1 if x2 is None else x2.shape[0]
    total = jnp.zeros((n1, n2), out1.dtype)
    for i, (xa, p, y_shape, _) in rec1.items():
        layer, xb = taps[i].layer, rec2[i][0]
        ga, gb = g1[i], g2[i]
        plan = _linear_plan(layer, xa.shape, _shapes(p), y_shape, n1, n2,
                            0 if x2 is None else n2, n_out)
        if plan is not None:
            total = total + _linear_contribution(plan, layer, p, xa, xb, ga, gb, x2 is None)
        else:
            da = _per_example_grads(layer, xa, p, ga)
            db = da if x2 is None else _per_example_grads(layer, xb, p, gb)
            total = total + _contract(da, db)
    return total / n_out


@dataclass(frozen=True)
class Cost:
    """Estimates for one tile: the structured NTK's flops and bytes, and the Jacobian's flops.

    Per linear layer (:class:`LinearPlan`) the cheaper of its two contractions; per
    other parameterised layer its per-example gradients ``(n1 [+ n2]) O |theta|``
    and their inner products ``n1 n2 O |theta|``. The per-example Jacobian does the
    ``"grads"`` work for every layer, so ``flops <= jacobian_flops`` always: what
    the structured form saves is the Dense weight gradients (``P = 1``), and what
    the flop count does not show, the vmapped backward of whole-net Jacobians.
    Bytes count the signals of every layer's output and the per-layer intermediates.
    """

    flops: int
    jacobian_flops: int
    bytes: int


def structured_cost(net: Net, params, x1, x2) -> Cost | None:
    """The :class:`Cost` of the structured NTK of one tile, or ``None``.

    ``None`` when the net cannot be tapped (a layer applied more than once, a
    transformation inside the finite net).
    """
    body, taps = _tapped(net)
    seen: dict = {}

    def probe(p, x):
        out, rec, _ = _forward(body, p, x)
        seen.update({i: (xi.shape, _shapes(q), q, shape) for i, (xi, q, shape, _) in rec.items()})
        return out

    try:
        out = jax.eval_shape(probe, params, x1)
    except Exception:  # any failure to trace means "not available"
        return None
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    n2_new = 0 if x2 is None else n2
    n_out = math.prod(out.shape[1:])
    flops = jac = mem = 0
    for i, (xshape, shapes, q, yshape) in seen.items():
        mem += 8 * (n1 + n2_new) * n_out * math.prod(yshape[1:])
        plan = _linear_plan(taps[i].layer, xshape, shapes, yshape, n1, n2, n2_new, n_out)
        if plan is not None:
            flops, jac, mem = flops + plan.flops, jac + plan.jacobian_flops, mem + plan.bytes
        else:
            size = sum(math.prod(jnp.shape(v)) for v in jax.tree_util.tree_leaves(q))
            work = (n1 + n2_new) * n_out * size + n1 * n2 * n_out * size
            flops, jac = flops + work, jac + work
            mem += 8 * (n1 + n2_new) * n_out * size
    return Cost(flops, jac, mem)
