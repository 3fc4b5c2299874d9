"""The compiled model: one spec's net with its kernels, finite network and predictions.

:class:`Model` is a thin facade; each capability lives in its own module
(``compiler/kernels.py``, ``compiler/network.py``, ``empirical.py``,
``predict.py``) and is built lazily, once, on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compiler.graph import Net


class Model:
    """A net compiled from a spec.

    Arguments:
        net: the layer graph (from :func:`ntkdsl.load` / :func:`ntkdsl.parse`).
    """

    def __init__(self, net: Net):
        self.net = net
        self._cache: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"Model({self.net.name!r}, {len(self.net.body.layers)} layers)"

    # -- infinite width (compiler/kernels.py) ---------------------------------
    def kernel_fn(self, x1, x2=None, get=("nngp", "ntk"), *, dtype=None, batch_size=None,
                  progress=None):
        """The analytic NNGP kernel and/or NTK between the rows of ``x1`` and ``x2``.

        Arguments:
            x1: inputs, channel last, shape ``(n1, *input_shape)``.
            x2: inputs ``(n2, *input_shape)``; ``None`` means ``x1`` with itself.
            get: ``"nngp"``, ``"ntk"`` or a tuple of them.
            dtype: ``float64`` (default) or ``float32``.
            batch_size: tile size over rows; ``None`` picks one from memory for
                large inputs.
            progress: show a progress bar (default: when there are many tiles).

        Returns:
            With a string ``get``, an array ``(n1, n2)``; with a tuple, a
            :class:`ntkdsl.Kernel` with attributes ``nngp`` and ``ntk``.
        """
        from .compiler.kernels import evaluate_kernel

        return evaluate_kernel(self, x1, x2, get, dtype=dtype, batch_size=batch_size,
                               progress=progress)

    # -- finite width (compiler/network.py, empirical.py) ----------------------
    def init(self, key, input_shape):
        """Random parameters of the finite network for inputs of ``input_shape`` (no batch)."""
        from .compiler.network import init

        return init(self.net, key, tuple(input_shape))

    def apply(self, params, x):
        """The finite network's outputs for inputs ``x`` (pure, jittable)."""
        from .compiler.network import apply

        return apply(self.net, params, x)

    def empirical_ntk(self, params, x1, x2=None, **kwargs):
        """The finite network's tangent kernel, averaged over outputs: ``(n1, n2)``."""
        from .empirical import empirical_ntk

        return empirical_ntk(self.apply, params, x1, x2, **kwargs)

    # -- dynamics and predictions (predict.py) ---------------------------------
    def predict_fn(self, x_train, y_train, **kwargs):
        """A jitted function ``(x_test, t) -> (mean, cov)`` of the NTK-GP / NNGP (eq. 13-16)."""
        from .model_predict import model_predict_fn

        return model_predict_fn(self, x_train, y_train, **kwargs)


def compile(source: str, *, net: str | None = None, filename: str | None = None,
            **overrides) -> Model:
    """Compile spec text into a :class:`Model`.

    Arguments:
        source: the spec text.
        net: which net of the file (needed when it holds several).
        filename: used in error messages and to resolve imports.
        **overrides: values for the net's parameters.
    """
    from .compiler.frontend import parse

    return Model(parse(source, net=net, filename=filename, **overrides))


def compile_file(path: str | Path, *, net: str | None = None, **overrides) -> Model:
    """Compile a spec file into a :class:`Model` (see :func:`compile`)."""
    from .compiler.frontend import load

    return Model(load(path, net=net, **overrides))
