"""The ``(init_fn, apply_fn, kernel_fn)`` triple of a compat layer, and the kernel result.

``kernel_fn`` builds the stax net's layer graph for the input shape it is called
with (once per shape) and computes its kernels with ntkdsl's compiler: the same
kernels as the spec that :func:`ntkdsl.compat.to_spec` prints.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import jax
import numpy as np

from ..compiler.checks import check_net, infer_shapes
from ..compiler.graph import Net
from ..compiler.layers import Serial
from ..diagnostics import SpecError
from ._nodes import Built, CompatError, Node, Streams

#: what ``get`` may ask for, as in neural-tangents' ``Kernel``
FIELDS = ("nngp", "ntk", "cov1", "cov2", "x1_is_x2", "is_gaussian", "is_reversed",
          "is_input", "diagonal_batch", "diagonal_spatial", "shape1", "shape2",
          "batch_axis", "channel_axis", "mask1", "mask2")


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


@functools.lru_cache(maxsize=256)
def _build(node: Node, in_shape: tuple[int, ...]) -> Built:
    st = node.build(Streams((), (in_shape,)))
    if not st.single:
        raise CompatError(f"the net ends with {len(st.branches)} streams (a FanOut or "
                          "parallel without a FanIn); ntkdsl nets have one output")
    net = Net(name="stax", params=(), body=Serial(layers=st.layers), filename="<stax>")
    try:
        check_net(net)
        infer_shapes(net, in_shape)
    except SpecError as err:
        raise CompatError(f"ntkdsl cannot compute this stax net's kernel exactly: "
                          f"{err.message}") from None
    return Built(net, st.shapes[0])


def build_net(node: Node, in_shape) -> Built:
    """The native net of a stax net for inputs of ``in_shape`` (no batch axis), cached."""
    return _build(node, tuple(int(s) for s in in_shape))


class Kernel:
    """The result of ``kernel_fn(x1, x2)``, with neural-tangents' ``Kernel`` attributes.

    ``nngp`` and ``ntk`` are ``(n1, n2)`` arrays; ``cov1`` / ``cov2`` the NNGP variances
    of the rows of ``x1`` / ``x2`` (``(n1,)``, ``(n2,)``), computed on first access.
    """

    def __init__(self, nngp, ntk, *, cov_fn, shape1, shape2, x1_is_x2, is_gaussian):
        self.nngp = nngp
        self.ntk = ntk
        self._cov_fn = cov_fn
        self._cov: dict[int, Any] = {}
        self.shape1, self.shape2 = shape1, shape2
        self.x1_is_x2 = x1_is_x2
        self.is_gaussian = is_gaussian
        self.is_reversed = False
        self.is_input = False
        self.diagonal_batch = True
        self.diagonal_spatial = False
        self.batch_axis, self.channel_axis = 0, -1
        self.mask1 = self.mask2 = None

    @property
    def cov1(self):
        if 1 not in self._cov:
            self._cov[1] = self._cov_fn(1)
        return self._cov[1]

    @property
    def cov2(self):
        if 2 not in self._cov:
            self._cov[2] = self._cov_fn(2)
        return self._cov[2]

    def __repr__(self) -> str:
        return f"Kernel(nngp={self.nngp!r}, ntk={self.ntk!r})"


@functools.lru_cache(maxsize=64)
def _named(fields: tuple[str, ...]):
    return collections.namedtuple("Kernel", fields)


def _parse_get(get) -> tuple[tuple[str, ...], str]:
    if get is None:
        return ("nngp", "ntk"), "kernel"
    if isinstance(get, str):
        names, how = (get,), "single"
    else:
        names, how = tuple(get), "tuple"
    for g in names:
        if g not in FIELDS:
            raise ValueError(f"get: {g!r} is not a Kernel field; expected one of "
                             f"{', '.join(FIELDS)}")
    return names, how


class KernelFn:
    """A stax net's ``kernel_fn(x1, x2=None, get=None, **kwargs)`` (see the module doc)."""

    def __init__(self, node: Node, batch_size: int | None = None):
        self.node = node
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"<ntkdsl.compat kernel_fn of {self.node.name}>"

    def __call__(self, x1, x2=None, get=None, **kwargs):
        """The analytic kernels of the net between the rows of ``x1`` and ``x2``.

        Arguments:
            x1: inputs ``(n1, ...)``, channel last; x2: ``(n2, ...)`` or ``None`` (x1).
            get: ``None`` (a :class:`Kernel`), a field name (that array) or a tuple of
                names (a namedtuple ``Kernel`` of them).
            **kwargs: neural-tangents' per-call options; none is supported, and any given
                raises ``NotImplementedError`` rather than being ignored.

        Returns:
            As neural-tangents; arrays are numpy float64 (jax arrays under ``jit``).
        """
        pattern = kwargs.pop("pattern", None)
        if kwargs:
            raise CompatError(f"kernel_fn options {sorted(kwargs)} are not supported by "
                              "ntkdsl.compat")
        if isinstance(x1, Kernel) or hasattr(x1, "nngp"):
            raise CompatError("kernel_fn(kernel): feeding a Kernel back into kernel_fn is not "
                              "supported by ntkdsl.compat; call kernel_fn on the inputs of "
                              "the composed net (stax.serial(net_a, net_b)) instead")
        names, how = _parse_get(get)
        shape = tuple(np.shape(x1))
        if len(shape) < 2:
            raise ValueError(f"x1: expected inputs with a batch axis, (n, ...), got shape "
                             f"{shape}")
        built = build_net(self.node, shape[1:])
        if len(built.out_shape) > 1:
            raise CompatError(
                f"the net's output has shape {built.out_shape} per input (spatial axes "
                "left): neural-tangents returns per-position kernels there, ntkdsl only "
                "per-output kernels; end the net with Flatten() or GlobalAvgPool() and a "
                "Dense readout")
        adj = _adjacencies(built.net, pattern, x1, x2)
        wanted = tuple(g for g in ("nngp", "ntk") if g in names or how == "kernel")
        arrays = self._kernels(built.net, x1, x2, wanted, adj) if wanted else {}

        def cov(i):
            x = x1 if i == 1 else x2
            if x is None:
                return None
            if x2 is None and "nngp" in arrays:
                return _diag(arrays["nngp"])
            a = None if adj is None else (adj[i - 1], None)
            return _diag(self._kernels(built.net, x, None, ("nngp",), a)["nngp"])

        out_shape = built.out_shape
        n2 = shape[0] if x2 is None else np.shape(x2)[0]
        k = Kernel(arrays.get("nngp"), arrays.get("ntk"), cov_fn=cov,
                   shape1=(shape[0], *out_shape), shape2=(n2, *out_shape),
                   x1_is_x2=x2 is None, is_gaussian=_ends_gaussian(built.net))
        if how == "kernel":
            return k
        values = tuple(getattr(k, g) for g in names)
        return values[0] if how == "single" else _named(names)(*values)

    def _kernels(self, net: Net, x1, x2, gets: tuple[str, ...], adj=None) -> dict:
        if _is_traced(x1) or _is_traced(x2):
            if adj is not None:
                raise CompatError("kernel_fn with Aggregate under jit is not supported; "
                                  "call it outside jit")
            from ..compiler.kernels import _tile_fn_cached

            n1 = x1.shape[0]
            n2 = None if x2 is None else x2.shape[0]
            fn = _tile_fn_cached(net, tuple(x1.shape[1:]), n1, n2, str(x1.dtype), gets)
            outs = fn(x1) if x2 is None else fn(x1, x2)
            return dict(zip(gets, outs))
        from ..compiler.kernels import evaluate_kernel

        extra = {} if adj is None else {"adjacency1": adj[0], "adjacency2": adj[1]}
        k = evaluate_kernel(net, x1, x2, gets, batch_size=self.batch_size, **extra)
        return {g: getattr(k, g) for g in gets}


