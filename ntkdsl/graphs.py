"""Graph inputs: adjacency files (dense ``.npy`` or a sparse edge list ``.npz``), and
kernels between the nodes of graphs (node classification).

A net with ``Aggregate`` takes node features ``x`` of shape ``(n, nodes, C)`` and,
with them, one adjacency per graph, ``A`` of shape ``(n, nodes, nodes)``:
``A[g, i, j]`` is the weight of the edge from node ``i`` to node ``j`` of graph ``g``
(see docs/language.md, "Graph inputs"). Wherever an adjacency is accepted
(``Model.kernel_fn``, ``apply``, ``empirical_ntk``, ``predict_fn``,
:func:`node_kernel`, the CLI) it may be a dense array or an :class:`EdgeList`.

The edge-list file (``.npz``, read without pickle) holds

=========== ======================= ==================================================
key         shape, dtype            meaning
=========== ======================= ==================================================
``graph``   ``(E,)`` integer        which graph (row of ``x``) each edge belongs to
``src``     ``(E,)`` integer        the edge's tail node (``0 <= src < nodes``)
``dst``     ``(E,)`` integer        the edge's head node
``weight``  ``(E,)`` real, optional the edge's weight (default 1); repeated edges add
``nodes``   scalar integer          nodes per graph
``graphs``  scalar integer, opt.    number of graphs (default: as many as ``x`` has rows)
=========== ======================= ==================================================

An undirected edge is two arcs (``i -> j`` and ``j -> i``). Kernels need each graph's
adjacency as a dense ``(nodes, nodes)`` matrix (the kernel between two graphs is
``O(nodes^2)`` anyway), so an edge list is expanded when it is used; the file stays
small for large sparse graphs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .diagnostics import InputError

EDGE_KEYS = ("graph", "src", "dst")


@dataclass(frozen=True, eq=False)
class EdgeList:
    """A batch of graphs as directed, weighted edges (see the module docstring).

    Attributes:
        graph, src, dst: integer arrays ``(E,)``.
        weight: real array ``(E,)`` or ``None`` (every weight 1).
        nodes: nodes per graph.
        graphs: number of graphs, or ``None``: as many as the inputs have rows.
    """

    graph: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    nodes: int
    weight: np.ndarray | None = None
    graphs: int | None = None

    def __post_init__(self) -> None:
        for name in EDGE_KEYS:
            a = np.asarray(getattr(self, name))
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise InputError(f"edge list: '{name}' must be a 1-D integer array, got "
                                 f"shape {a.shape} dtype {a.dtype}")
            object.__setattr__(self, name, a)
        e = len(self.src)
        if len(self.graph) != e or len(self.dst) != e:
            raise InputError(f"edge list: 'graph', 'src', 'dst' must have one entry per edge, "
                             f"got lengths {len(self.graph)}, {e}, {len(self.dst)}")
        if self.weight is not None:
            w = np.asarray(self.weight)
            if w.shape != (e,) or w.dtype.kind not in "biuf" or not np.isfinite(w).all():
                raise InputError(f"edge list: 'weight' must be {e} finite numbers, got shape "
                                 f"{w.shape} dtype {w.dtype}")
            object.__setattr__(self, "weight", w)
        nodes = _count(self.nodes, "nodes")
        object.__setattr__(self, "nodes", nodes)
        if self.graphs is not None:
            object.__setattr__(self, "graphs", _count(self.graphs, "graphs"))
        for name, hi in (("src", nodes), ("dst", nodes), ("graph", self.graphs)):
            a = getattr(self, name)
            if len(a) and (a.min() < 0 or (hi is not None and a.max() >= hi)):
                bad = int(a.min()) if a.min() < 0 else int(a.max())
                limit = f"[0, {hi})" if hi is not None else ">= 0"
                raise InputError(f"edge list: '{name}' holds {bad}, outside {limit}")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(graphs, nodes, nodes)`` (graphs ``-1`` when the file does not say)."""
        return (-1 if self.graphs is None else self.graphs, self.nodes, self.nodes)

    def to_dense(self, graphs: int | None = None) -> np.ndarray:
        """The dense adjacency ``(graphs, nodes, nodes)`` (float64; repeated edges add).

        Arguments:
            graphs: the number of graphs when the file does not say (the inputs' rows);
                a mismatch of the file's ``nodes`` or ``graphs`` with the inputs is
                reported by shape when it is used.
        """
        n = self.graphs if self.graphs is not None else graphs
        if n is None:
            n = int(self.graph.max()) + 1 if len(self.graph) else 0
        if len(self.graph) and self.graph.max() >= n:
            raise InputError(f"edge list: 'graph' holds {int(self.graph.max())}, but there "
                             f"are {n} graphs")
        a = np.zeros((n, self.nodes, self.nodes))
        w = np.ones(len(self.src)) if self.weight is None else self.weight.astype(float)
        np.add.at(a, (self.graph, self.src, self.dst), w)
        return a

    @classmethod
    def from_dense(cls, adjacency) -> EdgeList:
        """The edges (non-zero entries) of a dense ``(graphs, nodes, nodes)`` adjacency."""
        a = np.asarray(adjacency)
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise InputError(f"expected an adjacency (graphs, nodes, nodes), got {a.shape}")
        g, s, d = np.nonzero(a)
        w = a[g, s, d]
        weight = None if np.all(w == 1) else w.astype(float)
        return cls(graph=g, src=s, dst=d, weight=weight, nodes=a.shape[1], graphs=a.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the edge list to an ``.npz`` (atomically; see the module docstring)."""
        from .io import save_npz

        arrays = {"graph": self.graph, "src": self.src, "dst": self.dst,
                  "nodes": np.asarray(self.nodes)}
        if self.weight is not None:
            arrays["weight"] = self.weight
        if self.graphs is not None:
            arrays["graphs"] = np.asarray(self.graphs)
        save_npz(str(path), arrays)


def _count(v, name: str) -> int:
    a = np.asarray(v)
    if a.shape != () or a.dtype.kind not in "iu" or int(a) <= 0:
        raise InputError(f"edge list: '{name}' must be a positive integer, got {v!r}")
    return int(a)


def load_adjacency(path: str | Path, what: str = "adjacency"):
    """An adjacency file: a dense ``.npy`` ``(graphs, nodes, nodes)`` or an edge-list
    ``.npz`` (module docstring). Never unpickles.

    Arguments:
        path: the file.
        what: its name in messages (a CLI flag).

    Returns:
        A numpy array or an :class:`EdgeList`.

    Raises:
        InputError: unreadable, or an ``.npz`` that is not an edge list.
    """
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{what}: cannot read {p}: {e}") from None
    if isinstance(z, np.ndarray):
        return z
    with z:
        keys = set(z.files)
        missing = [k for k in (*EDGE_KEYS, "nodes") if k not in keys]
        if missing:
            raise InputError(f"{what}: {p} is an .npz without {', '.join(missing)}: an "
                             "edge list holds graph, src, dst, nodes (and optionally weight, "
                             "graphs); a dense adjacency is an .npy")
        return EdgeList(graph=z["graph"], src=z["src"], dst=z["dst"], nodes=z["nodes"],
                        weight=z["weight"] if "weight" in keys else None,
                        graphs=z["graphs"] if "graphs" in keys else None)


def dense(adjacency, graphs: int | None = None) -> np.ndarray:
    """An adjacency as a dense array (an :class:`EdgeList` expanded for ``graphs``)."""
    if isinstance(adjacency, EdgeList):
        return adjacency.to_dense(graphs=graphs)
    return adjacency


# ---------------------------------------------------------------------------------------------
# the finite net on packed rows (empirical NTK), node-level kernels


def _checked_pair(model, x1, adjacency1, x2, adjacency2):
    from .compiler.adjacency import pack_inputs
    from .compiler.inputs import check_inputs

    net = getattr(model, "net", model)
    a1, a2 = check_inputs(net, x1, x2)
    n1 = a1.shape[0]
    adjacency1 = dense(adjacency1, n1)
    adjacency2 = dense(adjacency2, None if a2 is None else a2.shape[0])
    return net, a1, a2, pack_inputs(net, a1, a2, adjacency1, adjacency2)


@dataclass(frozen=True)
class _PackedApply:
    """``apply(net, params, features, adjacency)`` on packed rows (a hashable function)."""

    net: object
    channels: int

    def __call__(self, params, xp):
        from .compiler.network import apply

        c = self.channels
        return apply(self.net, params, xp[..., :c], xp[..., c:])


def packed_apply(model, x1, adjacency1, x2=None, adjacency2=None):
    """The finite net as a function of packed rows, and the packed inputs.

    Functions of ``apply_fn(params, x)`` that treat rows independently (the empirical
    NTK) then work on graph inputs unchanged.

    Returns:
        ``(apply_fn, p1, p2)``: ``p1`` ``(n1, nodes, C + nodes)``, ``p2`` or ``None``.
    """
    net, a1, _, (p1, p2) = _checked_pair(model, x1, adjacency1, x2, adjacency2)
    return _PackedApply(net, a1.shape[-1]), p1, p2


@functools.lru_cache(maxsize=32)
def _node_fn(net, shape: tuple[int, ...], gets: tuple[str, ...]):
    import jax
    import jax.numpy as jnp

    from .compiler import covariance as cv
    from .compiler.analysis import needs_cov_in, plan
    from .compiler.kernels import _input_state

    p = plan(net, shape, force_full=True)  # every pair of nodes, up to the output
    need_cov = needs_cov_in(p.layer, False)

    def fn(x1, x2):
        k = cv.run(p, _input_state(x1, x2, p, None, None, "ntk" in gets, need_cov))
        outs = []
        for g in gets:
            a = k.nngp if g == "nngp" else k.ntk
            a = jnp.zeros_like(k.nngp) if a is None else a
            # (nodes, nodes', n1, n2) -> (n1 * nodes, n2 * nodes')
            a = jnp.transpose(a, (2, 0, 3, 1))
            outs.append(a.reshape(a.shape[0] * a.shape[1], a.shape[2] * a.shape[3]))
        return tuple(outs)

    return jax.jit(fn)


def node_kernel(model, x1, adjacency1, x2=None, adjacency2=None, get=("nngp", "ntk"), *,
                dtype=None):
    """The NNGP kernel and/or NTK between the nodes of graphs (node classification).

    For a net with ``Aggregate`` whose output keeps the node axis (no
    ``GlobalAvgPool`` / ``GlobalSumPool`` / ``Flatten`` readout), entry
    ``[g * nodes + p, h * nodes + q]`` is the kernel between the output at node ``p``
    of graph ``g`` of ``x1`` and the output at node ``q`` of graph ``h`` of ``x2``
    (per output channel, as ``kernel_fn``'s entries are). For one graph, pass
    ``x1`` ``(nodes, C)`` and ``adjacency1`` ``(nodes, nodes)`` (or with a batch axis of 1)
    and get the ``(nodes, nodes)`` kernel between its nodes, e.g. for a GP over its
    labelled nodes (``ntkdsl.predict.gp_inference`` on the rows and columns of the
    train and test nodes).

    Not tiled: the whole ``(nodes^2, n1, n2)`` state is held per layer, so this is meant
    for a few graphs of up to a few thousand nodes.

    Arguments:
        model: a :class:`ntkdsl.Model` (or a ``Net``).
        x1: node features ``(n1, nodes, C)`` or one graph ``(nodes, C)``.
        adjacency1: ``(n1, nodes, nodes)`` (or ``(nodes, nodes)``), or an :class:`EdgeList`.
        x2, adjacency2: the second set of graphs; ``None``: ``x1`` with itself.
        get: ``"nngp"``, ``"ntk"`` or a tuple of them.
        dtype: ``float64`` (default) or ``float32``.

    Returns:
        For a string ``get`` an array ``(n1 * nodes, n2 * nodes)``; for a tuple a
        :class:`ntkdsl.Kernel`. numpy, computed in a local float64 context.

    Raises:
        InputError: the net does not aggregate or reads out over nodes; bad inputs or
            adjacencies (as ``kernel_fn``).
    """
    import jax

    from .compiler.adjacency import aggregates
    from .compiler.kernels import check_finite, parse_dtype, parse_get
    from .result import Kernel

    gets, single = parse_get(get)
    dt = parse_dtype(dtype)
    net = getattr(model, "net", model)
    if not aggregates(net):
        raise InputError(f"node_kernel needs a net with Aggregate; net '{net.name}' has none "
                         "(use kernel_fn)")

    def one_graph(x, a):
        if x is not None and np.ndim(x) == 2 and a is not None and not isinstance(a, EdgeList) \
                and np.ndim(a) == 2:
            return np.asarray(x)[None], np.asarray(a)[None]
        return x, a

    x1, adjacency1 = one_graph(x1, adjacency1)
    x2, adjacency2 = one_graph(x2, adjacency2)
    net, a1, _, (p1, p2) = _checked_pair(model, x1, adjacency1, x2, adjacency2)
    shape = tuple(a1.shape[1:])
    from .compiler.analysis import plan

    out_shape = plan(net, shape).out_shape
    if len(out_shape) != 2:
        raise InputError(
            f"node_kernel needs a net whose output keeps the node axis, (nodes, channels); "
            f"net '{net.name}' outputs {out_shape} for inputs {shape}: leave out the readout "
            "over nodes (GlobalAvgPool, GlobalSumPool, Flatten) for node-level kernels")
    with jax.enable_x64(True):
        p1 = np.asarray(p1, dt)
        p2 = None if p2 is None else np.asarray(p2, dt)
        res = _node_fn(net, shape, gets)(p1, p2)
        outs = [np.asarray(r) for r in res]
    for g, o in zip(gets, outs):
        check_finite(o, g, dt)
    if single:
        return outs[0]
    d = dict(zip(gets, outs))
    return Kernel(nngp=d.get("nngp"), ntk=d.get("ntk"))


def load_adjacency_for(path: str | None, flag: str, net, x, x_flag: str):
    """The CLI's adjacency option: load ``path`` (``None``: not given) and check it against
    the net and the node features ``x`` loaded from ``x_flag``.

    Arguments:
        path: the file (``.npy`` dense or ``.npz`` edge list), or ``None``.
        flag, x_flag: the two options, named in messages (``--adjacency1``, ``--x1``).
        net: the net.
        x: the node features (``None``: that input is not given; then ``path`` must be too).

    Returns:
        The dense adjacency, or ``None`` for a net that does not aggregate.

    Raises:
        InputError: naming the options (missing, unexpected, wrong shape, not finite).
    """
    from .compiler.adjacency import check_adjacency

    if x is None:
        if path is not None:
            raise InputError(f"{flag} was given without {x_flag}")
        return None
    a = None if path is None else load_adjacency(path, flag)
    return check_adjacency(net, tuple(x.shape), a, flag, x_flag)
