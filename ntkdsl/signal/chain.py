"""Which part of a net the signal-propagation theory covers.

The mean-field maps act on a *chain of blocks*: an affine layer (Dense or
Conv) followed by one pointwise nonlinearity. :func:`find_chain` reads a
net's body and returns the leading chain (from the input up to the first
pooling or readout layer), the affine readout that closes it, and the block
the theory iterates (the longest run of identical blocks in the chain).

A Conv enters the chain as a Dense layer on the per-position variance and the
same-position covariance: the patch average of a covariance that is the same
at every position leaves it unchanged, so the per-position statistics follow
the fully connected maps exactly for VALID and CIRCULAR padding (SAME padding
counts zeros at the border; the maps describe the interior).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..diagnostics import InputError

if TYPE_CHECKING:
    from ..compiler.layers import Affine, Pointwise


class NotCovered(InputError):
    """The net's structure is outside the theory (one readable line)."""


@dataclass(frozen=True)
class Block:
    """One step of the mean-field maps: an affine layer, then a nonlinearity.

    Attributes:
        affine: the Dense or Conv layer.
        act: the pointwise layer after it.
    """

    affine: Affine
    act: Pointwise

    @property
    def w2(self) -> float:
        """The weight variance ``W_std**2``."""
        return float(self.affine.W_std) ** 2

    @property
    def b2(self) -> float:
        """The bias variance ``b_std**2``."""
        return float(self.affine.b_std) ** 2

    def signature(self) -> tuple:
        """What the maps depend on: ``(W_std^2, b_std^2, act)`` (not Dense vs Conv)."""
        return (self.w2, self.b2, self.act)

    def describe(self) -> str:
        """``Dense(W_std^2=2, b_std^2=0.1) -> Relu``."""
        kind = type(self.affine).__name__
        return f"{kind}(W_std^2={self.w2:.6g}, b_std^2={self.b2:.6g}) -> {self.act.describe()}"


@dataclass(frozen=True)
class Chain:
    """The part of a net the theory covers.

    Attributes:
        blocks: the leading chain of blocks, input first.
        repeated: the block the theory iterates (the longest run of identical
            blocks; the last such run on ties).
        run: how many identical blocks that run has.
        readout: the affine layer (no nonlinearity after it) that ends the net
            right after the chain (directly or after a Flatten), else ``None``.
        flatten: a Flatten sits between the chain and the readout.
        convolutional: the chain holds Conv layers.
        uncovered: descriptions of the layers after the chain that the maps do
            not follow (pooling, further blocks); empty when the whole net is covered.
        parameterization: ``"ntk"`` if every affine layer uses it, else ``"standard"``.
    """

    blocks: tuple[Block, ...]
    repeated: Block
    run: int
    readout: Affine | None
    flatten: bool
    convolutional: bool
    uncovered: tuple[str, ...]
    parameterization: str


def _is_affine(layer) -> bool:
    """Dense, Conv: the layers whose output is a fresh Gaussian (``gaussian == "makes"``).

    A layer that makes a Gaussian from its input's own variances (SelfAttention's
    attention weights) is no affine map the mean-field maps follow.
    """
    return layer.combine is None and layer.gaussian == "makes" and not layer.reads_variances


def _is_nonlinearity(layer) -> bool:
    return layer.combine is None and layer.kernel_map


def _is_pool(layer) -> bool:
    """Pooling, global pooling, Flatten: linear maps that act on the spatial axes."""
    return (layer.combine is None and not layer.kernel_map and layer.gaussian == "keeps"
            and layer.spatial in ("needs", "removes", "flattens")
            and not layer.uses_adjacency)  # graph aggregation: not a map of the theory


def _mixes_positions(layer) -> bool:
    """A window over positions (AvgPool-like), as opposed to a global readout."""
    return _is_pool(layer) and layer.spatial == "needs"


def _flat(node, out: list) -> None:
    for layer in node.children() if node.combine == "sequence" else (node,):
        if layer.combine == "sequence":
            _flat(layer, out)
        elif layer.combine is not None:
            raise NotCovered(
                f"ntkdsl analyze: branch statements ({layer.spec_name}) are not covered (the "
                "mean-field maps here are for chains of affine and pointwise layers; a branch "
                "statement combines its paths' kernels)"
            )
        else:
            out.append(layer)


