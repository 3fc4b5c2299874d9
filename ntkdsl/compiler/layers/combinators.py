"""Composite nodes: Serial (a sequence), Residual (a sum of two paths) and the
branch statements Sum, Concat and Product (n paths).

A combinator declares how it combines its children (``combine``) and exposes
them (``children()``, ``None`` for an identity path); the passes fold over
that instead of asking for the type.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..._lazy import lazy
from ...diagnostics import InputError
from .. import covariance as cv
from .. import rules
from .base import Layer, Shape, ShapeError

jax = lazy("jax")


@dataclass(frozen=True, kw_only=True)
class Serial(Layer):
    """Layers applied in sequence. The body of every net and branch."""

    layers: tuple[Layer, ...] = ()
    combine: ClassVar[str] = "sequence"
    float_args: ClassVar[tuple[str, ...]] = ()

    def children(self) -> tuple[Layer, ...]:
        return self.layers

    def out_shape(self, shape: Shape) -> Shape:
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape

    def describe(self, short: bool = False) -> str:
        return "Serial"

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The children's rules in order."""
        for child in plan.children:
            k = cv.run(child, k)
        return k

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """One key per child (split in order), params as a tuple in layer order."""
        params = []
        keys = jax.random.split(key, max(len(self.layers), 1))
        for child, k in zip(self.layers, keys):
            try:
                shape, p = child.init(k, shape)
            except ShapeError as err:
                raise InputError(f"{child.describe()}: {err}") from None
            params.append(p)
        return shape, tuple(params)

    def apply(self, params: tuple, x):
        """Apply the children in sequence."""
        for child, p in zip(self.layers, params, strict=True):
            x = child.apply(p, x)
        return x


@dataclass(frozen=True, kw_only=True)
class Residual(Layer):
    """``y = shortcut(x) + branch(x)``; ``shortcut=None`` is the identity.

    The sum of kernels is exact only when the two paths are independent
    Gaussians; the front end enforces that each non-identity path ends in an
    affine layer (a layer whose ``gaussian`` is ``"makes"``).
    """

    spec_name = "Residual"
    branch: Serial
    shortcut: Serial | None = None
    combine: ClassVar[str] = "sum"
    float_args: ClassVar[tuple[str, ...]] = ()

    def children(self) -> tuple[Layer | None, ...]:
        return (self.branch, self.shortcut)

    def short_label(self, i: int) -> str:
        """Path ``i``'s heading in ``check``'s listing."""
        return ("branch", "shortcut")[i]

    def path_label(self, i: int) -> str:
        """How messages name path ``i`` (0: the branch, 1: the shortcut)."""
        if i == 0:
            return "Residual branch"
        return "the shortcut" if self.shortcut is not None else "the identity shortcut (its input)"

    def end_message(self, i: int, last: str) -> str | None:
        """The error for path ``i`` ending in ``last`` (not an affine layer)."""
        what = ("branch", "shortcut")[i]
        return (f"each Residual path must end in Dense or Conv (the {what} ends in {last}): "
                "otherwise the two paths are not independent Gaussians and their kernels do "
                "not add")

    def explain_title(self) -> str:
        return "Residual sum (independent branches)"

    def out_shape(self, shape: Shape) -> Shape:
        a = self.branch.out_shape(shape)
        b = shape if self.shortcut is None else self.shortcut.out_shape(shape)
        if a != b:
            what = "its input" if self.shortcut is None else "the shortcut"
            raise ShapeError(
                f"Residual branch gives shape {a} but {what} gives {b}; they must match to be added"
            )
        return a

    def describe(self, short: bool = False) -> str:
        return "Residual" if self.shortcut is None else "Residual with shortcut"

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """Independent Gaussian paths: the kernels add (``covariance.add_states``)."""
        states = [cv.cut(k, plan.full_out, plan.cov_out) if p is None else cv.run(p, k)
                  for p in plan.children]
        return cv.add_states(states)

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """Independent params for branch and shortcut (``()`` for the identity)."""
        kb, ks = jax.random.split(key)
        out_shape, pb = self.branch.init(kb, shape)
        ps: tuple = ()
        if self.shortcut is not None:
            sc_shape, ps = self.shortcut.init(ks, shape)
            if sc_shape != out_shape:
                raise InputError(
                    f"Residual branch gives shape {out_shape} but the shortcut gives {sc_shape}"
                )
        elif out_shape != tuple(shape):
            raise InputError(f"Residual branch gives shape {out_shape} but the input has {shape}")
        return out_shape, (pb, ps)

    def apply(self, params: tuple, x):
        """``branch(x) + shortcut(x)``."""
        pb, ps = params
        sc = x if self.shortcut is None else self.shortcut.apply(ps, x)
        return self.branch.apply(pb, x) + sc


