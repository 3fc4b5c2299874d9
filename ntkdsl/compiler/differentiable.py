"""Kernels and finite nets as pure JAX functions of the trainable net parameters.

A net compiled with ``trainable=(...)`` holds :class:`.trainable.Sym` values in
some layer fields (affine stds, nonlinearity constants). Here those fields are
resolved from a ``{name: value}`` pytree while tracing: :func:`substitute`
copies the layer graph with each such field replaced by the (traced) value of
its expression, and a nonlinearity whose constants are traced gets its kernel
maps printed again from sympy with the constants as extra arguments
(:func:`symbolic_maps`). The kernel recursion itself is the one of
``compiler/kernels.py`` (``build_tile_fn``) run on the substituted plan, so the
differentiable kernels are the same arithmetic as the numpy-returning ones.

Structure never depends on a trainable value (the expander refuses that), so
the plan, shapes and pair layout come from the defaults and one trace serves
every value of the parameters: ``jax.grad``, ``jax.jit`` and ``jax.vmap`` work
through :func:`kernel` with respect to both the parameter values and the inputs.

Validation: the layers' own checks (``W_std >= 0``, ...) ran on the defaults
when the net was compiled; :func:`check_values` runs them again on concrete
parameter values at call time. Under a trace (inside ``jit``/``grad``/``vmap``)
the values are abstract and not checked: the kernel is then the formula at
whatever values arrive (a negative std enters only squared; use bounds, as
``ntkdsl fit`` does, to stay inside the layers' domain).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..diagnostics import InputError
from .covariance import LayerPlan
from .graph import Net
from .layers import Layer
from .layers.base import LayerArgError, ShapeError
from .trainable import Sym, evaluate

# ---------------------------------------------------------------------------------------------
# where the trainable values sit in a net


def _sym_fields(layer: Layer) -> dict[str, Sym]:
    return {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)
            if isinstance(getattr(layer, f.name), Sym)}


def uses(net: Net) -> tuple[tuple[Layer, str, Sym], ...]:
    """Every ``(layer, field, value)`` of the net whose value depends on a trainable parameter."""
    out = []
    for layer in net.walk():
        for name, v in _sym_fields(layer).items():
            out.append((layer, name, v))
    return tuple(out)


def signature(net: Net) -> tuple:
    """What the traced functions read of the trainable values: each field's expression.

    A ``Sym`` compares equal to its float, so two nets that differ only in how a field
    depends on the parameters are equal ``Net`` values; this tells them apart in caches.
    """
    return tuple((i, type(layer).__name__, name, v.expr)
                 for i, (layer, name, v) in enumerate(uses(net)))


def defaults(net: Net, trainable: tuple[str, ...]) -> dict[str, float]:
    """The trainable parameters' default values (as compiled)."""
    params = dict(net.params)
    return {n: float(params[n]) for n in trainable}


# ---------------------------------------------------------------------------------------------
# nonlinearities with traced constants


@functools.cache
def symbolic_maps(layer: Layer, fields: tuple[str, ...]) -> dict[str, Any]:
    """A nonlinearity's printed maps with the constants ``fields`` as trailing arguments.

    Returns:
        ``{"pair": (s11, s12, s22, *c) -> (T, Tdot), "t": ... -> T,
        "diag": (s, *c) -> T(s, s, s), "phi": (x, *c) -> phi(x)}``.

    Raises:
        TypeError / ValueError: the closed form needs numbers for these constants (a
            branch on their values); the caller reports it as a SpecError.
    """
    import sympy

    from . import printer
    from . import symbols as S

    consts = tuple(sympy.Symbol(f"_c_{f}", real=True) for f in fields)
    shadow = copy.copy(layer)
    for f, c in zip(fields, consts):
        object.__setattr__(shadow, f, c)
    name = f"{type(layer).__name__}_traced"
    T, Tdot, D = shadow._T(), shadow._Tdot(), shadow._diag()
    phi = shadow.phi_expr(S.x)
    return {
        "pair": printer.to_jax(f"pair_{name}", (*S.PAIR_ARGS, *consts), (T, Tdot)),
        "t": printer.to_jax(f"t_{name}", (*S.PAIR_ARGS, *consts), (T,)),
        "diag": printer.to_jax(f"diag_{name}", (S.s, *consts), (D,)),
        "phi": printer.to_jax(f"phi_{name}", (S.x, *consts), (phi,)),
    }


