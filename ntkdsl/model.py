"""The compiled model: one spec's net with its kernels, finite network and predictions.

:class:`Model` is a thin facade; each capability lives in its own module
(``compiler/kernels.py``, ``compiler/network.py``, ``empirical.py``,
``predict.py``) and is built lazily, once, on first use.
"""

from __future__ import annotations

from pathlib import Path

from .compiler.graph import Net


class Model:
    """A net compiled from a spec.

    Arguments:
        net: the layer graph (from :func:`ntkdsl.load` / :func:`ntkdsl.parse`).
        trainable: the net parameters the net was compiled with as trainable
            (``kernel_fn(..., params=...)``, docs/fitting.md).
    """

    def __init__(self, net: Net, trainable: tuple[str, ...] = ()):
        self.net = net
        self.trainable = tuple(trainable)

    # compiled functions are cached on the (hashable) net in the compiler, not here,
    # so a Model pickles and unpickles at any time and recompiles lazily
    def __getstate__(self) -> dict:
        return {"net": self.net, "trainable": self.trainable}

    def __setstate__(self, state: dict) -> None:
        self.net = state["net"]
        self.trainable = tuple(state.get("trainable", ()))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Model) and other.net == self.net
                and other.trainable == self.trainable)

    @property
    def trainable_defaults(self) -> dict[str, float]:
        """``{name: default}`` of the trainable parameters, as compiled."""
        from .compiler.differentiable import defaults

        return defaults(self.net, self.trainable)

    def trainable_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """``{name: (low, high)}`` from the validation of the layer fields each sets."""
        from .compiler.differentiable import bounds

        return bounds(self.net, self.trainable)

    def __hash__(self) -> int:
        return hash(self.net)

    def __repr__(self) -> str:
        return f"Model({self.net.name!r}, {len(self.net.body.layers)} layers)"

    # -- infinite width (compiler/kernels.py) ---------------------------------
    def kernel_fn(self, x1, x2=None, get=("nngp", "ntk"), *, dtype=None, batch_size=None,
                  progress=None, out=None, adjacency1=None, adjacency2=None, params=None):
        """The analytic NNGP kernel and/or NTK between the rows of ``x1`` and ``x2``.

        With ``params={name: value}`` (a model compiled with ``trainable=``) the
        result is a jax array, a pure JAX function of the inputs and of those
        values (``jax.grad``/``jit``/``vmap`` work through it); ``dtype``,
        ``batch_size``, ``out`` and graph inputs are then not available
        (docs/fitting.md).

        Arguments:
            x1: inputs, channel last, shape ``(n1, *input_shape)``.
            x2: inputs ``(n2, *input_shape)``; ``None`` means ``x1`` with itself.
            get: ``"nngp"``, ``"ntk"`` or a tuple of them.
            dtype: ``float64`` (default) or ``float32``.
            batch_size: tile size over rows; ``None`` picks one from memory for
                large inputs.
            progress: show a progress bar (default: when there are many tiles and
                stderr is a terminal).
            out: optional ``{"nngp": array, "ntk": array}`` of preallocated ``(n1, n2)``
                outputs (e.g. ``np.memmap``) that the tiles are written into.
            adjacency1, adjacency2: for a net with ``Aggregate`` (graph inputs: ``x``
                node features ``(n, nodes, C)``), each graph's adjacency ``(n, nodes,
                nodes)``, an array or a :class:`ntkdsl.graphs.EdgeList`; an error for
                other nets (docs/language.md, "Graph inputs").

        Returns:
            With a string ``get``, an array ``(n1, n2)``; with a tuple, a
            :class:`ntkdsl.Kernel` with attributes ``nngp`` and ``ntk``.
        """
        if params is not None:
            return self._kernel_with_params(x1, x2, get, params, dtype=dtype,
                                            batch_size=batch_size, out=out,
                                            adjacency=(adjacency1, adjacency2))
        from .compiler.kernels import evaluate_kernel

        return evaluate_kernel(self, x1, x2, get, dtype=dtype, batch_size=batch_size,
                               progress=progress, out=out, adjacency1=adjacency1,
                               adjacency2=adjacency2)

    def node_kernel_fn(self, x1, adjacency1, x2=None, adjacency2=None, get=("nngp", "ntk"),
                       *, dtype=None):
        """The kernels between the nodes of graphs (node classification), for a net with
        ``Aggregate`` and no readout over nodes: ``(n1 * nodes, n2 * nodes)``.

        See :func:`ntkdsl.graphs.node_kernel` for the arguments.
        """
        from .graphs import node_kernel

        return node_kernel(self, x1, adjacency1, x2, adjacency2, get, dtype=dtype)

    # -- finite width (compiler/network.py, empirical.py) ----------------------
    def init(self, key, input_shape, *, net_params=None):
        """Random parameters of the finite network for inputs of ``input_shape``.

        ``net_params={name: value}`` (a model compiled with ``trainable=``) gives the
        weights at those net-parameter values, differentiably (they matter only in
        the standard parameterisation).

        ``input_shape`` is one input's shape, ``(features,)`` or ``(*spatial, channels)``;
        neural-tangents' form with a batch axis, ``(-1, *shape)`` (or any batch size),
        is accepted too when it has one axis more than the net's declared ``Input``
        or when its first entry is -1. Params follow your jax configuration (float32
        unless ``jax_enable_x64`` is on).
        """
        from .compiler.network import init

        shape = tuple(input_shape)
        declared = getattr(self.net, "input_shape", None)
        if shape and (shape[0] == -1 or (declared is not None
                                         and len(shape) == len(declared) + 1)):
            shape = shape[1:]
        if net_params is not None:
            from .compiler.differentiable import init as init_at

            return init_at(self.net, self.trainable, key, shape, net_params)
        return init(self.net, key, shape)

    def apply(self, params, x, adjacency=None, *, net_params=None):
        """The finite network's outputs for inputs ``x`` (pure, jittable); a net with
        ``Aggregate`` also takes each graph's ``adjacency`` ``(N, nodes, nodes)``.

        ``net_params={name: value}`` (a model compiled with ``trainable=``) runs the
        net at those net-parameter values, differentiably with respect to them
        (``params`` keeps its meaning: the weights).
        """
        from .compiler.network import apply

        if net_params is not None:
            if adjacency is not None:
                from .diagnostics import InputError

                raise InputError("net_params= is not available for graph inputs")
            from .compiler.differentiable import apply as apply_at

            return apply_at(self.net, self.trainable, params, x, net_params)

        return apply(self.net, params, x, adjacency)

    def empirical_ntk(self, params, x1, x2=None, *, adjacency1=None, adjacency2=None,
                      **kwargs):
        """The finite network's tangent kernel, averaged over outputs: ``(n1, n2)``
        (graph nets: with each input's adjacency, as :meth:`kernel_fn`)."""
        from .empirical import empirical_ntk

        if adjacency1 is None and adjacency2 is None:
            return empirical_ntk(self.apply, params, x1, x2, **kwargs)
        from .graphs import packed_apply

        fn, p1, p2 = packed_apply(self, x1, adjacency1, x2, adjacency2)
        return empirical_ntk(fn, params, p1, p2, **kwargs)

    def _kernel_with_params(self, x1, x2, get, params, *, dtype, batch_size, out, adjacency):
        from .compiler.differentiable import kernel
        from .diagnostics import InputError

        for name, v in (("dtype", dtype), ("batch_size", batch_size), ("out", out),
                        ("adjacency1", adjacency[0]), ("adjacency2", adjacency[1])):
            if v is not None:
                raise InputError(f"kernel_fn(params=...) takes no {name}= (the differentiable "
                                 "kernel is one untiled JAX computation in your precision)")
        return kernel(self.net, self.trainable, x1, x2, get, params)

    # -- dynamics and predictions (predict.py) ---------------------------------
    def predict_fn(self, x_train, y_train, **kwargs):
        """A jitted function ``(x_test, t) -> (mean, cov)`` of the NTK-GP / NNGP (eq. 13-16)."""
        from .model_predict import model_predict_fn

        return model_predict_fn(self, x_train, y_train, **kwargs)

    # -- neural-tangents front end (compat/) -----------------------------------
    def stax(self):
        """This net as a neural-tangents ``(init_fn, apply_fn, kernel_fn)`` triple.

        The triple composes with ``ntkdsl.compat.stax`` layers and works with
        ``ntkdsl.compat``'s functions; ``init_fn``/``apply_fn`` use this model's own
        parameter layout (``Model.init``), ``kernel_fn`` returns the compat ``Kernel``.
        """
        from .compat._nodes import NetNode
        from .compat._triple import StaxLayer

        return StaxLayer(NetNode(self.net))