@dataclass(frozen=True, kw_only=True)
class Branches(Layer):
    """The branch statements: ``n >= 2`` paths from one input, combined by ``combine``.

    ``paths`` holds one Serial per branch, ``None`` for an empty body (the
    identity). The front end enforces the conditions under which each kernel
    rule is exact (see :meth:`requires_affine_end`).
    """

    paths: tuple[Serial | None, ...]
    float_args: ClassVar[tuple[str, ...]] = ()
    #: what the branch outputs are, for messages ("added", "concatenated", "multiplied")
    verb: ClassVar[str] = ""

    def children(self) -> tuple[Layer | None, ...]:
        return self.paths

    def short_label(self, i: int) -> str:
        """Branch ``i``'s heading in ``check``'s listing (counted from 1)."""
        return f"branch {i + 1}"

    def path_label(self, i: int) -> str:
        """How messages name branch ``i`` (counted from 1, as a reader counts)."""
        head = f"{self.spec_name} branch 1" if i == 0 else f"branch {i + 1}"
        return head + (" (the identity: its input)" if self.paths[i] is None else "")

    def requires_affine_end(self) -> bool:
        """Whether every non-identity branch must end in an affine layer."""
        return True

    def end_message(self, i: int, last: str) -> str | None:
        return (f"each {'non-identity ' if self.spec_name == 'Sum' else ''}{self.spec_name} "
                f"branch must end in an affine layer (Dense, Conv, ...), but branch {i + 1} "
                f"ends in {last}: otherwise the branches are not independent Gaussians and "
                f"the kernel of their {self.spec_name.lower()} is not {self._rule_words}")

    _rule_words: ClassVar[str] = ""

    def _path_shapes(self, shape: Shape) -> list[Shape]:
        return [tuple(shape) if p is None else p.out_shape(shape) for p in self.paths]

    def out_shape(self, shape: Shape) -> Shape:
        outs = self._path_shapes(shape)
        for i, o in enumerate(outs[1:], 1):
            if o != outs[0]:
                raise ShapeError(
                    f"{self.path_label(0)} gives shape {outs[0]} but {self.path_label(i)} "
                    f"gives {o}; they must match to be {self.verb}")
        return outs[0]

    def describe(self, short: bool = False) -> str:
        return f"{self.spec_name} of {len(self.paths)} branches"

    def _states(self, k: cv.KernelState, plan: cv.LayerPlan) -> list[cv.KernelState]:
        return [cv.cut(k, plan.full_out, plan.cov_out) if p is None else cv.run(p, k)
                for p in plan.children]

    def init(self, key, shape: Shape) -> tuple[Shape, tuple]:
        """Independent params per branch (``()`` for an identity branch)."""
        keys = jax.random.split(key, len(self.paths))
        params = []
        for path, k in zip(self.paths, keys):
            params.append(() if path is None else path.init(k, shape)[1])
        try:
            out = self.out_shape(tuple(shape))
        except ShapeError as err:
            raise InputError(str(err)) from None
        return out, tuple(params)

    def _outputs(self, params: tuple, x) -> list:
        return [x if path is None else path.apply(p, x)
                for path, p in zip(self.paths, params, strict=True)]


