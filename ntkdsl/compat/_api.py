"""neural-tangents' top-level functions on ntkdsl's implementations.

``empirical_*_fn``, ``monte_carlo_kernel_fn``, ``linearize``, ``taylor_expand`` and
``batch`` with the peer's names, signatures and return conventions; the numerics
are ``ntkdsl.empirical``'s. Options of the peer that ntkdsl has no counterpart for
(``trace_axes`` other than the logits axis, ``diagonal_axes``, ``vmap_axes``) raise
``NotImplementedError`` unless they leave the result unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .. import empirical as emp
from ._nodes import CompatError
from ._triple import ApplyFn, Kernel, KernelFn, _named

__all__ = ["Kernel", "batch", "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn",
           "linearize", "monte_carlo_kernel_fn", "taylor_expand"]


def _check_axes(name: str, trace_axes, diagonal_axes) -> None:
    trace = tuple(trace_axes) if isinstance(trace_axes, Iterable) else (trace_axes,)
    diag = tuple(diagonal_axes) if isinstance(diagonal_axes, Iterable) else (diagonal_axes,)
    if trace != (-1,) or diag:
        raise CompatError(f"{name}: trace_axes={trace_axes}, diagonal_axes={diagonal_axes} "
                          "are not supported; ntkdsl's empirical kernels average over the "
                          "logits axis of (n, k) outputs (trace_axes=(-1,), diagonal_axes=())")


def _gets(get) -> tuple[tuple[str, ...], str]:
    if get is None:
        return ("nngp", "ntk"), "tuple"
    if isinstance(get, str):
        names, how = (get,), "single"
    else:
        names, how = tuple(get), "tuple"
    for g in names:
        if g not in ("nngp", "ntk"):
            raise ValueError(f"get: expected 'nngp', 'ntk', a tuple of them or None, got {get!r}")
    return names, how


def _bind(f: Callable, kwargs: dict) -> Callable:
    if not kwargs:
        return f
    return lambda p, x: f(p, x, **kwargs)


def _check_outputs(name: str, f: Callable, params, x) -> None:
    out = jax.eval_shape(f, params, x[:1])
    if len(out.shape) != 2:
        raise CompatError(f"{name}: the network's outputs have shape {out.shape}; ntkdsl's "
                          "empirical kernels need (n, k) outputs (flatten or pool first)")


@dataclasses.dataclass
class _EmpiricalFn:
    """``fn(x1, x2, params, **apply_fn_kwargs)`` (or with ``get``) of one empirical kernel."""

    f: Callable
    what: str  # "ntk", "nngp" or "kernel"
    batch_size: int | None = None

    def __call__(self, x1, x2, *args, **kwargs):
        if self.what == "kernel":  # kernel_fn(x1, x2, get, params, **apply_fn_kwargs)
            get = args[0] if args else kwargs.pop("get", None)
            params = args[1] if len(args) > 1 else kwargs.pop("params")
            names, how = _gets(get)
        else:  # ntk_fn(x1, x2, params, **apply_fn_kwargs)
            params = args[0] if args else kwargs.pop("params")
            names, how = (self.what,), "single"
        f = _bind(self.f, kwargs)
        x1 = jnp.asarray(x1)
        x2 = None if x2 is None else jnp.asarray(x2)
        _check_outputs(f"empirical_{self.what}_fn", f, params, x1)
        out = {}
        if "ntk" in names:
            out["ntk"] = emp.empirical_ntk(f, params, x1, x2, batch_size=self.batch_size)
        if "nngp" in names:
            out["nngp"] = emp.empirical_nngp(f, params, x1, x2, mode="outputs",
                                             batch_size=self.batch_size)
        values = tuple(out[g] for g in names)
        return values[0] if how == "single" else _named(names)(*values)


def empirical_ntk_fn(f: Callable, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                     implementation=None, _j_rules: bool = True, _s_rules: bool = True,
                     _fwd=None):
    """The finite network's NTK: ``ntk_fn(x1, x2, params, **apply_fn_kwargs)`` ``(n1, n2)``.

    Arguments:
        f: ``apply_fn(params, x, **kwargs)`` with ``(n, k)`` outputs.
        trace_axes, diagonal_axes: only the peer's defaults (the mean over the logits).
        vmap_axes, implementation: accepted and ignored (they change speed, not values;
            ntkdsl chooses its own contraction).

    Returns:
        ``ntk_fn``; ``x2=None`` means ``x1``.
    """
    _check_axes("empirical_ntk_fn", trace_axes, diagonal_axes)
    return _EmpiricalFn(f, "ntk")


def empirical_nngp_fn(f: Callable, trace_axes=(-1,), diagonal_axes=()):
    """The outputs' kernel ``f(x1) f(x2)^T / k``: ``nngp_fn(x1, x2, params, **kwargs)``."""
    _check_axes("empirical_nngp_fn", trace_axes, diagonal_axes)
    return _EmpiricalFn(f, "nngp")