def _attach_maps(layer: Layer, original: Layer, fields: tuple[str, ...], vals: tuple) -> None:
    """Shadow the layer's cached printed maps by ones that take the traced constants."""
    maps = symbolic_maps(original, fields)
    pair, t, diag, phi = maps["pair"], maps["t"], maps["diag"], maps["phi"]
    setattr_ = object.__setattr__
    setattr_(layer, "pair_fn", lambda: lambda a, b, c: pair(a, b, c, *vals))
    setattr_(layer, "t_fn", lambda: lambda a, b, c: t(a, b, c, *vals))
    setattr_(layer, "diag_fn", lambda: lambda s: diag(s, *vals))
    setattr_(layer, "phi", lambda x: phi(x, *vals))


# ---------------------------------------------------------------------------------------------
# substitution


def substitute(layer: Layer | None, values: Mapping[str, Any]) -> Layer | None:
    """A copy of ``layer`` (and its children) with every trainable field evaluated at ``values``.

    The copy is made without re-running the layer's validation (the values may be
    tracers); a nonlinearity with traced constants gets maps that take them.
    Layers that hold no trainable value are returned as they are.
    """
    if layer is None:
        return None
    changes: dict[str, Any] = {}
    traced: list[str] = []
    for f in dataclasses.fields(layer):
        v = getattr(layer, f.name)
        if isinstance(v, Sym):
            changes[f.name] = evaluate(v.expr, values, jnp)
            traced.append(f.name)
        elif isinstance(v, Layer):
            nv = substitute(v, values)
            if nv is not v:
                changes[f.name] = nv
        elif isinstance(v, tuple) and v and all(e is None or isinstance(e, Layer) for e in v):
            nv = tuple(substitute(e, values) for e in v)
            if any(a is not b for a, b in zip(nv, v)):
                changes[f.name] = nv
    if not changes:
        return layer
    new = copy.copy(layer)
    for k, v in changes.items():
        object.__setattr__(new, k, v)
    if traced and hasattr(layer, "pair_fn"):
        _attach_maps(new, layer, tuple(traced), tuple(changes[k] for k in traced))
    return new


def substitute_plan(p: LayerPlan | None, values) -> LayerPlan | None:
    """The plan with every layer it holds substituted (:func:`substitute`).

    The plan must have been built from this net's own layer objects (see
    :func:`_kernel_fn`): plans are cached on equal nets, and an equal net compiled
    without trainable parameters holds plain floats where this one holds Syms.
    """
    if p is None:
        return None
    children = tuple(substitute_plan(c, values) for c in p.children)
    return dataclasses.replace(p, layer=substitute(p.layer, values), children=children)


def _plan_has_syms(p: LayerPlan | None) -> bool:
    if p is None:
        return False
    layers = [p.layer]
    while layers:
        layer = layers.pop()
        if _sym_fields(layer):
            return True
        layers.extend(c for c in layer.children() if c is not None)
    return any(_plan_has_syms(c) for c in p.children)


# ---------------------------------------------------------------------------------------------
# parameter values


def _is_traced(v: Any) -> bool:
    return isinstance(v, jax.core.Tracer)


