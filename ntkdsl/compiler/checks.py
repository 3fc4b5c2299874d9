"""Checks on the layer graph: static ones (no input needed) and shape inference.

Static checks follow an abstract state through the net - the channel count
when a Dense or Conv has fixed it, whether spatial axes remain, how many
spatial axes the tuples so far imply, and the product of the strides - and
reject what can never work:

* a Conv, AvgPool or GlobalAvgPool after Flatten / GlobalAvgPool removed the
  spatial axes;
* kernel / strides / window tuples of different lengths;
* a Residual whose two paths give different channel counts, different total
  strides, or one with and one without spatial axes;
* a non-identity Residual path that does not end in Dense or Conv (the
  summed paths would not be independent Gaussians, so kernels would not add);
* a nonlinearity whose input is not Gaussian in the infinite-width limit: the
  raw input, or the output of another nonlinearity with no Dense or Conv in
  between. The closed forms T and Tdot are expectations over a Gaussian, so
  the kernel of such a net would be silently wrong (``Relu; Relu`` would get
  half of the right diagonal, for instance). Identity, pooling and Flatten are
  linear and keep Gaussianity; a Residual sum is Gaussian when both paths are.

:func:`infer_shapes` then checks a concrete input shape layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..diagnostics import SpecError
from .graph import Net
from .layers import Layer, Shape, ShapeError

Stride = int | tuple[int, ...]


@dataclass(frozen=True)
class _State:
    channels: int | None = None  # None: not known without an input
    spatial: bool | None = None  # False once Flatten/GlobalAvgPool removed the axes
    removed_by: Layer | None = None
    ndim: int | None = None  # number of spatial axes, when a tuple argument fixed it
    stride: Stride = 1
    # why the activations here are not Gaussian (None: they are)
    not_gaussian: str | None = "the raw input"


def _where(layer: Layer | None) -> str:
    if layer is None or layer.span is None:
        return ""
    return f" at line {layer.span.line}"


def _name(layer: Layer) -> str:
    return layer.spec_name or type(layer).__name__


def _stride_mul(a: Stride, b: Stride) -> Stride:
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        return a * b
    if not isinstance(a, tuple):
        return tuple(a * x for x in b)
    if not isinstance(b, tuple):
        return tuple(x * b for x in a)
    return tuple(x * y for x, y in zip(a, b))


def _stride_eq(a: Stride, b: Stride) -> bool:
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        return a == b
    if not isinstance(a, tuple):
        return all(x == a for x in b)
    if not isinstance(b, tuple):
        return all(x == b for x in a)
    return a == b


def _stride_text(s: Stride) -> str:
    if isinstance(s, tuple):
        return "(" + ", ".join(str(v) for v in s) + ")"
    return str(s)


def _error(layer: Layer, message: str, notes=()) -> SpecError:
    return SpecError(message, layer.span, notes)


def _spatial_layer(layer: Layer, state: _State, tuples: dict[str, Stride]) -> _State:
    if state.spatial is False:
        raise _error(
            layer,
            f"{_name(layer)} needs spatial axes, but the {_name(state.removed_by)}"
            f"{_where(state.removed_by)} removed them",
        )
    ndim = state.ndim
    for arg, value in tuples.items():
        if isinstance(value, tuple):
            if ndim is not None and len(value) != ndim:
                raise _error(
                    layer,
                    f"'{arg}' of {_name(layer)} has {len(value)} entries, but earlier layers "
                    f"use {ndim} spatial ax{'es' if ndim != 1 else 'is'}",
                )
            ndim = len(value)
    return replace(state, spatial=True, ndim=ndim)


def _step(layer: Layer | None, state: _State) -> _State:
    """The abstract state after ``layer``, from what the layer declares."""
    if layer is None:  # an identity path
        return state
    if layer.combine == "sequence":
        for child in layer.children():
            state = _step(child, state)
        return state
    if layer.combine in ("sum", "concat", "product"):
        return _sum(layer, state)
    if layer.combine is not None:
        raise ValueError(f"{type(layer).__name__}: no static check for combine={layer.combine!r}")
    if layer.needs_gaussian_input and state.not_gaussian is not None:
        raise _error(
            layer,
            f"{_name(layer)} needs a Gaussian input, but its input is "
            f"{state.not_gaussian}: put a Dense or Conv before it",
            ["the infinite-width kernels of a nonlinearity are expectations over "
             "the Gaussian output of an affine layer"],
        )
    spatial = layer.spatial
    if spatial in ("needs", "removes"):
        state = _spatial_layer(layer, state, layer.window_args())
        state = replace(state, stride=_stride_mul(state.stride, layer.stride()))
    if spatial == "removes":
        state = replace(state, spatial=False, removed_by=layer, stride=1)
    elif spatial == "flattens":
        state = replace(state, channels=None, spatial=False, removed_by=layer, stride=1,
                        ndim=None)
    elif spatial not in ("any", "needs"):
        raise ValueError(f"{type(layer).__name__}.spatial is {spatial!r}")
    channels = layer.channels_out()
    if channels is not None:
        state = replace(state, channels=channels)
    gaussian = layer.gaussian
    if gaussian == "makes":
        state = replace(state, not_gaussian=None)
    elif gaussian == "breaks":
        state = replace(state, not_gaussian=f"the output of {_name(layer)}{_where(layer)}")
    elif gaussian != "keeps":
        raise ValueError(f"{type(layer).__name__}.gaussian is {gaussian!r}")
    return state


def _last_leaf(path: Layer) -> Layer | None:
    kids = path.children()
    last = kids[-1] if kids else None
    # a nested sequence (a repeat) ends where its last iteration ends
    return _last_leaf(last) if last is not None and last.combine == "sequence" else last


#: why the output of a combine that is not a sum of Gaussians is not one Gaussian
_NOT_ONE_GAUSSIAN = {
    "concat": "branches side by side, not one Gaussian",
    "product": "a product of Gaussians, not a Gaussian",
}


def _sum(layer: Layer, state: _State) -> _State:
    """A branch statement (Residual, Sum, Concat, Product): paths from one input.

    Every non-identity path of a sum or product must end in an affine layer (so
    the paths are independent Gaussians); the paths must agree in channels (but
    for Concat), in whether spatial axes remain and in total stride.
    """
    paths = layer.children()
    combine = layer.combine
    if combine != "concat":
        for i, path in enumerate(paths):
            last = None if path is None else _last_leaf(path)
            if last is not None and getattr(last, "gaussian", None) != "makes":
                what = layer.short_label(i)
                the = "" if what[-1].isdigit() else "the "
                raise _error(path if path.span is not None else layer,
                             layer.end_message(i, _name(last)),
                             [f"{the}{what} ends in {_name(last)}{_where(last)}"])
    outs = [_step(path, state) for path in paths]
    a = outs[0]
    verb = getattr(layer, "verb", "added")
    first = layer.path_label(0)
    for i, b in enumerate(outs[1:], 1):
        other = layer.path_label(i)
        if (combine != "concat" and a.channels is not None and b.channels is not None
                and a.channels != b.channels):
            raise _error(
                layer,
                f"{first} gives {a.channels} channels but {other} gives {b.channels}; "
                f"they must match to be {verb}",
            )
        if a.spatial is not None and b.spatial is not None and a.spatial != b.spatial:
            raise _error(layer, f"{first} and {other} differ in whether spatial axes remain")
        if (a.spatial is not False and b.spatial is not False
                and not _stride_eq(a.stride, b.stride)):
            raise _error(
                layer,
                f"{first} has total stride {_stride_text(a.stride)} but {other} has "
                f"{_stride_text(b.stride)}; "
                f"they must downsample alike to be {verb}",
            )

    def known(attr):
        return next((getattr(o, attr) for o in outs if getattr(o, attr) is not None), None)

    channels = known("channels")
    not_gaussian = next((o.not_gaussian for o in outs if o.not_gaussian), None)
    if combine == "concat":
        chans = [o.channels for o in outs]
        channels = None if None in chans else sum(chans)
    if combine in _NOT_ONE_GAUSSIAN:
        not_gaussian = (f"the output of {_name(layer)}{_where(layer)} "
                        f"({_NOT_ONE_GAUSSIAN[combine]})")
    return _State(
        not_gaussian=not_gaussian,
        channels=channels,
        spatial=known("spatial"),
        removed_by=next((o.removed_by for o in outs if o.removed_by), None),
        ndim=known("ndim"),
        stride=a.stride,
    )


def check_net(net: Net) -> None:
    """Static checks of a net's graph, without an input shape.

    Raises:
        SpecError: located at the offending layer (the Residual for path errors).
    """
    _step(net.body, _State())


def infer_shapes(net: Net, input_shape: Shape) -> list[tuple[Layer, Shape]]:
    """Each layer's output shape for inputs of ``input_shape`` (no batch axis).

    Arguments:
        net: the layer graph.
        input_shape: e.g. ``(8, 8, 1)`` for 8x8 images with one channel, or
            ``(64,)`` for 64 features.

    Returns:
        ``(layer, output shape)`` for every layer in execution order, depth
        first; a Residual comes before the layers of its paths and carries the
        shape of the sum. Serial nodes are not listed.

    Raises:
        InputError: ``input_shape`` is not a tuple of positive integers.
        SpecError: a layer does not fit its input, located at the layer.
    """
    from ..diagnostics import InputError

    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else None
    if (
        not shape
        or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in shape)
    ):
        raise InputError(
            f"input shape must be a non-empty tuple of positive integers, got {input_shape!r}"
        )
    out: list[tuple[Layer, Shape]] = []

    def run(serial: Layer, shape: Shape) -> Shape:
        for layer in serial.children():
            if layer.combine == "sequence":  # a repeat: its layers, listed in place
                shape = run(layer, shape)
                continue
            if layer.combine not in (None, "sequence"):
                slot = len(out)
                out.append((layer, ()))
                for path in layer.children():
                    if path is not None:
                        run(path, shape)
                try:
                    shape = layer.out_shape(shape)
                except ShapeError as e:
                    raise SpecError(str(e), layer.span) from None
                out[slot] = (layer, shape)
                continue
            try:
                new = layer.out_shape(shape)
            except ShapeError as e:
                notes = [] if str(shape) in str(e) else [f"its input has shape {shape}"]
                raise SpecError(str(e), layer.span, notes) from None
            out.append((layer, new))
            shape = new
        return shape

    run(net.body, shape)
    return out