def empirical_kernel_fn(f: Callable, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                        implementation=None, _j_rules: bool = True, _s_rules: bool = True,
                        _fwd=None):
    """``kernel_fn(x1, x2, get, params, **kwargs)``: the empirical NNGP and/or NTK.

    ``get``: ``'nngp'``, ``'ntk'`` (an array), a tuple of them or ``None`` (both) (a
    namedtuple ``Kernel``).
    """
    _check_axes("empirical_kernel_fn", trace_axes, diagonal_axes)
    return _EmpiricalFn(f, "kernel")


def linearize(f: Callable, params):
    """``f_lin(params, x)``: the first-order Taylor expansion of ``f`` around ``params``."""
    g = emp.linearize(lambda p, x: f(p, x), params)
    return lambda p, x, **kw: emp.linearize(_bind(f, kw), params)(p, x) if kw else g(p, x)


def taylor_expand(f: Callable, params, degree: int):
    """``f_tayl(params, x)``: the Taylor expansion of ``f`` in its params to ``degree``."""
    g = emp.taylor_expand(lambda p, x: f(p, x), params, degree)
    return lambda p, x, **kw: (emp.taylor_expand(_bind(f, kw), params, degree)(p, x)
                               if kw else g(p, x))


def monte_carlo_kernel_fn(init_fn: Callable, apply_fn: Callable, key, n_samples,
                          batch_size: int = 0, device_count: int = -1,
                          store_on_device: bool = True, trace_axes=(-1,), diagonal_axes=(),
                          vmap_axes=None, implementation=None, _j_rules: bool = True,
                          _s_rules: bool = True, _fwd=None):
    """Kernels averaged over ``n_samples`` random inits: ``kernel_fn(x1, x2=None, get=None,
    **apply_fn_kwargs)``.

    Each init ``init_fn(k, x1.shape)`` (``k`` one split of ``key``) contributes its outputs'
    kernel and its empirical NTK (``ntkdsl.empirical``); ``n_samples`` may be a list of
    counts, then ``kernel_fn`` returns a generator of the estimates after each count.
    ``batch_size`` tiles the rows of each empirical kernel; ``device_count`` and
    ``store_on_device`` are accepted and ignored (one process).
    """
    _check_axes("monte_carlo_kernel_fn", trace_axes, diagonal_axes)
    counts = None if isinstance(n_samples, int | np.integer) else sorted(int(n) for n in n_samples)
    total = int(n_samples) if counts is None else counts[-1]
    if total <= 0 or (counts is not None and counts[0] <= 0):
        raise ValueError(f"n_samples: expected positive counts, got {n_samples!r}")
    rows = batch_size or None

    takes_rng = isinstance(apply_fn, ApplyFn)

    def estimates(x1, x2, names, kwargs):
        x1 = jnp.asarray(x1)
        x2 = None if x2 is None else jnp.asarray(x2)
        sums = {g: 0.0 for g in names}
        k = key
        for i in range(total):
            # the peer's keys, sample by sample (jax 0.4's threefry, as init_fn uses)
            with jax.threefry_partitionable(False):
                k, one = jax.random.split(k)
                init_key, dropout_key = jax.random.split(one, 2)
            _, params = init_fn(init_key, x1.shape)
            f = _bind(apply_fn, {**kwargs, "rng": dropout_key} if takes_rng else kwargs)
            if i == 0:
                _check_outputs("monte_carlo_kernel_fn", f, params, x1)
            if "nngp" in names:
                sums["nngp"] = sums["nngp"] + emp.empirical_nngp(
                    f, params, x1, x2, mode="outputs", batch_size=rows)
            if "ntk" in names:
                sums["ntk"] = sums["ntk"] + emp.empirical_ntk(f, params, x1, x2,
                                                              batch_size=rows)
            if counts is None and i + 1 < total:
                continue
            if counts is None or i + 1 in counts:
                yield tuple(sums[g] / (i + 1) for g in names)

    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        names, how = _gets(get)

        def pack(values):
            return values[0] if how == "single" else _named(names)(*values)

        gen = (pack(v) for v in estimates(x1, x2, names, apply_fn_kwargs))
        return gen if counts is not None else next(gen)

    return kernel_fn


def batch(kernel_fn: Callable, batch_size: int = 0, device_count: int = -1,
          store_on_device: bool = True):
    """``kernel_fn`` computed in tiles of ``batch_size`` rows (ntkdsl's own tiling).

    Works for the ``kernel_fn`` of ``ntkdsl.compat.stax`` and of ``empirical_*_fn``;
    ``batch_size=0`` (the peer's "no batching") lets ntkdsl choose tiles from memory.
    Unlike the peer, ``batch_size`` need not divide the number of rows. Any other
    function is returned as it is (it computes the same values untiled).
    ``device_count`` / ``store_on_device`` are accepted and ignored (one process).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
            or batch_size < 0:
        raise ValueError(f"batch_size: expected an int >= 0, got {batch_size!r}")
    size = int(batch_size) or None
    if isinstance(kernel_fn, KernelFn):
        return KernelFn(kernel_fn.node, size)
    if isinstance(kernel_fn, _EmpiricalFn):
        return dataclasses.replace(kernel_fn, batch_size=size)
    return kernel_fn