def resolve(net: Net, trainable: tuple[str, ...], params: Mapping[str, Any] | None
            ) -> dict[str, Any]:
    """``params`` completed with the defaults, every value a scalar (array or tracer).

    Raises:
        InputError: a name that is not trainable, or a value that is not a scalar.
    """
    if not trainable:
        raise InputError("params= needs a model compiled with trainable parameters "
                         "(ntkdsl.compile(text, trainable=(\"W\", \"b\")))")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InputError(f"params must be a dict of trainable parameter values, got "
                         f"{type(params).__name__}")
    for k in params:
        if k not in trainable:
            raise InputError(f"params has {k!r}, which is not a trainable parameter; the "
                             f"trainable ones are {', '.join(trainable)}")
    out: dict[str, Any] = {}
    for name, default in defaults(net, trainable).items():
        v = params.get(name, default)
        if not _is_traced(v):
            if isinstance(v, bool):
                raise InputError(f"params[{name!r}] must be a real number, got {v!r}")
            try:
                arr = np.asarray(v)
            except Exception:
                arr = None
            if arr is None or arr.shape != () or not np.issubdtype(arr.dtype, np.number):
                raise InputError(f"params[{name!r}] must be a real scalar, got {v!r}")
            v = jnp.asarray(v, dtype=jnp.result_type(float))
        elif v.shape != ():
            raise InputError(f"params[{name!r}] must be a scalar, got shape {v.shape}")
        out[name] = v
    return out


def check_values(net: Net, values: Mapping[str, Any]) -> None:
    """Run the layers' validation on concrete parameter values (skipped under a trace).

    Raises:
        InputError: naming the parameter values, the layer and the layer's message.
    """
    if any(_is_traced(v) for v in values.values()):
        return
    concrete = {k: float(v) for k, v in values.items()}
    for layer, name, v in uses(net):
        x = float(evaluate(v.expr, concrete))
        if not np.isfinite(x):
            raise InputError(f"{layer.describe()}: '{name}' is {x} at params {concrete}")
        try:
            dataclasses.replace(layer, **{name: x})
        except LayerArgError as e:
            raise InputError(f"params {concrete} give {type(layer).__name__} {e.message}"
                             ) from None


def bounds(net: Net, trainable: tuple[str, ...]) -> dict[str, tuple[float | None, float | None]]:
    """Bounds on each trainable parameter from the validation of the fields it sets directly.

    A field set to the parameter itself (``W_std=W``) is probed with the layer's own
    validation: a field that refuses negative numbers gives a lower bound 0, one that
    refuses 0 too an open lower bound (reported as 0; fitting keeps a margin). A
    parameter that enters fields only through expressions (``W_std = W * 2``) gets
    no bound here (its values are checked at call time).

    Returns:
        ``{name: (low, high)}`` with ``None`` for no bound.
    """
    out: dict[str, tuple[float | None, float | None]] = {n: (None, None) for n in trainable}
    for layer, name, v in uses(net):
        if v.expr[0] != "param":
            continue
        p = v.expr[1]

        def ok(x: float, layer: Layer = layer, name: str = name) -> bool:
            try:
                dataclasses.replace(layer, **{name: x})
                return True
            except LayerArgError:
                return False

        if not ok(-1.0) and ok(1.0):
            lo, hi = out[p]
            out[p] = (0.0 if lo is None else max(lo, 0.0), hi)
    return out


def check_compilable(net: Net) -> None:
    """Build the printed maps of every nonlinearity with trainable constants now.

    Raises:
        SpecError: at the layer, when its closed form needs fixed numbers.
    """
    from ..diagnostics import SpecError

    for layer in net.walk():
        fields = tuple(_sym_fields(layer))
        if fields and hasattr(layer, "pair_fn"):
            try:
                symbolic_maps(layer, fields)
            except (TypeError, ValueError, AttributeError) as e:
                raise SpecError(
                    f"{type(layer).__name__}'s {', '.join(repr(f) for f in fields)} cannot be "
                    f"trainable: its closed form needs fixed numbers there ({e})",
                    layer.span) from None


# ---------------------------------------------------------------------------------------------
# the kernel function


def _shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def _check_x(net: Net, x, name: str):
    if not _is_traced(x):
        from .inputs import check_inputs

        check_inputs(net, np.asarray(x), None)
    shape = _shape_of(x)
    if len(shape) < 2:
        raise InputError(f"{name} must have a batch axis, (N, *input_shape), got shape {shape}")
    try:
        net.body.out_shape(shape[1:])
    except ShapeError as e:
        raise InputError(f"net {net.name!r} cannot take {name} of shape {shape}: {e}") from None
    if not _is_traced(x):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