def _aggregate_leaves(net: Net):
    return [layer for layer in net.walk() if getattr(layer, "uses_adjacency", False)]


def _adjacencies(net: Net, pattern, x1, x2):
    """The peer's ``pattern=(p1, p2)`` as ntkdsl's adjacencies (``None``: identity)."""
    if not _aggregate_leaves(net):
        if pattern is not None:
            raise CompatError("kernel_fn(pattern=...) is for nets with Aggregate")
        return None
    p1, p2 = pattern if isinstance(pattern, tuple | list) else (pattern, None)

    def dense(p, x):
        if x is None:
            return None
        if p is None:
            n, nodes = np.shape(x)[:2]
            return np.broadcast_to(np.eye(nodes), (n, nodes, nodes))
        return np.asarray(p)

    return dense(p1, x1), dense(p2 if x2 is not None else None, x2)


def _diag(a):
    return a.diagonal() if isinstance(a, np.ndarray) else jax.numpy.diagonal(a)


def _ends_gaussian(net: Net) -> bool:
    layers = net.body.layers
    last = layers[-1] if layers else None
    while last is not None and last.combine == "sequence":
        last = last.layers[-1] if last.layers else None
    return last is not None and last.combine is None and last.gaussian == "makes"


class InitFn:
    """``init_fn(key, input_shape)``: ``(output_shape, params)``, batch axis included."""

    def __init__(self, node: Node):
        self.node = node

    def __repr__(self) -> str:
        return f"<ntkdsl.compat init_fn of {self.node.name}>"

    def __call__(self, rng, input_shape, **kwargs):
        # jax 0.4's random bits (threefry not partitionable), in this call only: the same key
        # then gives the very params neural-tangents 0.6.5 draws
        with jax.threefry_partitionable(False):
            return self.node.init(rng, input_shape)


class ApplyFn:
    """``apply_fn(params, inputs, **kwargs)`` (``rng=key`` for Dropout): the outputs."""

    def __init__(self, node: Node):
        self.node = node

    def __repr__(self) -> str:
        return f"<ntkdsl.compat apply_fn of {self.node.name}>"

    def __call__(self, params, inputs, **kwargs):
        return self.node.apply(params, inputs, **kwargs)


class StaxLayer(tuple):
    """``(init_fn, apply_fn, kernel_fn)`` of a compat layer; ``.node`` is its graph node."""

    node: Node

    def __new__(cls, node: Node):
        self = super().__new__(cls, (InitFn(node), ApplyFn(node), KernelFn(node)))
        self.node = node
        return self


def node_of(layer) -> Node:
    """The node of a compat layer: a triple from ``ntkdsl.compat.stax``, or any of its
    three functions (so ``to_spec(kernel_fn)`` works too)."""
    if isinstance(layer, StaxLayer):
        return layer.node
    if isinstance(layer, InitFn | ApplyFn | KernelFn):
        return layer.node
    if isinstance(layer, tuple) and len(layer) == 3 and isinstance(layer[2], KernelFn):
        return layer[2].node
    raise CompatError(f"expected a layer of ntkdsl.compat.stax (an (init_fn, apply_fn, "
                      f"kernel_fn) triple made by it), got {type(layer).__name__}; layers "
                      "of neural_tangents.stax or jax.example_libraries.stax cannot be mixed "
                      "in")
