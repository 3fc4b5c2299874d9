"""Finite-width kernels and Taylor expansions of a network in its parameters.

* :func:`empirical_ntk`: the tangent kernel ``sum over params of J(x1) J(x2)^T``
  of one finite network, averaged over the output units, so that it is
  comparable with the analytic per-output NTK. Three implementations that agree
  to rounding: ``"jacobian"`` (per-example Jacobians, contracted),
  ``"ntvp"`` (NTK-vector products, a ``jvp`` of a ``vjp``, which never forms
  a Jacobian: it holds one parameter-sized vector per row of an ``x2`` tile)
  and ``"structured"`` (layer by layer from the net's graph, in
  ``empirical_structured.py``: Gram matrices instead of Dense weight gradients).
* :func:`empirical_nngp`: for a compiled net, the kernel of the readout's
  inputs (the exact expectation of the outputs' product over the readout
  weights, given this network's features); for a bare ``apply_fn``, the
  outputs' product for these parameters (one sample of the NNGP).
* :func:`monte_carlo_kernel`: NNGP and NTK averaged over random inits, the
  check of the analytic kernels against finite networks.
* :func:`linearize` and :func:`taylor_expand`: ``f(params0) + J (params -
  params0) + ...`` computed with ``jax.jvp`` (no Jacobian stored).

``apply_fn(params, x)`` must treat the rows of ``x`` independently (as every
net built by ntkdsl does): the implementations differentiate one row at a
time. Pass a stable function (a module-level function or ``model.apply``),
not a fresh lambda per call, so the jitted tiles are compiled once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._x64 import float64
from .compiler.graph import Net
from .compiler.network import apply, init
from .diagnostics import InputError

ApplyFn = Callable[[Any, jax.Array], jax.Array]

IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")

#: memory the automatic choices aim to stay under, in bytes
MEMORY_BUDGET = 512 * 2**20


# -- helpers ------------------------------------------------------------------

def _as_inputs(x, what: str) -> jax.Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if x.ndim < 2:
        raise InputError(f"expected {what} with a batch axis, (N, *input_shape), got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_pair(x1, x2) -> tuple[jax.Array, jax.Array | None]:
    x1 = _as_inputs(x1, "x1")
    if x2 is None:
        return x1, None
    x2 = _as_inputs(x2, "x2")
    if x1.shape[1:] != x2.shape[1:]:
        raise InputError(f"expected x2 of shape (N2, {', '.join(map(str, x1.shape[1:]))}) "
                         f"like x1, got {tuple(x2.shape)}")
    return x1, x2


def _n_params(params) -> int:
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def _n_outputs(apply_fn: ApplyFn, params, x: jax.Array) -> int:
    out = jax.eval_shape(apply_fn, params, x[:1])
    return math.prod(out.shape[1:])


def _row(apply_fn: ApplyFn, p, xi: jax.Array) -> jax.Array:
    """The outputs of one input row, flattened: ``(O,)``."""
    return apply_fn(p, xi[None])[0].reshape(-1)


def _tiles(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _symmetrize(k: jax.Array) -> jax.Array:
    # rounding in the contractions can break exact symmetry by an ulp
    return (k + k.T) / 2


def _tiled(tile_fn, x1: jax.Array, x2: jax.Array | None, batch_size: int | None) -> jax.Array:
    """Assemble ``(n1, n2)`` from ``tile_fn(x1_tile, x2_tile_or_None)``.

    With ``x2 is None`` the kernel is symmetric: each off-diagonal tile is
    computed once and mirrored; diagonal tiles get ``None`` for ``x2``.
    """
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size is None or batch_size >= max(n1, n2):
        return tile_fn(x1, x2) if x2 is not None else _symmetrize(tile_fn(x1, None))
    rows = _tiles(n1, batch_size)
    cols = rows if x2 is None else _tiles(n2, batch_size)
    blocks: dict[tuple[int, int], jax.Array] = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if x2 is None and j < i:
                blocks[i, j] = blocks[j, i].T
            elif x2 is None and i == j:
                blocks[i, j] = _symmetrize(tile_fn(x1[r], None))
            else:
                blocks[i, j] = tile_fn(x1[r], (x1 if x2 is None else x2)[c])
    return jnp.block([[blocks[i, j] for j in range(len(cols))] for i in range(len(rows))])


# -- empirical NTK ------------------------------------------------------------

def _per_example_jacobian(apply_fn: ApplyFn, params, x: jax.Array):
    """Leaves ``(n, O, P_leaf)``: d outputs / d params, one input row at a time."""
    jac = jax.vmap(jax.jacrev(partial(_row, apply_fn)), (None, 0))(params, x)
    return [j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree_util.tree_leaves(jac)]


@partial(jax.jit, static_argnums=0)
def _ntk_jacobian_tile(apply_fn: ApplyFn, params, x1: jax.Array, x2: jax.Array | None):
    j1 = _per_example_jacobian(apply_fn, params, x1)
    j2 = j1 if x2 is None else _per_example_jacobian(apply_fn, params, x2)
    n_out = j1[0].shape[1] if j1 else 1
    total = sum(jnp.einsum("aop,bop->ab", a, b) for a, b in zip(j1, j2))
    return total / n_out


@partial(jax.jit, static_argnums=0)
def _ntk_ntvp_tile(apply_fn: ApplyFn, params, x1: jax.Array, x2: jax.Array | None):
    x2 = x1 if x2 is None else x2
    out1, push = jax.linearize(lambda p: apply_fn(p, x1), params)
    n1, n_out = out1.shape[0], math.prod(out1.shape[1:])

    def column(o):
        # one output unit o for every row b of x2: Theta[:, b] restricted to unit o
        def one(xb):
            fb, pull = jax.vjp(lambda p: _row(apply_fn, p, xb), params)
            (v,) = pull(jax.nn.one_hot(o, n_out, dtype=fb.dtype))
            return push(v).reshape(n1, n_out)[:, o]

        return jax.vmap(one)(x2).T  # (n1, n2)

    # lax.map over output units keeps one parameter-sized vector per row of x2 alive
    return jnp.sum(jax.lax.map(column, jnp.arange(n_out)), axis=0) / n_out


def _net_from(apply_fn) -> Net | None:
    """The layer graph behind ``apply_fn`` (``model.apply`` or :class:`NetApply`), if any."""
    if isinstance(apply_fn, NetApply):
        return apply_fn.net
    owner = getattr(apply_fn, "__self__", None)
    net = getattr(owner, "net", None)
    if isinstance(net, Net) and getattr(apply_fn, "__name__", None) == "apply":
        return net
    return None


def _choose_structured(net: Net | None, params, x1, x2, implementation: str,
                       batch_size: int | None):
    """``(True, batch_size)`` when the structured NTK is to be used, else ``(False, None)``.

    "auto" takes it when the net is known and its estimated flops (per layer, the
    cheaper of a Gram-matrix and a per-example-gradient contraction,
    :func:`empirical_structured.structured_cost`) are at most those of forming and
    contracting per-example Jacobians, which holds for every net that can be tapped:
    per layer the structured form can always do the Jacobian's work, as batched
    matmuls instead of a vmapped whole-net backward.
    """
    from .empirical_structured import structured_cost

    if net is None:
        if implementation == "structured":
            raise InputError("implementation='structured' needs the net's layer graph: pass "
                             "model.apply (or call model.empirical_ntk), not a function")
        return False, None
    cost = structured_cost(net, params, x1, x2)
    if cost is None:
        if implementation == "structured":
            raise InputError("implementation='structured' is not available for this net (a "
                             "layer is applied more than once): use 'jacobian' or 'ntvp'")
        return False, None
    mem = cost.bytes
    if implementation == "auto" and cost.flops > cost.jacobian_flops:
        return False, None
    if batch_size is None and mem > MEMORY_BUDGET:
        n = x1.shape[0] + (0 if x2 is None else x2.shape[0])
        batch_size = max(1, int(n * MEMORY_BUDGET / mem) // 2)
    return True, batch_size


def _choose(apply_fn: ApplyFn, params, x1, x2, implementation: str, batch_size: int | None):
    """The implementation and row tile size: the Jacobian while it fits the budget."""
    if implementation not in IMPLEMENTATIONS:
        raise InputError(f"expected implementation in {IMPLEMENTATIONS}, got {implementation!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size <= 0):
        raise InputError(f"expected batch_size a positive int or None, got {batch_size!r}")
    if implementation in ("auto", "structured"):
        use, size = _choose_structured(_net_from(apply_fn), params, x1, x2, implementation,
                                       batch_size)
        if use:
            return "structured", size
    n = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    itemsize = jnp.dtype(jnp.result_type(float)).itemsize
    n_par = _n_params(params)
    n_out = _n_outputs(apply_fn, params, x1)
    per_row_jac = n_out * n_par * itemsize
    if implementation == "auto":
        rows = n if batch_size is None else min(2 * batch_size, n)
        implementation = "jacobian" if rows * per_row_jac <= MEMORY_BUDGET else "ntvp"
    if batch_size is None:
        per_row = per_row_jac if implementation == "jacobian" else n_par * itemsize
        if n * per_row > MEMORY_BUDGET:
            batch_size = max(1, MEMORY_BUDGET // (2 * per_row))
    return implementation, batch_size


@float64
def empirical_ntk(apply_fn: ApplyFn, params, x1, x2=None, *, implementation: str = "auto",
                  batch_size: int | None = None) -> jax.Array:
    """The tangent kernel of a finite network, averaged over its output units.

    ``Theta[a, b] = 1/O sum_o sum_params d f_o(x1[a]) / d p * d f_o(x2[b]) / d p``,
    comparable with the analytic per-output NTK. Works under ``jax.jit`` and
    ``jax.vmap`` over ``params`` (ensembles).

    Arguments:
        apply_fn: ``apply_fn(params, x) -> (n, *out)``, e.g. ``model.apply``.
        params: the parameters (a pytree).
        x1: inputs ``(n1, *input_shape)``.
        x2: inputs ``(n2, *input_shape)``; ``None`` means ``x1`` (symmetric;
            each off-diagonal tile is computed once).
        implementation: ``"jacobian"`` (per-example Jacobians contracted;
            memory ~ rows * O * P), ``"ntvp"`` (jvp of vjp; never forms the
            Jacobian, memory ~ rows * P), ``"structured"`` (layer by layer from
            the net's graph: Gram matrices of each Dense layer's inputs and
            backpropagated signals, per-layer gradients for the others; needs
            ``model.apply`` or a :class:`NetApply`, see
            ``ntkdsl/empirical_structured.py``) or ``"auto"``: structured when
            the net is known and its estimated flops are at most the Jacobian's,
            else the Jacobian while it fits in ``MEMORY_BUDGET``, else ntvp.
        batch_size: rows per tile (of x1 and of x2); ``None``: one tile, or
            the largest that fits the budget.

    Returns:
        ``(n1, n2)`` array.
    """
    x1, x2 = _check_pair(x1, x2)
    implementation, batch_size = _choose(apply_fn, params, x1, x2, implementation, batch_size)
    if implementation == "structured":
        from .empirical_structured import StructuredApply, ntk_structured_tile

        tile = partial(ntk_structured_tile, StructuredApply(_net_from(apply_fn)), params)
        return _tiled(tile, x1, x2, batch_size)
    tile = _ntk_jacobian_tile if implementation == "jacobian" else _ntk_ntvp_tile
    return _tiled(partial(tile, apply_fn, params), x1, x2, batch_size)


# -- empirical NNGP -----------------------------------------------------------

def _outputs_kernel(apply_fn: ApplyFn, params, x1: jax.Array, x2: jax.Array | None):
    f1 = apply_fn(params, x1)
    f1 = f1.reshape(f1.shape[0], -1)
    f2 = f1 if x2 is None else apply_fn(params, x2).reshape(x2.shape[0], -1)
    return f1 @ f2.T / f1.shape[1]


@dataclass(frozen=True)
class NetApply:
    """``apply(net, params, x)`` as a hashable function (a stable jit key)."""

    net: Net

    def __call__(self, params, x):
        return apply(self.net, params, x)


def _net_of(model) -> Net:
    net = getattr(model, "net", model)
    if not isinstance(net, Net):
        raise InputError(f"expected a Model or a Net, got {type(model).__name__}")
    return net


def _readout_kernel(net: Net, params, x1: jax.Array, x2: jax.Array | None):
    layers = net.body.layers
    if not layers or getattr(layers[-1], "readout_kernel", None) is None:
        last = layers[-1].describe() if layers else "nothing"
        raise InputError(f"the readout kernel needs a net ending in Dense, got {last}; "
                         "use mode='outputs'")
    readout = layers[-1]
    features = NetApply(Net(net.name, net.params, replace(net.body, layers=layers[:-1])))
    p = tuple(params)[:-1]
    g1 = features(p, x1)
    g2 = g1 if x2 is None else features(p, x2)
    return readout.readout_kernel(g1, g2)


@float64
def empirical_nngp(fn, params, x1, x2=None, *, mode: str | None = None,
                   batch_size: int | None = None) -> jax.Array:
    """An NNGP kernel of one finite network.

    Two meanings, chosen by ``mode``:

    * ``"readout"`` (the default for a Model or Net ending in ``Dense``): the
      kernel of the readout's inputs, ``W_std^2 * mean_c g_c(x1) g_c(x2) +
      b_std^2`` with ``g`` the features the last Dense sees (averaged over
      positions too when it acts per position). This is the exact expectation
      of ``f_i(x1) f_i(x2)`` over the readout's random weights given this
      network's features, and it tends to the analytic NNGP as the hidden
      widths grow, from one init. Use it to follow the NNGP kernel during
      training (it is what readout-only training sees).
    * ``"outputs"`` (the only choice for a bare ``apply_fn``): ``f(x1) f(x2)^T
      / O`` for these params, averaged over output units: one Monte Carlo
      sample of the NNGP; average it over inits with
      :func:`monte_carlo_kernel`.

    Arguments:
        fn: a :class:`ntkdsl.Model` or ``Net``, or ``apply_fn(params, x)``.
        params: the network's parameters.
        x1: inputs ``(n1, *input_shape)``.
        x2: inputs ``(n2, *input_shape)``; ``None`` means ``x1``.
        mode: ``"readout"`` or ``"outputs"`` (see above).
        batch_size: rows per tile; ``None``: one tile.

    Returns:
        ``(n1, n2)`` array.
    """
    x1, x2 = _check_pair(x1, x2)
    is_net = not callable(fn) or isinstance(fn, Net)
    if mode is None:
        mode = "readout" if is_net else "outputs"
    if mode not in ("readout", "outputs"):
        raise InputError(f"expected mode 'readout' or 'outputs', got {mode!r}")
    if mode == "readout":
        if not is_net:
            raise InputError("mode='readout' needs a Model or Net (to find the readout), "
                             "got a function")
        tile = partial(_readout_kernel, _net_of(fn), params)
    else:
        apply_fn = NetApply(_net_of(fn)) if is_net else fn
        tile = partial(_outputs_kernel, apply_fn, params)
    return _tiled(tile, x1, x2, batch_size)


# -- Monte Carlo over random inits --------------------------------------------

def _result(get, values: dict):
    if isinstance(get, str):
        return values[get]
    from .result import Kernel

    return Kernel(**{k: values.get(k) for k in ("nngp", "ntk")})


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _mc_sums(apply_fn: NetApply, gets: tuple[str, ...], implementation: str, nngp_from: str,
             n_samples: int, chunk: int, key, x1, x2):
    shape = tuple(x1.shape[1:])
    n_chunks = -(-n_samples // chunk)
    keys = jax.random.split(key, n_chunks * chunk)  # raw (n, 2) or typed (n,) keys
    keys = keys.reshape(n_chunks, chunk, *keys.shape[1:])
    weights = (jnp.arange(n_chunks * chunk) < n_samples).reshape(n_chunks, chunk)

    def one(k):
        params = init(apply_fn.net, k, shape)
        out = {}
        if "nngp" in gets and nngp_from == "readout":
            out["nngp"] = _readout_kernel(apply_fn.net, params, x1, x2)
        elif "nngp" in gets:
            out["nngp"] = _outputs_kernel(apply_fn, params, x1, x2)
        if "ntk" in gets:
            impl = "jacobian" if implementation == "auto" else implementation
            tile = _ntk_jacobian_tile if impl == "jacobian" else _ntk_ntvp_tile
            out["ntk"] = tile(apply_fn, params, x1, x2)
        return out

    def step(total, kw):
        ks, w = kw
        vals = jax.vmap(one)(ks)
        return {g: total[g] + jnp.tensordot(w.astype(vals[g].dtype), vals[g], 1)
                for g in gets}, None

    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    zero = {g: jnp.zeros((n1, n2), jnp.result_type(x1.dtype, float)) for g in gets}
    total, _ = jax.lax.scan(step, zero, (keys, weights))
    return {g: v / n_samples for g, v in total.items()}


def _vmap_is_slow(net: Net) -> bool:
    """Whether a layer of ``net`` becomes slow when vmapped over parameters (convolutions)."""
    return any(layer.combine is None and layer.vmap_is_slow for layer in net.walk())


@float64
def monte_carlo_kernel(model, key, n_samples: int, x1, x2=None, get=("nngp", "ntk"), *,
                       batch_size: int | None = None, implementation: str = "auto",
                       nngp_from: str = "outputs"):
    """NNGP and NTK of the finite network, averaged over random inits.

    ``nngp`` is the mean over inits and output units of ``f(x1) f(x2)^T``
    (or, with ``nngp_from="readout"``, of the readout kernel of
    :func:`empirical_nngp`: the same expectation with the readout weights
    integrated out exactly, so far fewer inits reach a given accuracy);
    ``ntk`` the mean over inits of :func:`empirical_ntk`. Both converge to
    the analytic per-output kernels as the widths and ``n_samples`` grow:
    the finite-width bias is O(1/width) and the spread over inits of one
    sample is O(1/sqrt(width)) for the NTK and the readout NNGP, O(1) for
    the outputs NNGP (divided by sqrt(n_samples * outputs)).

    Arguments:
        model: a :class:`ntkdsl.Model` (or a ``Net``).
        key: a ``jax.random`` key; each init gets its own split of it.
        n_samples: number of random inits.
        x1: inputs ``(n1, *input_shape)``; the params are made for
            ``x1.shape[1:]``.
        x2: inputs ``(n2, *input_shape)``; ``None`` means ``x1``.
        get: ``"nngp"``, ``"ntk"`` or a tuple of them.
        batch_size: inits evaluated at once (vmapped); memory grows with it.
            ``None`` picks one that fits ``MEMORY_BUDGET`` (1 for a net with
            convolutions on CPU, where vmapping them over params is slow).
        implementation: of the empirical NTK (see :func:`empirical_ntk`).
        nngp_from: ``"outputs"`` or ``"readout"`` (a net ending in Dense).

    Returns:
        With a string ``get``, an ``(n1, n2)`` array; with a tuple, a
        :class:`ntkdsl.Kernel` with ``nngp`` and ``ntk`` (``None`` when not
        asked for).
    """
    net = _net_of(model)
    gets = (get,) if isinstance(get, str) else tuple(get)
    if not gets or any(g not in ("nngp", "ntk") for g in gets):
        raise InputError(f"expected get 'nngp', 'ntk' or a tuple of them, got {get!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0:
        raise InputError(f"expected n_samples a positive int, got {n_samples!r}")
    if implementation not in IMPLEMENTATIONS:
        raise InputError(f"expected implementation in {IMPLEMENTATIONS}, got {implementation!r}")
    if nngp_from not in ("outputs", "readout"):
        raise InputError(f"expected nngp_from 'outputs' or 'readout', got {nngp_from!r}")
    if nngp_from == "readout":
        layers = net.body.layers
        if not layers or getattr(layers[-1], "readout_kernel", None) is None:
            raise InputError("nngp_from='readout' needs a net ending in Dense, got "
                             f"{layers[-1].describe() if layers else 'nothing'}")
    x1, x2 = _check_pair(x1, x2)
    apply_fn = NetApply(net)
    shape = tuple(x1.shape[1:])
    params = jax.eval_shape(lambda k: init(net, k, shape), jax.random.key(0))
    jax.eval_shape(apply_fn, params, x1[:1])  # InputError here, not inside the scan
    itemsize = jnp.dtype(jnp.result_type(float)).itemsize
    n = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    n_par = _n_params(params)
    n_out = _n_outputs(apply_fn, params, x1)
    if implementation == "auto":
        fits = n * n_out * n_par * itemsize <= MEMORY_BUDGET // 2
        implementation = "jacobian" if fits else "ntvp"
    if batch_size is None:
        per_init = n_par * itemsize * (2 + (n * n_out if "ntk" in gets else 0))
        batch_size = int(max(1, min(n_samples, MEMORY_BUDGET // per_init)))
        if _vmap_is_slow(net) and jax.default_backend() == "cpu":
            # vmapped over params, a convolution becomes a grouped convolution,
            # many times slower on CPU than one init after another
            batch_size = 1
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InputError(f"expected batch_size a positive int or None, got {batch_size!r}")
    batch_size = min(batch_size, n_samples)
    values = _mc_sums(apply_fn, gets, implementation, nngp_from, n_samples, batch_size, key,
                      x1, x2)
    return _result(get, values)


# -- Taylor expansions in the parameters --------------------------------------

def _sub(a, b):
    return jax.tree_util.tree_map(lambda u, v: u - v, a, b)


def linearize(apply_fn: ApplyFn, params0) -> ApplyFn:
    """The first-order Taylor expansion of a network around ``params0``.

    ``f_lin(params, x) = f(params0, x) + J(params0, x) (params - params0)``,
    computed with one ``jax.jvp`` (the Jacobian is never formed). ``f_lin`` is
    pure: jit it, differentiate it, train it (paper eq. 6-8).

    Arguments:
        apply_fn: ``apply_fn(params, x)``.
        params0: the expansion point (e.g. the initial parameters).

    Returns:
        ``f_lin(params, x)``.
    """
    def f_lin(params, x):
        f0, df = jax.jvp(lambda p: apply_fn(p, x), (params0,), (_sub(params, params0),))
        return f0 + df

    return f_lin


def taylor_expand(apply_fn: ApplyFn, params0, degree: int) -> ApplyFn:
    """The Taylor expansion of a network in its parameters, to ``degree``.

    ``sum_{k <= degree} D^k f(params0)[delta, ..., delta] / k!`` with
    ``delta = params - params0``, by nested ``jax.jvp`` (cost grows like
    ``2**degree`` forward passes; meant for degree 1 or 2).

    Arguments:
        apply_fn: ``apply_fn(params, x)``.
        params0: the expansion point.
        degree: a non-negative int; 0 gives ``f(params0, x)``, 1 is
            :func:`linearize`.

    Returns:
        ``f_k(params, x)``.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise InputError(f"expected degree a non-negative int, got {degree!r}")

    def f_k(params, x):
        delta = _sub(params, params0)

        def deriv(k):
            # the k-th directional derivative along delta, as a function of the point p
            if k == 0:
                return lambda p: apply_fn(p, x)
            inner = deriv(k - 1)
            return lambda p: jax.jvp(inner, (p,), (delta,))[1]

        return sum(deriv(k)(params0) / math.factorial(k) for k in range(degree + 1))

    return f_k
