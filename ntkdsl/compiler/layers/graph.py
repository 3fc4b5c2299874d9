"""Graph aggregation: ``Aggregate(normalize=false)``.

Graph inputs are node features ``(N, nodes, C)`` (the nodes are the one spatial
axis) with an adjacency ``A`` of shape ``(N, nodes, nodes)`` per graph:
``A[n, i, j]`` is the weight of the edge from node ``i`` to node ``j`` of graph
``n``. The layer replaces every node's features by the weighted sum of its
predecessors' features, ``y[j] = sum_i A[i, j] x[i]`` (as neural-tangents'
``stax.Aggregate`` with a dense pattern); with ``normalize`` by their weighted
mean, ``y[j] = sum_i A[i, j] x[i] / sum_i A[i, j]`` (a node without predecessors
gets 0). Undirected graphs have a symmetric ``A``; self-loops are not added (put
ones on the diagonal for a node to keep its own features).

The map is linear and fixed per graph, so its kernel rule is ``rules.linear``
with a map that differs per input: on a pair of graphs ``(a, b)``,
``K'[p, q] = sum_{i, j} Â_a[i, p] K[i, j] Â_b[j, q]`` (``Â`` the possibly normalised
adjacency), the same on the NTK, and ``Â_a^T K_aa Â_a`` on each input's own
covariance (Du et al. 2019, "Graph Neural Tangent Kernel"; docs/maths.md).

The adjacencies reach the kernel rule through the kernel state
(``KernelState.adjacency``) and the finite layer through :func:`adjacency_scope`,
which ``network.apply`` opens around the net's ``apply`` when it is given one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..._lazy import lazy
from .. import covariance as cv
from .. import rules
from ..terms import call
from .base import LayerArgError, Shape, ShapeError
from .structural import Structural

jnp = lazy("jax.numpy")
lax = lazy("jax.lax")

#: the adjacency of the batch the finite net is being applied to (see adjacency_scope)
_ADJACENCY: contextvars.ContextVar[Any] = contextvars.ContextVar("ntkdsl_adjacency",
                                                                 default=None)


@contextlib.contextmanager
def adjacency_scope(adjacency) -> Iterator[None]:
    """Make ``adjacency`` ``(N, nodes, nodes)`` the graphs that ``Aggregate.apply`` reads.

    Scoped to the ``with`` block (a context variable, reset on exit, so nothing of it
    outlives the call and threads do not see each other's graphs); an array traced by
    an outer ``jit`` or ``vmap`` is fine.
    """
    token = _ADJACENCY.set(adjacency)
    try:
        yield
    finally:
        _ADJACENCY.reset(token)


def normalized(a, normalize: bool):
    """``A`` with each column divided by its sum (a node's in-degree) when ``normalize``.

    Columns summing to 0 (nodes without predecessors) stay 0 rather than NaN.
    """
    if not normalize:
        return a
    deg = jnp.sum(a, axis=-2, keepdims=True)
    return a / jnp.where(deg == 0, 1.0, deg)


def _hi() -> Any:
    return lax.Precision.HIGHEST


@dataclass(frozen=True, kw_only=True)
class Aggregate(Structural):
    """``Aggregate(normalize=false)``: each node's features become the sum (``normalize``:
    the mean) of its predecessors' features, with the adjacency given with the inputs."""

    spec_name = "Aggregate"
    normalize: bool = False

    input_entries: ClassVar[str] = "full"  # K'[p, q] mixes every pair of nodes
    spatial: ClassVar[str] = "needs"
    #: the kernel rule and the finite layer read each input's adjacency
    uses_adjacency: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.normalize, bool):
            raise LayerArgError("normalize", "'normalize' must be true or false, got "
                                f"{self.normalize!r}")

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 2:
            raise ShapeError(
                f"Aggregate needs node features (nodes, channels), one node axis, but its "
                f"input has shape {shape}")
        return shape

    def _maps(self, k: cv.KernelState):
        if k.adjacency is None:
            raise AssertionError("Aggregate reached without adjacency in the kernel state")
        a1, a2 = (normalized(a, self.normalize) for a in k.adjacency)
        return a1, a2

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """``rules.linear`` with ``K -> Â_a^T K Â_b`` per pair of graphs ``(a, b)``."""
        a1, a2 = self._maps(k)
        if k.rows is not None:  # pair list: (nodes, nodes, m)
            b1, b2 = a1[k.rows], a2[k.cols]

            def pair_map(t):
                t = jnp.einsum("mip,ijm->pjm", b1, t, precision=_hi())
                return jnp.einsum("pjm,mjq->pqm", t, b2, precision=_hi())
        else:  # grid: (nodes, nodes, n1, n2)
            def pair_map(t):
                t = jnp.einsum("aip,ijab->pjab", a1, t, precision=_hi())
                return jnp.einsum("pjab,bjq->pqab", t, a2, precision=_hi())

        def own(c, a):  # (nodes, nodes, n) per-input covariances
            t = jnp.einsum("aip,ija->pja", a, c, precision=_hi())
            return jnp.einsum("pja,ajq->pqa", t, a, precision=_hi())

        nngp, ntk = rules.linear(k.nngp, k.ntk, M=pair_map)
        cov1 = None if k.cov1 is None else own(k.cov1, a1)
        cov2 = cov1 if k.same or k.cov2 is None else own(k.cov2, a2)
        return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def cov_map(self, k):  # the rule above replaces Structural's single map
        raise NotImplementedError("Aggregate maps each input by its own adjacency")

    def explain_map(self, latex: bool):
        what = "mean" if self.normalize else "sum"
        m = call("A1^T {0} A2", "A_1^\\top {0} A_2")
        norm = ", columns divided by in-degree" if self.normalize else ""
        return m, (f"A = each input's adjacency{norm}: a node's {what} over its "
                   "predecessors, on both sides")

    def apply(self, params, x):
        """``y[n, j] = sum_i Â[n, i, j] x[n, i]`` with the adjacency of :func:`adjacency_scope`."""
        a = _ADJACENCY.get()
        if a is None:
            from ...diagnostics import InputError

            raise InputError("this net aggregates over graphs (Aggregate): pass each input's "
                             f"adjacency, shape (N, nodes, nodes), for inputs {tuple(x.shape)}")
        a = normalized(jnp.asarray(a, x.dtype), self.normalize)
        return jnp.einsum("nij,nic->njc", a, x, precision=_hi())