def _name(layer) -> str:
    return layer.spec_name or type(layer).__name__


def find_chain(net) -> Chain:
    """Split a net into the chain the theory covers and what follows it.

    Arguments:
        net: a :class:`ntkdsl.Net` (``model.net``).

    Returns:
        The :class:`Chain`.

    Raises:
        NotCovered: a Residual, a layer the maps do not know, a nonlinearity not
            directly after an affine layer, no block at all, or pooling in the middle of
            the repeated part (a single block, then AvgPool, then more blocks: the maps
            would follow one layer of a deep net).
    """
    layers: list = []
    _flat(net.body, layers)
    items: list = []  # Block or layer
    i = 0
    while i < len(layers):
        layer = layers[i]
        if _is_affine(layer):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if nxt is not None and _is_nonlinearity(nxt):
                after = layers[i + 2] if i + 2 < len(layers) else None
                if after is not None and _is_nonlinearity(after):
                    raise NotCovered(
                        f"ntkdsl analyze: two nonlinearities in a row ({_name(nxt)}, "
                        f"{_name(after)}) are not covered: each block is one affine layer "
                        "and one nonlinearity"
                    )
                items.append(Block(layer, nxt))
                i += 2
                continue
            items.append(layer)
        elif _is_nonlinearity(layer):
            raise NotCovered(
                f"ntkdsl analyze: {_name(layer)} at layer {i + 1} does not follow an affine "
                "layer; the maps cover chains of Dense/Conv + nonlinearity blocks"
            )
        elif _is_pool(layer):
            items.append(layer)
        else:
            raise NotCovered(
                f"ntkdsl analyze: the layer {_name(layer)} is not covered by the mean-field maps "
                "(they know Dense, Conv, pointwise nonlinearities, AvgPool, Flatten and "
                "GlobalAvgPool)"
            )
        i += 1

    n_lead = 0
    while n_lead < len(items) and isinstance(items[n_lead], Block):
        n_lead += 1
    blocks = tuple(items[:n_lead])
    if not blocks:
        raise NotCovered(
            f"ntkdsl analyze: net {net.name!r} has no affine + nonlinearity block at its input; "
            "the theory needs at least one"
        )
    rest = items[n_lead:]
    later_blocks = sum(isinstance(it, Block) for it in rest)
    mixing = any(not isinstance(it, Block) and _mixes_positions(it) for it in rest)
    if n_lead == 1 and later_blocks and mixing:
        raise NotCovered(
            f"ntkdsl analyze: AvgPool in the middle of the repeated part (after block {n_lead} "
            f"of {n_lead + later_blocks}): pooling mixes positions, which the mean-field maps "
            "do not follow"
        )

    # the longest run of identical blocks (ties: the last run, the one deepest in the net)
    best, best_len, start = 0, 0, 0
    for j in range(1, len(blocks) + 1):
        if j == len(blocks) or blocks[j].signature() != blocks[start].signature():
            if j - start >= best_len:
                best, best_len = start, j - start
            start = j
    repeated = blocks[best]

    readout, flatten, uncovered = None, False, ()
    if len(rest) == 1 and not isinstance(rest[0], Block) and _is_affine(rest[0]):
        readout = rest[0]
    elif (len(rest) == 2 and not isinstance(rest[0], Block) and rest[0].spatial == "flattens"
          and not isinstance(rest[1], Block) and _is_affine(rest[1])):
        readout, flatten = rest[1], True
    elif rest:
        uncovered = tuple(it.describe() for it in rest)
    affines = [b.affine for b in blocks] + ([readout] if readout is not None else [])
    param = "ntk" if all(a.parameterization == "ntk" for a in affines) else "standard"
    return Chain(
        blocks=blocks,
        repeated=repeated,
        run=best_len,
        readout=readout,
        flatten=flatten,
        convolutional=any(b.affine.spatial != "any" for b in blocks),
        uncovered=uncovered,
        parameterization=param,
    )