@functools.lru_cache(maxsize=64)
def _kernel_fn(net: Net, sig: tuple, in_shape: tuple[int, ...], n1: int, n2: int | None,
               gets: tuple[str, ...]):
    from .analysis import plan
    from .kernels import build_tile_fn

    # built from this net's objects, not taken from the cache (see substitute_plan)
    p = plan.__wrapped__(net, in_shape)
    if sig and not _plan_has_syms(p):  # pragma: no cover - a cache would have to leak in
        raise AssertionError("the kernel plan lost the trainable values")

    def fn(values, x1, x2):
        tile = build_tile_fn(substitute_plan(p, values), n1, n2, gets)
        return tile(x1) if x2 is None else tile(x1, x2)

    return jax.jit(fn)


def kernel(net: Net, trainable: tuple[str, ...], x1, x2=None, get=("nngp", "ntk"),
           params: Mapping[str, Any] | None = None):
    """The NNGP kernel / NTK as a pure JAX function of the inputs and the trainable values.

    Arguments:
        net: a net compiled with ``trainable``.
        trainable: the trainable parameter names.
        x1, x2: inputs (arrays or tracers); ``x2=None`` is ``x1`` with itself.
        get: ``"nngp"``, ``"ntk"`` or a tuple of them.
        params: ``{name: value}`` for some or all trainable parameters (defaults for
            the rest); scalars, jax arrays or tracers.

    Returns:
        A jax array ``(n1, n2)`` for a string ``get``, else a :class:`ntkdsl.Kernel` of
        jax arrays. Computed in the caller's precision (float64 when jax's x64 is on).

    Raises:
        InputError: bad params or inputs; a concrete value outside a layer's domain.
    """
    from ..result import Kernel
    from .kernels import parse_get

    gets, single = parse_get(get)
    values = resolve(net, trainable, params)
    check_values(net, values)
    a1 = _check_x(net, x1, "x1")
    a2 = None if x2 is None else _check_x(net, x2, "x2")
    if a2 is not None and a2.shape[1:] != a1.shape[1:]:
        raise InputError(f"x1 and x2 must have the same per-input shape, got {a1.shape} and "
                         f"{a2.shape}")
    if a2 is not None:
        dt = jnp.result_type(a1, a2)
        a1, a2 = a1.astype(dt), a2.astype(dt)
    fn = _kernel_fn(net, signature(net), tuple(a1.shape[1:]), a1.shape[0],
                    None if a2 is None else a2.shape[0], gets)
    outs = dict(zip(gets, fn(values, a1, a2)))
    if single:
        return outs[gets[0]]
    return Kernel(nngp=outs.get("nngp"), ntk=outs.get("ntk"))


# ---------------------------------------------------------------------------------------------
# the finite net


def init(net: Net, trainable: tuple[str, ...], key, input_shape, params=None):
    """Random weights of the finite net at the trainable values ``params`` (pure, traceable).

    Only the standard parameterisation's weights depend on the stds; in the NTK
    parameterisation ``init`` gives the same weights whatever the values.
    """
    from . import network

    values = resolve(net, trainable, params)
    check_values(net, values)
    network.init(net, key, input_shape)  # the shape checks, on the defaults
    body = substitute(net.body, values)
    return body.init(key, tuple(int(s) for s in input_shape))[1]


def apply(net: Net, trainable: tuple[str, ...], weights, x, params=None):
    """The finite net's outputs at the trainable values ``params`` (pure, traceable)."""
    from . import network

    values = resolve(net, trainable, params)
    check_values(net, values)
    # the shape and structure checks of network.apply, on the defaults (abstractly)
    jax.eval_shape(functools.partial(network.apply, net), weights, x)
    if not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return substitute(net.body, values).apply(weights, x)