@dataclass(frozen=True, kw_only=True)
class Sum(Branches):
    """``Sum { B1 } { B2 } ...``: ``y = B1(x) + B2(x) + ...`` (at most one identity branch)."""

    spec_name = "Sum"
    combine: ClassVar[str] = "sum"
    verb: ClassVar[str] = "added"
    _rule_words: ClassVar[str] = "the sum of theirs"

    def explain_title(self) -> str:
        return "Sum of independent branches"

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """Independent Gaussian branches: the kernels add."""
        return cv.add_states(self._states(k, plan))

    def apply(self, params: tuple, x):
        """The sum of the branch outputs."""
        outs = self._outputs(params, x)
        y = outs[0]
        for o in outs[1:]:
            y = y + o
        return y


@dataclass(frozen=True, kw_only=True)
class Concat(Branches):
    """``Concat { B1 } { B2 } ...``: the branch outputs side by side on the channel axis.

    The kernel state holds the channel-weighted mean ``sum_b (C_b / C) K_b``:
    that is the kernel of the concatenated activations averaged over channels,
    which is all the next affine layer reads (its output is exact for any
    branches). It is not one Gaussian, so no nonlinearity may follow directly.
    """

    spec_name = "Concat"
    combine: ClassVar[str] = "concat"
    verb: ClassVar[str] = "concatenated"

    def requires_affine_end(self) -> bool:
        return False

    def out_shape(self, shape: Shape) -> Shape:
        outs = self._path_shapes(shape)
        for i, o in enumerate(outs[1:], 1):
            if len(o) != len(outs[0]) or o[:-1] != outs[0][:-1]:
                raise ShapeError(
                    f"{self.path_label(0)} gives shape {outs[0]} but {self.path_label(i)} "
                    f"gives {o}; they must match in all but the channel (last) axis to be "
                    "concatenated")
        return (*outs[0][:-1], sum(o[-1] for o in outs))

    def explain_title(self) -> str:
        return "Concat: the channel-weighted mean of the branches (C_b / C)"

    def weights(self, shape: Shape) -> list[float]:
        """``C_b / C`` for inputs of ``shape``."""
        chans = [o[-1] for o in self._path_shapes(shape)]
        total = sum(chans)
        return [c / total for c in chans]

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """The channel-weighted mean of the branch kernels (``rules.branch_concat`` on the
        whole state: nngp, ntk and the per-input variances alike)."""
        states = self._states(k, plan)
        ws = self.weights(plan.in_shape)
        return cv.add_states([s.map(lambda a, w=w: w * a) for s, w in zip(states, ws)])

    def apply(self, params: tuple, x):
        """The branch outputs concatenated on the last axis."""
        return jax.numpy.concatenate(self._outputs(params, x), axis=-1)


@dataclass(frozen=True, kw_only=True)
class Product(Branches):
    """``Product { B1 } { B2 } ...``: the elementwise product of the branch outputs.

    Exact for independent zero-mean Gaussian branches (each ends in an affine
    layer; no identity branch): ``K = prod_b K_b``, and by the product rule
    ``Theta = sum_b Theta_b prod_{c != b} K_c``.
    """

    spec_name = "Product"
    combine: ClassVar[str] = "product"
    verb: ClassVar[str] = "multiplied"
    _rule_words: ClassVar[str] = "the product of theirs"

    def explain_title(self) -> str:
        return "Product of independent branches"

    def kernel_rule(self, k: cv.KernelState, plan: cv.LayerPlan) -> cv.KernelState:
        """``rules.branch_product`` on nngp/ntk; per-input variances multiply too."""
        states = self._states(k, plan)
        nngp, ntk = rules.branch_product([s.nngp for s in states], [s.ntk for s in states])
        first = states[0]

        def prod(vals):
            if any(v is None for v in vals):
                return None
            out = vals[0]
            for v in vals[1:]:
                out = out * v
            return out

        cov1 = prod([s.cov1 for s in states])
        cov2 = cov1 if first.same else prod([s.cov2 for s in states])
        recorded = dict(first.recorded)
        for s in states[1:]:
            recorded.update(s.recorded)
        return replace(first, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2,
                       recorded=tuple(sorted(recorded.items(), key=lambda kv: kv[0])))

    def apply(self, params: tuple, x):
        """The elementwise product of the branch outputs."""
        outs = self._outputs(params, x)
        y = outs[0]
        for o in outs[1:]:
            y = y * o
        return y
