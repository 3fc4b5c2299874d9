"""One class per layer; ``BUILTINS`` maps spec names to classes.

A layer class registers itself under its ``spec_name`` when its module is
imported (``base.REGISTRY``); every layer module is imported here, so after
``import ntkdsl.compiler.layers`` the registry holds the whole language.
"""

from .affine import Affine, Conv, Dense
from .attention import SelfAttention
from .base import DECLARATIONS, REGISTRY, Layer, LayerArgError, Shape, ShapeError
from .combinators import Residual, Serial
from .convolutions import ConvLocal, ConvTranspose
from .dropout import Dropout
from .formula import FormulaActivation
from .graph import Aggregate
from .normalization import LayerNorm
from .pointwise import ABRelu, Erf, Gelu, Identity, LeakyRelu, Pointwise, Relu, Sin, Tanh
from .pointwise_more import (
    Abs,
    Cos,
    Exp,
    Gaussian,
    Hermite,
    Monomial,
    Polynomial,
    Rbf,
    RectifiedMonomial,
    Sigmoid,
    Sign,
)
from .pooling import GlobalSumPool, SumPool
from .repeat import Repeat
from .resize import Resize
from .structural import AvgPool, Flatten, GlobalAvgPool, Structural

#: the built-in layers of the language, by the name a spec uses
BUILTINS: dict[str, type[Layer]] = REGISTRY

#: every pointwise layer class (the symbolic checks are parametrised over it)
POINTWISE: tuple[type[Pointwise], ...] = tuple(
    cls for cls in REGISTRY.values() if issubclass(cls, Pointwise))

__all__ = [
    "BUILTINS",
    "DECLARATIONS",
    "POINTWISE",
    "REGISTRY",
    "ABRelu",
    "Abs",
    "Affine",
    "Aggregate",
    "AvgPool",
    "Conv",
    "ConvLocal",
    "ConvTranspose",
    "Cos",
    "Dense",
    "Dropout",
    "Erf",
    "Exp",
    "Flatten",
    "FormulaActivation",
    "Gaussian",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSumPool",
    "Hermite",
    "Identity",
    "Layer",
    "LayerArgError",
    "LayerNorm",
    "LeakyRelu",
    "Monomial",
    "Pointwise",
    "Polynomial",
    "Rbf",
    "RectifiedMonomial",
    "Relu",
    "Repeat",
    "Residual",
    "Resize",
    "SelfAttention",
    "Serial",
    "Shape",
    "ShapeError",
    "Sigmoid",
    "Sign",
    "Sin",
    "Structural",
    "SumPool",
    "Tanh",
]
