"""Layer normalisation: ``LayerNorm(over="channels" | "all", eps)``.

At infinite width the input of a LayerNorm is a zero-mean Gaussian field with
independent channels, so the empirical mean over channels tends to 0 and the
empirical variance to the per-input kernel ``K11[p, p]``. The layer thus divides
each activation by a deterministic scale, a linear map of the kernels
(``rules.linear``) that reads the per-input variances:

* ``over="channels"``: ``K'[p, q] = K[p, q] / sqrt((K11[p, p] + eps) (K22[q, q] + eps))``;
* ``over="all"``: the same with ``K11[p, p]`` replaced by its mean over positions.

The NTK is scaled alike (the gradient of the normaliser's statistics is
``O(1/sqrt(width))`` and vanishes in the limit), as in neural-tangents'
``stax.LayerNorm(axis=-1)`` and ``stax.LayerNorm(axis=(1, ..., -1))``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..._lazy import lazy
from .. import covariance as cv
from .. import rules
from ..terms import call, num
from .base import Layer, LayerArgError, Shape

jnp = lazy("jax.numpy")
sympy = lazy("sympy")

OVER = ("channels", "all")


@dataclass(frozen=True, kw_only=True)
class LayerNorm(Layer):
    """``LayerNorm(over="channels", eps=1e-12)``: ``(x - mean) / sqrt(var + eps)``.

    ``over="channels"`` normalises the last axis at each position; ``"all"`` every
    axis but the batch axis. The input must be Gaussian (the output of an affine
    layer, possibly through linear layers), as the peer requires.
    """

    spec_name = "LayerNorm"
    over: str = "channels"
    eps: float = 1e-12

    input_entries: ClassVar[str] = "as_output"  # per-position scales of each entry
    reads_variances: ClassVar[bool] = True
    gaussian: ClassVar[str] = "keeps"  # a Gaussian times a deterministic scale
    needs_gaussian_input: ClassVar[bool] = True  # mean -> 0, var -> K11 hold for it
    spatial: ClassVar[str] = "any"
    kernel_map: ClassVar[bool] = False
    vmap_is_slow: ClassVar[bool] = False
    float_args: ClassVar[tuple[str, ...]] = ("eps",)

    def __post_init__(self) -> None:
        if self.over not in OVER:
            raise LayerArgError("over", f"'over' must be \"channels\" or \"all\", got "
                                f"{self.over!r}")
        v = self.eps
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v < 0:
            raise LayerArgError("eps", f"'eps' must be a number >= 0, got {v!r}")

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    # ---- infinite width ----------------------------------------------------------------
    def _variances(self, c, k: cv.KernelState):
        """Per-input variances (spatial..., n) + eps: per position, or their mean."""
        v = cv.spatial_diag(c, k.full, k.nd)
        if self.over == "all" and k.nd:
            v = cv.mean_leading(v, k.nd).reshape((1,) * k.nd + v.shape[k.nd:])
        return v + float(self.eps)

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """``rules.linear`` with ``M(K) = K / sqrt((K11 + eps)(K22 + eps))``."""
        k, c1, c2 = k.input_covariances(plan)
        v1 = self._variances(c1, k)
        v2 = v1 if k.same else self._variances(c2, k)
        # two roots, not the root of a product: the product of two variances may overflow
        d = jnp.sqrt(cv.side(v1, k, 1)) * jnp.sqrt(cv.side(v2, k, 2))
        nngp, ntk = rules.linear(k.nngp, k.ntk, M=lambda a: a / d)
        cov1 = cov2 = None
        if plan.cov_out and k.replay is None:
            def norm(c, v):
                if not k.full:
                    return c / v
                return c / (jnp.sqrt(cv.cov_side(v, k.nd, 1)) * jnp.sqrt(cv.cov_side(v, k.nd, 2)))

            cov1 = norm(c1, v1)
            cov2 = cov1 if k.same else norm(c2, v2)
        return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def closed_form_rule(self, st, ctx):
        """The rule on sympy expressions ``(K11, K12, K22, Theta)`` (fully connected)."""
        k11, k12, k22, th = st
        e = ctx.rational(float(self.eps))
        d = sympy.sqrt((k11 + e) * (k22 + e))
        return k11 / (k11 + e), k12 / d, k22 / (k22 + e), th / d

    def explain_rule(self, k, theta, ctx):
        """``rules.linear`` on ``explain``'s terms."""
        k11, k22 = ctx.variances(k)
        e = num(self.eps)
        if self.over == "all":
            v = ("mean_p {0}[p, p]", "\\operatorname{{mean}}_p {0}[p, p]")
            note = "LayerNorm over all axes: variances averaged over positions"
        else:
            v = ("{0}[p, p]", "{0}[p, p]")
            note = "LayerNorm over channels, at each position"
        s1 = call(*v)(k11)
        s2 = call(*v)(k22)
        m = call(lambda p: f"{p[0]} / sqrt(({p[1]} + {e}) * ({p[2]} + {e}))",
                 lambda p: f"\\frac{{{p[0]}}}{{\\sqrt{{({p[1]} + {e})({p[2]} + {e})}}}}")
        return rules.linear(k, theta, M=lambda t: m(t, s1, s2), bind=ctx.binder(note))

    # ---- finite width ------------------------------------------------------------------
    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """No parameters: ``(shape, ())``."""
        return shape, ()

    def apply(self, params, x):
        """``(x - mean) / sqrt(var + eps)`` over the channels (or all non-batch axes)."""
        axes = (-1,) if self.over == "channels" else tuple(range(1, x.ndim))
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        return (x - mean) / jnp.sqrt(var + self.eps)
