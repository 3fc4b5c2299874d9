"""The base of every layer class, the facts a layer declares, and the errors it raises.

One class per layer (see docs/design.md). A layer class holds everything
about its layer:

* its parameters, as frozen dataclass fields, validated in ``__post_init__``;
* its shape rule, :meth:`Layer.out_shape`;
* its paired kernel rule, ``kernel_rule(k, plan)`` on a
  :class:`~ntkdsl.compiler.covariance.KernelState`, built from the family
  rules of ``compiler/rules.py`` and the covariance maps of
  ``compiler/covariance.py``;
* its finite-width ``init(key, shape)`` / ``apply(params, x)``;
* its rendering in ``check`` and ``explain`` (``describe``, ``explain_rule``);
* the facts the passes read, declared as class attributes (see
  :data:`DECLARATIONS`). ``Layer`` itself declares none of them, so a new
  layer that forgets one fails loudly in the pass that reads it (and in
  ``tests/test_layer_declarations.py``) instead of getting a silent default.

Shapes here never include the batch axis: ``(features,)`` for fully
connected data, ``(*spatial, channels)`` for convolutional data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import ClassVar

from ...diagnostics import Span

Shape = tuple[int, ...]
Stride = int | Fraction | tuple[int | Fraction, ...]

#: the facts every concrete layer class declares, and what each pass reads them for
DECLARATIONS: dict[str, str] = {
    "input_entries": (
        "which entries of its input covariance the kernel rule needs: 'as_output' (the "
        "same as is needed after it), 'full' (every pair of positions) or 'diagonal' "
        "(per-position variances only)  [analysis]"),
    "reads_variances": "whether its kernel rule reads the per-input variances  [analysis, "
                       "memory model]",
    "gaussian": (
        "what it does to the Gaussianity of the activations: 'makes' (an affine layer: "
        "independent Gaussian output), 'keeps' (a linear map), 'breaks' (a nonlinearity)  "
        "[checks]"),
    "needs_gaussian_input": "whether its kernel rule is valid only for a Gaussian input  "
                            "[checks]",
    "spatial": (
        "what it does to spatial axes: 'any' (acts per position or elementwise), 'needs' "
        "(needs spatial axes and keeps them), 'removes' (needs them and removes them), "
        "'flattens' (removes any it finds)  [checks, input checks]"),
    "kernel_map": "whether its rule is a Gaussian expectation T / Tdot of an elementwise phi "
                  "(a nonlinearity)  [symbolic checks, explain, signal propagation]",
    "vmap_is_slow": "whether its finite apply becomes slow when vmapped over parameters "
                    "(a convolution turns grouped)  [Monte Carlo kernels]",
    "float_args": "the arguments that are real numbers (an integer given for them is a "
                  "float)  [expand]",
}


#: every built-in layer class by the name a spec uses; a class with a ``spec_name``
#: registers itself when it is defined (so adding a layer is adding its class)
REGISTRY: dict[str, type[Layer]] = {}


#: the largest magnitude of a real layer argument: its square enters the kernels, which
#: must stay finite in float64 through a deep net (1e75^2 = 1e150 leaves that room)
MAX_REAL_ARG = 1e75


def check_real(layer: object, name: str, *, nonnegative: bool = False) -> None:
    """A real argument: a finite number (>= 0 if asked) of magnitude at most MAX_REAL_ARG."""
    v = getattr(layer, name)
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        raise LayerArgError(name, f"'{name}' must be a number, got {v!r}")
    if nonnegative and v < 0:
        raise LayerArgError(name, f"'{name}' must be a number >= 0, got {v!r}")
    if abs(v) > MAX_REAL_ARG:
        raise LayerArgError(name, f"'{name}' = {v!r} is too large: its square enters the "
                                  f"kernels; use at most {MAX_REAL_ARG:g} in magnitude")


class LayerArgError(ValueError):
    """A layer argument is invalid; ``arg`` names it (None: the whole layer).

    The expander turns it into a located SpecError pointing at the argument.
    """

    def __init__(self, arg: str | None, message: str):
        self.arg = arg
        self.message = message
        super().__init__(message)


class ShapeError(ValueError):
    """An input shape does not fit a layer; the caller locates it at the layer."""


def _fmt(v: object, short: bool) -> str:
    if isinstance(v, bool):  # as a spec writes it
        return "true" if v else "false"
    return f"{v:.6g}" if short and isinstance(v, float) else repr(v)


@dataclass(frozen=True, kw_only=True)
class Layer:
    """A node of the layer graph (see the module docstring for what a subclass declares)."""

    span: Span | None = field(default=None, compare=False, repr=False)

    #: the name a spec uses for this layer; ``None`` for internal nodes
    spec_name: ClassVar[str | None] = None
    #: how a combinator combines its children: 'sequence' (Serial), 'sum' (Residual);
    #: ``None`` for a leaf layer
    combine: ClassVar[str | None] = None
    #: whether the layer reads each input's adjacency (graph inputs, ``layers/graph.py``);
    #: a net with such a layer takes ``(features, adjacency)`` pairs
    uses_adjacency: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("spec_name")
        if name is not None:
            if name in REGISTRY and REGISTRY[name].__qualname__ != cls.__qualname__:
                raise TypeError(f"two layer classes are named {name!r}")
            REGISTRY[name] = cls

    def out_shape(self, shape: Shape) -> Shape:
        """The output shape (no batch axis) for an input of ``shape``."""
        raise NotImplementedError

    def children(self) -> tuple[Layer | None, ...]:
        """Nested layers of a combinator (``None``: an identity path); empty for leaves."""
        return ()

    def repetition(self) -> tuple[Layer, int] | None:
        """``(body, count)`` for a sequence that is ``count`` identical iterations of
        ``body`` (which the kernel function may run as a loop); ``None`` otherwise."""
        return None

    # ---- what the static checks read ------------------------------------------------
    def window_args(self) -> dict[str, Stride]:
        """Arguments with one entry per spatial axis (their tuples must agree in length)."""
        return {}

    def stride(self) -> Stride:
        """The factor by which the layer shrinks each spatial axis (1: none; a
        ``Fraction`` below 1 for a layer that upsamples)."""
        return 1

    def channels_out(self) -> int | None:
        """The channel count of the output when the layer fixes it (``None``: unchanged)."""
        return None

    # ---- rendering -------------------------------------------------------------------
    def arguments(self) -> dict[str, object]:
        """The layer's arguments as a spec would write them (resolved values)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "span" and f.init}

    def describe(self, short: bool = False) -> str:
        """A one-line, spec-like rendering with its arguments (``short``: 6 digits)."""
        args = [f"{k}={_fmt(v, short)}" for k, v in self.arguments().items()]
        name = self.spec_name or type(self).__name__
        return f"{name}({', '.join(args)})" if args else name


