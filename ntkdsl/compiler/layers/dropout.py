"""Dropout: ``Dropout(p, mode="train" | "test")``.

At ``"train"`` each activation is kept with probability ``q = 1 - p`` and scaled
by ``1 / q``, with masks independent across units, positions and samples. For
two activations ``y = m x / q`` and ``y' = m' x' / q``,
``E[y y'] = E[m m'] / q**2 * E[x x']`` is ``E[x x']`` when the masks are
independent and ``E[x x'] / q`` when they are the same mask: the same unit at
the same position of the same sample. The NTK is scaled alike (the gradient
of ``y`` is ``m / q`` times that of ``x``). So the kernel rule is a linear map
(``rules.linear``) that divides by ``q`` the entries of one sample at one
position (``covariance.same_sample_diagonal``): the per-input variances, and
the pairs ``(i, i)`` of the kernel when x2 is x1. With x2 given, its rows are
other samples than those of x1, so no entry of ``kernel_fn(x1, x2)`` changes,
as in neural-tangents' ``stax.Dropout(rate=q)`` (which also treats an ``x2``
equal to ``x1`` as the same samples; ntkdsl treats every given ``x2`` as new
samples). At ``"test"`` (or ``p = 0``) the layer is the identity.

The finite net is a pure function of ``(params, x)``, so its randomness is part of
the parameters: ``init`` draws a seed, and ``apply`` draws each sample's mask from
that seed and a hash of the sample's activations (rounded to 12 significant
bits, so that in float64 a sample gets the same mask whether it is evaluated
alone or in a batch). Distinct samples thus get independent masks and one sample the same
mask wherever it appears; the mask stays fixed while the parameters are
trained (the seed has zero gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..._lazy import lazy
from .. import covariance as cv
from .. import rules
from ..terms import call, num
from .base import Layer, LayerArgError, Shape

jax = lazy("jax")
jnp = lazy("jax.numpy")
lax = lazy("jax.lax")

MODES = ("train", "test")


def _row_hash(x):
    """One uint32 per sample from its activations, robust to last-bit rounding differences."""
    xf = lax.stop_gradient(x).reshape(x.shape[0], -1).astype(jnp.float32) + 0.0  # -0 -> +0
    bits = lax.bitcast_convert_type(xf, jnp.uint32) & jnp.uint32(0xFFFFF000)
    n = xf.shape[1]
    mult = ((2 * np.arange(n, dtype=np.uint64) + 1) * np.uint64(0x9E3779B1)) % (1 << 32)
    return jnp.sum(bits * jnp.asarray(mult.astype(np.uint32)), axis=1, dtype=jnp.uint32)


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    """``Dropout(p, mode="train")``: drops units with probability ``p`` (identity at test)."""

    spec_name = "Dropout"
    p: float
    mode: str = "train"

    input_entries: ClassVar[str] = "as_output"
    reads_variances: ClassVar[bool] = False
    #: a training-mode dropout's output is not Gaussian (a Bernoulli mixture); at "test"
    #: or p = 0 the instance declares "keeps" (it is the identity)
    gaussian: ClassVar[str] = "breaks"
    needs_gaussian_input: ClassVar[bool] = False  # second moments hold for any input
    spatial: ClassVar[str] = "any"
    kernel_map: ClassVar[bool] = False
    vmap_is_slow: ClassVar[bool] = False
    float_args: ClassVar[tuple[str, ...]] = ("p",)

    def __post_init__(self) -> None:
        v = self.p
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v or not 0 <= v < 1:
            raise LayerArgError("p", f"'p' (the probability of dropping a unit) must be in "
                                f"[0, 1), got {v!r}")
        if self.mode not in MODES:
            raise LayerArgError("mode", f"'mode' must be \"train\" or \"test\", got "
                                f"{self.mode!r}")
        if not self.active:
            object.__setattr__(self, "gaussian", "keeps")

    @property
    def active(self) -> bool:
        """Whether the layer drops anything (training mode with ``p > 0``)."""
        return self.mode == "train" and self.p > 0

    @property
    def keep(self) -> float:
        """``q = 1 - p``, the probability of keeping a unit."""
        return 1.0 - float(self.p)

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    # ---- infinite width ----------------------------------------------------------------
    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """``rules.linear``: entries of one sample at one position divided by ``q``."""
        if not self.active:
            return k
        f = 1.0 / self.keep
        nngp, ntk = rules.linear(k.nngp, k.ntk,
                                 M=lambda a: cv.same_sample_diagonal(a, f, k, "pairs"))
        cov1 = None if k.cov1 is None else cv.same_sample_diagonal(k.cov1, f, k, "all")
        cov2 = cov1 if k.same or k.cov2 is None else cv.same_sample_diagonal(
            k.cov2, f, k, "all")
        return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def closed_form_rule(self, st, ctx):
        """Fully connected: the variances are divided by q; distinct samples keep K12."""
        k11, k12, k22, th = st
        if not self.active:
            return st
        q = ctx.rational(self.keep)
        return k11 / q, k12, k22 / q, th

    def explain_rule(self, k, theta, ctx):
        """``rules.linear`` on ``explain``'s terms."""
        if not self.active:
            return rules.linear(k, theta, M=lambda t: t, bind=ctx.binder("identity"))
        q = num(self.keep)
        m = call(f"D_{q}({{0}})", f"\\mathcal{{D}}_{{{q}}}({{0}})")
        note = (f"dropout, keep q = {q}: entries of one sample at one position "
                "(the pairs (i, i) when x2 is x1, and the variances) divided by q")
        return rules.linear(k, theta, M=m, bind=ctx.binder(note))

    # ---- finite width ------------------------------------------------------------------
    def init(self, key, shape: Shape) -> tuple[Shape, dict | tuple]:
        """``{"seed": (2,)}`` (integers stored as floats) when active, else ``()``."""
        if not self.active:
            return shape, ()
        seed = jax.random.randint(key, (2,), 0, 1 << 24)
        return shape, {"seed": seed.astype(jnp.result_type(float))}

    def apply(self, params, x):
        """``x * mask / q``, each sample's mask drawn from the seed and its activations."""
        if not self.active:
            return x
        seed = lax.stop_gradient(params["seed"]).astype(jnp.uint32)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), seed[0]), seed[1])
        keys = jax.vmap(lambda h: jax.random.fold_in(key, h))(_row_hash(x))
        keep = jax.vmap(lambda kk: jax.random.bernoulli(kk, self.keep, x.shape[1:]))(keys)
        return jnp.where(keep, x / self.keep, jnp.zeros((), x.dtype))
