"""Affine layers: Dense and Conv (paper eq. 1; standard parameterisation: appendix F).

Both follow the affine rule of ``compiler/rules.py``,
``K' = W^2 A(K) + b^2``, ``Theta' = K' + W^2 A(Theta)``, with ``A`` the
identity for Dense and the patch average of ``covariance.conv_cov`` for Conv.

Finite width, both parameterisations:

* ``"ntk"`` (paper eq. 1): the parameters are the trainable variables omega
  and beta, drawn from N(0, 1); ``apply`` computes
  ``W = W_std / sqrt(fan_in) * omega`` and ``b = b_std * beta``, so gradients
  with respect to the parameters give the paper's tangent kernel.
* ``"standard"`` (appendix F): ``W ~ N(0, W_std**2 / fan_in)``,
  ``b ~ N(0, b_std**2)``, used as they are.

``fan_in`` is the input channel count for Dense and ``C_in * prod(kernel)``
for Conv. A layer with ``b_std == 0`` has no bias parameter at all, so its
params are ``{"w": ...}`` only (``{"w", "b"}`` otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..._lazy import lazy
from ...diagnostics import InputError
from .. import covariance as cv
from .. import finite, rules
from ..terms import call
from .base import (
    Layer,
    LayerArgError,
    Shape,
    Stride,
    check_real,
    per_axis,
    windowed_spatial,
)

jax = lazy("jax")
jnp = lazy("jax.numpy")
lax = lazy("jax.lax")

PADDINGS = ("SAME", "VALID", "CIRCULAR")
PARAMETERIZATIONS = ("ntk", "standard")


def check_window(value, arg: str) -> None:
    """A window argument (kernel, strides, window) is a positive int or a tuple of them."""
    vals = value if isinstance(value, tuple) else (value,)
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in vals):
        raise LayerArgError(
            arg, f"'{arg}' must be a positive integer or a tuple of them, got {value!r}"
        )


def _real(v: Any) -> Any:
    return float(v) if isinstance(v, int | float) else v


def check_padding(padding: object) -> None:
    """``padding`` is one of SAME, VALID, CIRCULAR."""
    if padding not in PADDINGS:
        raise LayerArgError(
            "padding", f"'padding' must be SAME, VALID or CIRCULAR, got {padding!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Affine(Layer):
    """Base of the affine layers: validation, the affine rule, init/apply scales.

    A subclass declares the fields ``out``, ``W_std``, ``b_std`` and
    ``parameterization`` itself, in the order its spec signature lists them
    (positional arguments bind in field order).
    """

    input_entries: ClassVar[str] = "as_output"
    reads_variances: ClassVar[bool] = False
    kernel_map: ClassVar[bool] = False
    gaussian: ClassVar[str] = "makes"
    needs_gaussian_input: ClassVar[bool] = False
    float_args: ClassVar[tuple[str, ...]] = ("W_std", "b_std")

    def __post_init__(self) -> None:
        if isinstance(self.out, bool) or not isinstance(self.out, int) or self.out <= 0:
            raise LayerArgError("out", f"'out' must be a positive integer, got {self.out!r}")
        for arg in ("W_std", "b_std"):
            check_real(self, arg, nonnegative=True)
        if self.parameterization not in PARAMETERIZATIONS:
            raise LayerArgError(
                "parameterization",
                f"'parameterization' must be \"ntk\" or \"standard\", got "
                f"{self.parameterization!r}",
            )

    def channels_out(self) -> int | None:
        return self.out

    # ---- what a subclass supplies ------------------------------------------------------
    def fan_in(self, in_shape: Shape) -> int:
        """The number of inputs of one output unit, for inputs of ``in_shape``."""
        raise NotImplementedError

    def cov_map(self, k: cv.KernelState) -> Callable[[cv.Array], cv.Array]:
        """``A``: the map of the layer's linear part on a covariance in ``k``'s layout."""
        raise NotImplementedError

    def explain_map(self, latex: bool) -> tuple[Callable, str]:
        """``A`` for ``explain`` (a term map) and the note describing it."""
        raise NotImplementedError

    # ---- infinite width ----------------------------------------------------------------
    def _rule_args(self, fan_in: Any) -> dict[str, Any]:
        # float(): a Python number stays one; a traced std (differentiable kernels) as it is
        return dict(w2=_real(self.W_std) ** 2, b2=_real(self.b_std) ** 2, fan_in=fan_in,
                    standard=self.parameterization == "standard")

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The affine rule on the kernel state (``rules.affine``)."""
        A = self.cov_map(k)
        args = self._rule_args(self.fan_in(plan.in_shape))
        nngp, ntk = rules.affine(k.nngp, k.ntk, A=A, want_ntk=k.want_ntk, **args)
        w2, b2 = args["w2"], args["b2"]
        cov1 = None if k.cov1 is None else rules.affine_variance(k.cov1, A=A, w2=w2, b2=b2)
        cov2 = cov1 if k.same or k.cov2 is None else rules.affine_variance(
            k.cov2, A=A, w2=w2, b2=b2)
        return replace(k, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def explain_rule(self, k, theta, ctx):
        """The affine rule on ``explain``'s terms (``rules.affine``)."""
        A, note = self.explain_map(ctx.latex)
        fan = ctx.sym("fan_in", "fan_in") if ctx.in_shape is None else str(
            self.fan_in(ctx.in_shape))
        fan_in = ctx.sym(fan, fan) if isinstance(fan, str) else fan
        return rules.affine(k, theta, A=A, bind=ctx.binder(note), **self._rule_args(fan_in))

    def closed_form_rule(self, st, ctx):
        """The affine rule on sympy expressions ``(K11, K12, K22, Theta)`` (fully connected)."""
        k11, k12, k22, th = st
        q = ctx.rational
        args = dict(w2=q(float(self.W_std) ** 2), b2=q(float(self.b_std) ** 2))
        fan_in = ctx.fan_in_symbol
        k1, th1 = rules.affine(k12, th, A=lambda a: a, fan_in=fan_in,
                               standard=self.parameterization == "standard", **args)
        v1, v2 = (rules.affine_variance(v, A=lambda a: a, **args) for v in (k11, k22))
        return v1, k1, v2, th1

    # ---- finite width ------------------------------------------------------------------
    def init_params(self, key, w_shape: Shape, fan_in: int) -> dict:
        """Random weights (and a bias when ``b_std > 0``) in the layer's parameterisation."""
        kw, kb = jax.random.split(key)
        w = finite.normal(kw, w_shape)
        params = {"w": w}
        # a traced b_std (differentiable kernels) has a default > 0, so the layer has a bias
        if not isinstance(self.b_std, int | float) or self.b_std != 0:
            params["b"] = finite.normal(kb, (self.out,))
        if self.parameterization == "standard":
            params["w"] = w * (self.W_std / math.sqrt(fan_in))
            if "b" in params:
                params["b"] = params["b"] * self.b_std
        return params

    def scales(self, fan_in: int) -> tuple[float, float]:
        """Multipliers ``apply`` puts on the stored weights and biases."""
        if self.parameterization == "ntk":
            return self.W_std / math.sqrt(fan_in), self.b_std
        return 1.0, 1.0


@dataclass(frozen=True, kw_only=True)
class Dense(Affine):
    """``Dense(out, W_std=1, b_std=0, parameterization="ntk")``: affine map over the last axis."""

    spec_name = "Dense"
    out: int
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    spatial: ClassVar[str] = "any"
    #: vmapping its apply over parameters stays a matmul (see empirical.monte_carlo_kernel)
    vmap_is_slow: ClassVar[bool] = False

    def out_shape(self, shape: Shape) -> Shape:
        return (*shape[:-1], self.out)

    def fan_in(self, in_shape: Shape) -> int:
        return in_shape[-1]

    def cov_map(self, k):
        return lambda a: a

    def explain_map(self, latex: bool):
        return (lambda t: t), ""

    def readout_kernel(self, g1, g2):
        """The NNGP of this layer's outputs given its input features ``g1``, ``g2``.

        ``W_std^2 * mean over units (and positions) of g1 g2 + b_std^2``: the exact
        expectation over this layer's random weights (``empirical_nngp``'s readout mode).
        """
        g1 = g1.reshape(g1.shape[0], -1)
        g2 = g2.reshape(g2.shape[0], -1)
        return self.W_std**2 * (g1 @ g2.T) / g1.shape[1] + self.b_std**2

    def init(self, key, shape: Shape) -> tuple[Shape, dict]:
        """Parameters ``{"w": (C_in, out)[, "b": (out,)]}``."""
        return self.out_shape(shape), self.init_params(key, (shape[-1], self.out), shape[-1])

    def apply(self, params: dict, x):
        """``x @ W + b`` over the last axis (per position for spatial inputs)."""
        w = params["w"]
        if x.shape[-1] != w.shape[0]:
            raise InputError(
                f"{self.describe()} expects {w.shape[0]} input features on the last axis, "
                f"got input of shape {x.shape}"
            )
        w_scale, b_scale = self.scales(w.shape[0])
        y = jnp.tensordot(x, w, axes=(x.ndim - 1, 0)) * w_scale
        if "b" in params:
            y = y + b_scale * params["b"]
        return y

    def patches(self, x):
        """The rows the weights multiply: ``apply(p, x) = s_w patches(x) @ w + s_b b``."""
        return x


def _window_text(v) -> str:
    return "x".join(str(t) for t in v) if isinstance(v, tuple) else f"{v} (each axis)"


@dataclass(frozen=True, kw_only=True)
class Conv(Affine):
    """``Conv(out, kernel, strides=1, padding=SAME, ...)``: convolution over the spatial axes."""

    spec_name = "Conv"
    out: int
    kernel: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    spatial: ClassVar[str] = "needs"
    #: vmapped over parameters a convolution becomes a grouped one, slow on CPU
    vmap_is_slow: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_window(self.kernel, "kernel")
        check_window(self.strides, "strides")
        check_padding(self.padding)

    def out_shape(self, shape: Shape) -> Shape:
        sp = windowed_spatial("Conv", shape, self.kernel, self.strides, self.padding, "kernel")
        return (*sp, self.out)

    def window_args(self) -> dict[str, Stride]:
        return {"kernel": self.kernel, "strides": self.strides}

    def stride(self) -> Stride:
        return self.strides

    def fan_in(self, in_shape: Shape) -> int:
        nd = len(in_shape) - 1
        return in_shape[-1] * math.prod(per_axis(self.kernel, nd, "kernel"))

    def cov_map(self, k):
        nd, full = k.nd, k.full
        ks = per_axis(self.kernel, nd, "kernel")
        ss = per_axis(self.strides, nd, "strides")
        return lambda a: cv.conv_cov(a, full, nd, ks, ss, self.padding)

    def explain_map(self, latex: bool):
        note = (f"A = patch average over a {_window_text(self.kernel)} window, strides "
                f"{_window_text(self.strides)}, padding {self.padding}")
        return call("A({args})", "\\mathcal{{A}}({args})"), note

    def init(self, key, shape: Shape) -> tuple[Shape, dict]:
        """Parameters ``{"w": (*kernel, C_in, out)[, "b": (out,)]}``."""
        nd = len(shape) - 1
        ks = per_axis(self.kernel, nd, "kernel")
        return self.out_shape(shape), self.init_params(
            key, (*ks, shape[-1], self.out), self.fan_in(shape))

    def apply(self, params: dict, x):
        """Convolution over the spatial axes (channel last); CIRCULAR wraps around."""
        w = params["w"]
        nd = w.ndim - 2
        if x.ndim != nd + 2 or x.shape[-1] != w.shape[-2]:
            raise InputError(
                f"{self.describe()} expects input of shape (N, {nd} spatial axes, "
                f"{w.shape[-2]}), got {x.shape}"
            )
        ks = tuple(w.shape[:nd])
        ss = per_axis(self.strides, nd, "strides")
        x, pads = finite.pad_for(x, self.padding, ks, ss)
        w_scale, b_scale = self.scales(w.shape[-2] * math.prod(ks))
        dtype = jnp.result_type(x, w)  # lax.conv needs one dtype for both operands
        y = lax.conv_general_dilated(
            x.astype(dtype), w.astype(dtype), window_strides=ss, padding=pads,
            dimension_numbers=finite.dimension_numbers(nd),
        ) * w_scale
        if "b" in params:
            y = y + b_scale * params["b"]
        return y

    def patches(self, x):
        """The rows the weights multiply: ``apply(p, x) = s_w patches(x) @ w.reshape(-1, out)
        + s_b b``, one per output position (the structured empirical NTK contracts them)."""
        nd = x.ndim - 2
        return finite.window_patches(x, self.padding, per_axis(self.kernel, nd, "kernel"),
                                     per_axis(self.strides, nd, "strides"))