def compile(source: str, *, net: str | None = None, filename: str | None = None,
            trainable=(), **overrides) -> Model:
    """Compile spec text into a :class:`Model`.

    Arguments:
        source: the spec text.
        net: which net of the file (needed when it holds several).
        filename: used in error messages and to resolve imports.
        trainable: names of net parameters (real numbers) that ``kernel_fn(...,
            params=...)`` and ``init``/``apply(..., net_params=...)`` take as
            differentiable arguments (docs/fitting.md); a string is one name.
        **overrides: values for the net's parameters.
    """
    from .compiler.frontend import parse

    names = _trainable_names(trainable)
    return _checked(Model(parse(source, net=net, filename=filename, trainable=names,
                                **overrides), names))


def compile_file(path: str | Path, *, net: str | None = None, trainable=(),
                 **overrides) -> Model:
    """Compile a spec file into a :class:`Model` (see :func:`compile`)."""
    from .compiler.frontend import load

    names = _trainable_names(trainable)
    return _checked(Model(load(path, net=net, trainable=names, **overrides), names))


def _trainable_names(trainable) -> tuple[str, ...]:
    from .diagnostics import InputError

    names = (trainable,) if isinstance(trainable, str) else tuple(trainable)
    if not all(isinstance(n, str) for n in names):
        raise InputError(f"trainable must be parameter names (strings), got {trainable!r}")
    return tuple(dict.fromkeys(names))


def _checked(model: Model) -> Model:
    if model.trainable:
        from .compiler.differentiable import check_compilable

        check_compilable(model.net)
    return model
