"""Multi-head self-attention over all spatial positions: ``SelfAttention(...)``.

The infinite-width limit (heads, key, value and input channels to infinity) of
Hron et al. 2020, "Infinite attention: NNGP and NTK for deep attention
networks", with the conventions of neural-tangents' ``stax.GlobalSelfAttention``
(docs/maths.md derives every case). The positions of an ``(N, L, C)`` or
``(N, H, W, C)`` input are flattened to ``P`` positions; ``K`` below is the input
kernel as a ``P x P`` matrix per pair of inputs, ``K_11`` an input's covariance
with itself, and ``ov2 = (W_out_std * W_std)**2``.

* ``linear_scaling=true`` (logits scaled by ``1 / key_size``, query and key weights
  tied): the logits ``X W W^T X^T / (C key_size)`` converge to ``W_std^2 S``, with
  ``S = K_11`` (plus the positional embeddings' identity covariance), so the
  attention weights ``G_x = mechanism(W_std^2 S_x)`` (softmax over the keys) are
  deterministic per input and the layer is linear in the values:
  ``K' = ov2 G_x K G_x'^T + b^2``, ``Theta' = ov2 G_x (Theta + 2 K) G_x'^T + b^2``
  (the value and output weights add a ``K`` term each; the logits' gradients
  vanish in the limit).
* ``linear_scaling=false`` (``1 / sqrt(key_size)``, independent queries and keys):
  the logits are Gaussian; only the ``identity`` mechanism has a closed form,
  ``K' = s2 <S, K> S + b^2`` with ``s2 = W_std^4 ov2`` and ``<S, K>`` the sum of
  ``S * K`` over all pairs of positions (see :meth:`SelfAttention.kernel_rule`);
  the other mechanisms are rejected, as the peer rejects them.

Positional embeddings are random, shared by all inputs, and enter the queries and
keys only (``"sum"``: added, ``"concat"``: appended as as many channels as the input
has), so they add the identity over positions to the logits' covariance, weighted
1 (``"sum"``) or halved with the input's (``"concat"``).

Only the NTK parameterisation exists for this layer (the language gives it no
``parameterization`` argument): ``apply`` scales standard-normal parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from ..._lazy import lazy
from ...diagnostics import InputError
from .. import covariance as cv
from .. import finite
from ..terms import call, num
from .base import Layer, LayerArgError, Shape, ShapeError, check_real

jax = lazy("jax")
jnp = lazy("jax.numpy")
lax = lazy("jax.lax")

MECHANISMS = ("softmax", "identity", "abs", "relu")
POSITIONAL = ("none", "sum", "concat")


def _positive_int(layer: object, name: str) -> None:
    """A positive integer argument; an integer-valued number (``width / 4``) becomes an int."""
    v = getattr(layer, name)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
        object.__setattr__(layer, name, v)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise LayerArgError(name, f"'{name}' must be a positive integer, got {v!r}")


def _choice(layer: object, name: str, allowed: tuple[str, ...]) -> None:
    v = getattr(layer, name)
    if v not in allowed:
        words = ", ".join(f'"{a}"' for a in allowed[:-1]) + f' or "{allowed[-1]}"'
        raise LayerArgError(name, f"'{name}' must be {words}, got {v!r}")


# ---- the covariance as one P x P matrix per pair of inputs ------------------------------

def _to_matrix(a, nd: int):
    """A full state array ``(S1, S1', ..., Snd, Snd', *batch)`` as ``(*batch, P, P)``."""
    sp = a.shape[: 2 * nd]
    perm = [*range(0, 2 * nd, 2), *range(1, 2 * nd, 2), *range(2 * nd, a.ndim)]
    p = math.prod(sp[0::2])
    m = jnp.transpose(a, perm).reshape((p, p, *a.shape[2 * nd:]))
    return jnp.moveaxis(m, (0, 1), (-2, -1))


def _from_matrix(m, sizes: tuple[int, ...]):
    """The inverse of :func:`_to_matrix`, for spatial sizes ``sizes``."""
    nd = len(sizes)
    m = jnp.moveaxis(m, (-2, -1), (0, 1))
    a = m.reshape((*sizes, *sizes, *m.shape[2:]))
    perm = [i for t in range(nd) for i in (t, nd + t)] + list(range(2 * nd, a.ndim))
    return jnp.transpose(a, perm)


def _mm(a, b):
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


@dataclass(frozen=True, kw_only=True)
class SelfAttention(Layer):
    """``SelfAttention(out, heads=1, key_size=out, value_size=out, mechanism="softmax",
    W_std=1, W_out_std=1, b_std=0, positional="none", linear_scaling=true)``.

    Multi-head dot-product self-attention over all spatial positions, as
    neural-tangents' ``stax.GlobalSelfAttention(out, key_size, value_size, heads,
    linear_scaling, W_key_std=W_value_std=W_query_std=W_std, W_out_std, b_std,
    attention_mechanism, pos_emb_type=positional)`` with one-hot positional
    embeddings (``pos_emb_decay_fn=None``) of as many channels as the input, used in
    the queries and keys only. ``W_std`` is the standard deviation of the query, key
    and value weights, ``W_out_std`` of the output projection's.
    """

    spec_name = "SelfAttention"
    out: int
    heads: int = 1
    key_size: int | None = None
    value_size: int | None = None
    mechanism: str = "softmax"
    W_std: float = 1.0
    W_out_std: float = 1.0
    b_std: float = 0.0
    positional: str = "none"
    linear_scaling: bool = True

    #: the logits read the covariance between every pair of positions
    input_entries: ClassVar[str] = "full"
    #: the attention weights are functions of each input's own covariance
    reads_variances: ClassVar[bool] = True
    #: linear in the (Gaussian) values with deterministic weights, or a sum over
    #: infinitely many independent heads: a fresh Gaussian, as an affine layer's output
    gaussian: ClassVar[str] = "makes"
    #: the limits need only the law of large numbers over the input's channels
    needs_gaussian_input: ClassVar[bool] = False
    spatial: ClassVar[str] = "needs"
    kernel_map: ClassVar[bool] = False
    vmap_is_slow: ClassVar[bool] = False
    float_args: ClassVar[tuple[str, ...]] = ("W_std", "W_out_std", "b_std")
    #: the only parameterisation of this layer (read by explain's title)
    parameterization: ClassVar[str] = "ntk"

    def __post_init__(self) -> None:
        _positive_int(self, "out")
        _positive_int(self, "heads")
        for name in ("key_size", "value_size"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        _choice(self, "mechanism", MECHANISMS)
        for name in self.float_args:
            check_real(self, name, nonnegative=True)
            object.__setattr__(self, name, float(getattr(self, name)))
        _choice(self, "positional", POSITIONAL)
        if not isinstance(self.linear_scaling, bool):
            raise LayerArgError("linear_scaling", "'linear_scaling' must be true or false, got "
                                f"{self.linear_scaling!r}")
        if not self.linear_scaling and self.mechanism != "identity":
            raise LayerArgError(
                "linear_scaling",
                f"linear_scaling=false has no closed-form kernel for mechanism "
                f"\"{self.mechanism}\": with 1/sqrt(key_size) scaling the logits stay Gaussian "
                f"and the kernel is an integral of {self.mechanism} over them; use "
                f"linear_scaling=true, or mechanism=\"identity\"")

    # ---- resolved sizes ----------------------------------------------------------------
    @property
    def keys(self) -> int:
        """The key (and query) size, ``out`` when not given."""
        return self.out if self.key_size is None else self.key_size

    @property
    def values(self) -> int:
        """The value size, ``out`` when not given."""
        return self.out if self.value_size is None else self.value_size

    def arguments(self) -> dict[str, object]:
        args = super().arguments()
        args["key_size"], args["value_size"] = self.keys, self.values
        return args

    def describe(self, short: bool = False) -> str:
        def fmt(v: object) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return f'"{v}"'
            return f"{v:.6g}" if short and isinstance(v, float) else repr(v)

        return f"SelfAttention({', '.join(f'{k}={fmt(v)}' for k, v in self.arguments().items())})"

    def channels_out(self) -> int | None:
        return self.out

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ShapeError(
                f"SelfAttention needs spatial axes (a sequence (L, C) or an image (H, W, C)), "
                f"but its input has shape {shape} (no spatial axes)")
        return (*shape[:-1], self.out)

    # ---- infinite width ----------------------------------------------------------------
    def _weights(self) -> tuple[float, float]:
        """The weights of the input's and the positional embeddings' covariance in the
        logits' covariance."""
        return {"none": (1.0, 0.0), "sum": (1.0, 1.0), "concat": (0.5, 0.5)}[self.positional]

    def _logit_cov(self, m):
        """The covariance the queries and keys see: the input's plus the embeddings'."""
        kw, pw = self._weights()
        if pw == 0:
            return m
        eye = jnp.eye(m.shape[-1], dtype=m.dtype)
        return kw * m + pw * eye

    def _attention_weights(self, c):
        """``G = mechanism(W_std^2 S)`` per input, from its covariance ``(n, P, P)``."""
        z = float(self.W_std) ** 2 * self._logit_cov(c)
        if self.mechanism == "softmax":
            return jax.nn.softmax(z, axis=-1)
        if self.mechanism == "relu":
            return jnp.maximum(z, 0.0)
        if self.mechanism == "abs":
            return jnp.abs(z)
        return z

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The limit kernels (module docstring); sqrt scaling: the identity mechanism.

        Linear scaling: ``K' = ov2 G1 K G2^T + b2``, ``Theta' = ov2 G1 (Theta + 2K) G2^T + b2``.
        Sqrt scaling (identity), with ``S = kw K + pw I`` and ``s2 = W_std^4 ov2``:
        ``K' = s2 <S, K> S + b2`` and
        ``Theta' = s2 ((<S, Theta> + <K, T>) S + <S, K> (T + 4 S)) + b2`` with
        ``T = kw Theta + pw I`` (the embeddings are trained too), ``<A, B>`` the sum of
        the elementwise product over all pairs of positions.
        """
        k, c1, c2 = k.input_covariances(plan)
        nd = k.nd
        sizes = tuple(plan.in_shape[:-1])
        ov2 = (float(self.W_out_std) * float(self.W_std)) ** 2
        b2 = float(self.b_std) ** 2
        m1 = _to_matrix(c1, nd)  # (n1, P, P)
        m2 = m1 if k.same else _to_matrix(c2, nd)
        km = _to_matrix(k.nngp, nd)  # (*batch, P, P)
        tm = None if k.ntk is None else _to_matrix(k.ntk, nd)
        want_cov = plan.cov_out and k.replay is None

        if self.linear_scaling:
            g1 = self._attention_weights(m1)
            g2 = g1 if k.same else self._attention_weights(m2)
            if k.rows is not None:
                ga, gb = g1[k.rows], g2[k.cols]
            else:
                ga, gb = g1[:, None], g2[None, :]
            gbt = jnp.swapaxes(gb, -1, -2)

            def att(a):
                return _mm(_mm(ga, a), gbt)

            gkg = att(km)
            nngp = ov2 * gkg + b2
            ntk = None
            if k.want_ntk:
                inner = 2.0 * gkg if tm is None else att(tm) + 2.0 * gkg
                ntk = ov2 * inner + b2

            def cov(m, g):
                return ov2 * _mm(_mm(g, m), jnp.swapaxes(g, -1, -2)) + b2
        else:
            kw, pw = self._weights()
            s2 = float(self.W_std) ** 4 * ov2
            eye = jnp.eye(km.shape[-1], dtype=km.dtype)

            def inner(a, b):
                return jnp.sum(a * b, axis=(-2, -1), keepdims=True)

            s = self._logit_cov(km)
            sk = inner(s, km)
            nngp = s2 * sk * s + b2
            ntk = None
            if k.want_ntk:
                th = jnp.zeros_like(km) if tm is None else tm
                t = kw * th + pw * eye if pw else th
                ntk = s2 * ((inner(s, th) + inner(km, t)) * s + sk * (t + 4.0 * s)) + b2

            def cov(m, g):
                sm = self._logit_cov(m)
                return s2 * inner(sm, m) * sm + b2

            g1 = g2 = None

        cov1 = cov2 = None
        if want_cov:
            cov1 = _from_matrix(cov(m1, g1), sizes)
            cov2 = cov1 if k.same else _from_matrix(cov(m2, g2), sizes)
        return replace(k, nngp=_from_matrix(nngp, sizes),
                       ntk=None if ntk is None else _from_matrix(ntk, sizes),
                       cov1=cov1, cov2=cov2)

    def explain_rule(self, k, theta, ctx):
        """The rule on ``explain``'s terms, with the attention weights spelled out."""
        ov2 = (float(self.W_out_std) * float(self.W_std)) ** 2
        b2 = float(self.b_std) ** 2
        w2 = num(float(self.W_std) ** 2)
        k11, k22 = ctx.variances(k)
        kw, pw = self._weights()
        if pw:
            scov = (f"({num(kw)} * {{0}} + {num(pw)} * I)" if kw != 1 else "({0} + I)")
            stex = (f"({num(kw)} \\, {{0}} + {num(pw)} \\, I)" if kw != 1 else "({0} + I)")
            emb = f"positional {self.positional}: the embeddings add {num(pw)} * I over positions"
        else:
            scov, stex, emb = "{0}", "{0}", ""
        s_of = call(scov, stex)
        bind = ctx.binder("")
        if self.linear_scaling:
            mech = {"softmax": "softmax_q", "identity": "", "abs": "abs", "relu": "relu"}[
                self.mechanism]
            for tag, v in (("1", k11), ("2", k22)):
                s = s_of(v).render(ctx.latex)
                if ctx.latex:
                    ctx.eq(f"G^{{({tag})}}_{{pq}}",
                           f"\\operatorname{{{mech or 'id'}}}({w2} \\, {s}_{{pq}})")
                else:
                    ctx.eq(f"G{tag}[p, q]", f"{mech}({w2} * {s}[p, q])",
                           "attention weights (deterministic: linear scaling)"
                           + (f"; {emb}" if emb and tag == "1" else "")
                           + ("; softmax over q" if mech == "softmax_q" and tag == "1" else ""))
            att = call("G1 {0} G2^T", "G^{{(1)}} {0} G^{{(2)\\top}}")
            note = "self-attention, linear scaling (Hron et al. 2020)"
            kk = ctx.binder(note)("K", ov2 * att(k) + b2)
            return kk, bind("Theta", ov2 * (att(theta) + 2.0 * att(k)) + b2)
        s = s_of(k)
        t = s_of(theta)
        dot = call("<{0}, {1}>", "\\langle {0}, {1} \\rangle")
        s2 = float(self.W_std) ** 4 * ov2
        note = ("self-attention, 1/sqrt(key_size) scaling, identity mechanism "
                "(<A, B> = sum over pairs of positions of A * B)" + (f"; {emb}" if emb else ""))
        kk = ctx.binder(note)("K", s2 * (dot(s, k) * s) + b2)
        th = s2 * ((dot(s, theta) + dot(k, t)) * s + dot(s, k) * (t + 4.0 * s)) + b2
        return kk, bind("Theta", th)

    # ---- finite width ------------------------------------------------------------------
    def init(self, key, shape: Shape) -> tuple[Shape, dict]:
        """Standard-normal parameters (the NTK parameterisation scales them in ``apply``).

        ``{"wk": (heads, C_k, key_size)`` (queries share them under linear scaling),
        ``"wq"`` the same (sqrt scaling only), ``"wv": (heads, C, value_size)``,
        ``"wo": (heads * value_size, out)``, ``"b": (out,)`` when ``b_std > 0``,
        ``"pos": (*spatial, C)`` with positional embeddings``}``; ``C_k`` is ``C``, or
        ``2 C`` with concatenated embeddings.
        """
        c = shape[-1]
        ck = 2 * c if self.positional == "concat" else c
        kq, kk, kv, ko, kb, kp = jax.random.split(key, 6)
        params = {"wk": finite.normal(kk, (self.heads, ck, self.keys)),
                  "wv": finite.normal(kv, (self.heads, c, self.values)),
                  "wo": finite.normal(ko, (self.heads * self.values, self.out))}
        if not self.linear_scaling:
            params["wq"] = finite.normal(kq, (self.heads, ck, self.keys))
        if self.b_std != 0:
            params["b"] = finite.normal(kb, (self.out,))
        if self.positional != "none":
            params["pos"] = finite.normal(kp, tuple(shape))
        return self.out_shape(shape), params

    def apply(self, params: dict, x):
        """Attention over the flattened positions of ``x`` ``(N, *spatial, C)``."""
        wv = params["wv"]
        if x.ndim < 3 or x.shape[-1] != wv.shape[1]:
            raise InputError(
                f"{self.describe()} expects input of shape (N, spatial..., {wv.shape[1]}), "
                f"got {x.shape}")
        n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
        p = math.prod(spatial)
        xv = x.reshape(n, p, c)
        xk = xv
        if self.positional != "none":
            pos = params["pos"].reshape(1, p, c)
            if self.positional == "sum":
                xk = xv + pos
            else:
                xk = jnp.concatenate([xv, jnp.broadcast_to(pos, xv.shape)], axis=-1)
        ck = xk.shape[-1]
        hi = lax.Precision.HIGHEST
        keys = jnp.einsum("npc,hck->hnpk", xk, params["wk"], precision=hi)
        queries = keys if self.linear_scaling else jnp.einsum(
            "npc,hck->hnpk", xk, params["wq"], precision=hi)
        scale = ck * (self.keys if self.linear_scaling else math.sqrt(self.keys))
        z = jnp.einsum("hnpk,hnqk->hnpq", queries, keys, precision=hi) * (
            float(self.W_std) ** 2 / scale)
        if self.mechanism == "softmax":
            g = jax.nn.softmax(z, axis=-1)
        elif self.mechanism == "relu":
            g = jnp.maximum(z, 0.0)
        elif self.mechanism == "abs":
            g = jnp.abs(z)
        else:
            g = z
        vals = jnp.einsum("npc,hcv->hnpv", xv, wv, precision=hi)
        # value-major, head-minor columns (the peer's order, so its params map one to one)
        heads = jnp.einsum("hnpq,hnqv->npvh", g, vals, precision=hi).reshape(n, p, -1)
        w_scale = float(self.W_out_std) * float(self.W_std) / math.sqrt(
            self.values * self.heads * c)
        y = jnp.matmul(heads, params["wo"], precision=hi) * w_scale
        if "b" in params:
            y = y + float(self.b_std) * params["b"]
        return y.reshape((n, *spatial, self.out))
