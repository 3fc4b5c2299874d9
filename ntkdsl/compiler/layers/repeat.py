"""``repeat N { BODY }``: N identical iterations of a body, run as a loop where they can be.

A :class:`Repeat` is a sequence (``combine = "sequence"``) whose ``layers`` are
every iteration as the expander produced it, each layer object with its own
span. Every pass that folds over a sequence (checks, shapes, ``check``,
``explain``, the closed form, ``analyze``) therefore sees the unrolled net,
exactly as a spec that wrote the body N times. Two passes use the loop:

* the kernel function: the analysis (``analysis._build_repeat``) turns each
  run of iterations with equal plans (same shapes, same entries needed) into
  one plan with ``times > 1``, which :meth:`Repeat.kernel_rule` runs with
  ``lax.scan``, the kernel state's arrays as the carry. Iterations that differ
  (a body that changes the shape, say a stride-2 convolution; the last one,
  which may cut the state) are unrolled. So tracing and compiling cost one
  body, not N.
* the finite net: the iterations after the body first keeps the shape share
  one parameter structure; their parameters are stacked (a leading axis of
  their count) and applied with ``lax.scan``. Params of a ``Repeat`` are
  ``(peeled, stacked)``: a tuple of the params of the iterations before the
  shape is kept (each as a Serial's tuple), and the stacked params of the rest
  (``()`` when there are none).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..._lazy import lazy
from ...diagnostics import InputError
from .. import covariance as cv
from .base import Layer, Shape, ShapeError
from .combinators import Serial

jax = lazy("jax")
jnp = lazy("jax.numpy")


@dataclass(frozen=True, kw_only=True)
class Repeat(Serial):
    """``count`` identical iterations of a body; ``layers`` holds all of them, in order."""

    count: int = 1

    def __post_init__(self) -> None:
        n = len(self.layers)
        if self.count < 1 or n % self.count:
            raise ValueError(f"Repeat of {n} layers cannot be {self.count} iterations")
        k = n // self.count
        if any(self.layers[i:i + k] != self.layers[:k] for i in range(k, n, k)):
            raise ValueError("the iterations of a Repeat must be identical")

    @property
    def body(self) -> Serial:
        """One iteration, as a Serial."""
        return Serial(layers=self.layers[: len(self.layers) // self.count], span=self.span)

    def repetition(self) -> tuple[Layer, int]:
        return self.body, self.count

    def describe(self, short: bool = False) -> str:
        return f"repeat {self.count}"

    # ---- kernels ---------------------------------------------------------------------
    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The plan's segments in order: looped ones (``times > 1``) by ``lax.scan``."""
        for seg in plan.children:
            k = cv.run(seg, k) if seg.times == 1 else _loop(seg, k)
        return k

    # ---- finite net ------------------------------------------------------------------
    def _peeled(self, shape: Shape) -> int:
        """How many iterations run before the body keeps the shape (those are unrolled)."""
        for i in range(self.count):
            out = self.body.out_shape(shape)
            if out == tuple(shape):
                return i
            shape = out
        return self.count

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """``(peeled, stacked)`` params (see the module docstring); one key per iteration."""
        try:
            peel = self._peeled(tuple(shape))
        except ShapeError as err:
            raise InputError(f"{self.describe()}: {err}") from None
        keys = jax.random.split(key, self.count)
        peeled = []
        for i in range(peel):
            shape, p = self.body.init(keys[i], shape)
            peeled.append(p)
        stacked: tuple = ()
        if peel < self.count:
            body, s = self.body, tuple(shape)
            stacked = jax.vmap(lambda kk: body.init(kk, s)[1])(keys[peel:])
        return tuple(shape), (tuple(peeled), stacked)

    def iteration_params(self, params: tuple) -> list:
        """The params of each iteration in order, as the body's own (a Serial's tuple)."""
        peeled, stacked = params
        rest = self.count - len(peeled)
        return [*peeled, *(jax.tree_util.tree_map(lambda a, j=j: a[j], stacked)
                           for j in range(rest if stacked != () else 0))]

    def apply(self, params: tuple, x):
        """The peeled iterations, then a scan over the stacked params."""
        peeled, stacked = params
        body = self.body
        for p in peeled:
            x = body.apply(p, x)
        rest = self.count - len(peeled)
        if rest:
            x, _ = jax.lax.scan(lambda h, p: (body.apply(p, h), None), x, stacked,
                                length=rest)
        return x


def _loop(seg: cv.LayerPlan, k: cv.KernelState) -> cv.KernelState:
    """``seg.times`` iterations of one plan as a ``lax.scan`` over the kernel state.

    The carry is ``(nngp, ntk, cov1, cov2)`` (``cov2`` left out when x2 is x1); a
    zero NTK (``None``) enters as zeros, which every rule treats alike (``0 + W^2
    A(0)`` is exact), so the carry keeps one structure. The covariances that the
    iterations' variance-reading layers record (slots from 0 within one
    iteration) come out stacked, one entry at ``seg.slot``; the chunks of a pair
    list read them back through ``replay``, one iteration's slice per step.
    """
    one = replace(seg, times=1, slot=None)
    same = k.same
    replaying = k.replay is not None
    ntk = k.ntk
    if k.want_ntk and ntk is None:
        ntk = jnp.zeros_like(k.nngp)
    xs = k.replay[seg.slot] if replaying and seg.slot is not None else None

    def step(carry, x):
        nngp, th, c1, c2 = carry
        replay = None
        if replaying:
            replay = () if x is None else tuple((c, c) if same else c for c in x)
        s = replace(k, nngp=nngp, ntk=th, cov1=c1, cov2=c1 if same else c2, recorded=(),
                    replay=replay)
        s = cv.run(one, s)
        rec = tuple(c[0] if same else c for _, c in sorted(s.recorded, key=lambda e: e[0]))
        return (s.nngp, s.ntk, s.cov1, None if same else s.cov2), rec

    carry = (k.nngp, ntk, k.cov1, None if same else k.cov2)
    (nngp, ntk, c1, c2), ys = jax.lax.scan(step, carry, xs, length=seg.times)
    out = replace(k, nngp=nngp, ntk=ntk, cov1=c1, cov2=c1 if same else c2)
    if not replaying and seg.slot is not None:
        out = replace(out, recorded=(*k.recorded, (seg.slot, ys)))
    return out
