"""One class per layer; ``BUILTINS`` maps spec names to classes."""

from .affine import Conv, Dense
from .base import Layer, LayerArgError, Shape, ShapeError
from .combinators import Residual, Serial
from .pointwise import ABRelu, Erf, Gelu, Identity, LeakyRelu, Pointwise, Relu, Sin, Tanh
from .structural import AvgPool, Flatten, GlobalAvgPool

#: the built-in layers of the language, by the name a spec uses
BUILTINS: dict[str, type[Layer]] = {
    cls.spec_name: cls
    for cls in (
        Dense, Conv, Relu, LeakyRelu, ABRelu, Erf, Gelu, Sin, Tanh, Identity,
        AvgPool, GlobalAvgPool, Flatten,
    )
}

#: every pointwise layer class (the symbolic checks are parametrised over it)
POINTWISE: tuple[type[Pointwise], ...] = (
    Relu, LeakyRelu, ABRelu, Erf, Gelu, Sin, Tanh, Identity,
)

__all__ = [
    "BUILTINS", "POINTWISE", "ABRelu", "AvgPool", "Conv", "Dense", "Erf", "Flatten",
    "Gelu", "GlobalAvgPool", "Identity", "Layer", "LayerArgError", "LeakyRelu", "Pointwise",
    "Relu", "Residual", "Serial", "Shape", "ShapeError", "Sin", "Tanh",
]