def upsampling(factor: int | tuple[int, ...]) -> Stride:
    """The ``stride()`` of a layer that multiplies each axis by ``factor``: ``1/factor``."""
    if isinstance(factor, tuple):
        return tuple(Fraction(1, f) for f in factor)
    return Fraction(1, factor)


def per_axis(value: int | tuple[int, ...], ndim: int, what: str) -> tuple[int, ...]:
    """Expand an int to one value per spatial axis, or check a tuple's length."""
    if isinstance(value, int):
        return (value,) * ndim
    if len(value) != ndim:
        raise ShapeError(
            f"{what} has {len(value)} entries but the input has {ndim} spatial "
            f"ax{'es' if ndim != 1 else 'is'}"
        )
    return tuple(value)


def spatial_out(
    n: int, k: int, s: int, padding: str, what: str
) -> int:
    """Output length of a window of size k, stride s over n positions."""
    if padding == "VALID":
        if k > n:
            raise ShapeError(f"{what} of size {k} is larger than the VALID input of size {n}")
        return (n - k) // s + 1
    return -(-n // s)  # SAME and CIRCULAR: ceil(n / s)


def windowed_spatial(
    layer: str, shape: Shape, window, strides, padding: str, what: str
) -> tuple[int, ...]:
    """Output spatial sizes of a sliding window (Conv's filter, AvgPool's window).

    ``what`` names the window argument in messages (``"kernel"``, ``"window"``).
    """
    nd = len(shape) - 1
    if nd < 1:
        raise ShapeError(
            f"{layer} needs spatial axes, but its input has shape {shape} (no spatial axes)"
        )
    ws = per_axis(window, nd, what)
    ss = per_axis(strides, nd, "strides")
    return tuple(spatial_out(n, w, s, padding, what) for n, w, s in zip(shape[:-1], ws, ss))
