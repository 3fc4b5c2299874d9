"""The train kernel ``K(X, X)`` as square tiles of its upper triangle, each computed once.

Both consumers of a train kernel that is too large to hold, the on-disk tiler of
:mod:`.model` and the matrix-free operator of :mod:`.operators`, walk the same
``b x b`` tiles ``(I, J >= I)`` through :func:`ntkdsl.compiler.kernels.tile_kernels`
(the package's one tile computation), so a stored entry and a recomputed one are
the same bits. Every tile has the same padded shape, so the tile function compiles
once; calling ``tile_kernels`` directly, not ``Model.kernel_fn``, skips what a
public call repeats per call and that a loop over thousands of tiles would pay each
time (input checks, the search for repeated rows over all of ``X``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..diagnostics import InputError

TILE = 512
"""Tile side: measured on the FC net of ``bench_solvers.py`` (2 cores), 209-row tiles
cost 267 ns per entry and 512-row tiles 125 ns (the per-tile call overhead, ~7 ms,
is then amortised over 262k entries); larger tiles gained nothing."""

BAND_BYTES = 512 * 2**20
"""Memory for one band of rows (``b x n`` float64 per kernel) of the on-disk tiler."""


def prepared_rows(model, x) -> np.ndarray:
    """``x`` checked against ``model``'s net and cast to float64, as tiles take them.

    Raises:
        InputError: bad shape or values; a graph net (its rows need an adjacency).
    """
    from ..compiler.adjacency import aggregates
    from ..compiler.inputs import check_inputs
    from ..io import check_cast

    net = getattr(model, "net", model)
    if aggregates(net):
        raise InputError("the iterative solvers do not take graph nets (Aggregate): "
                         "use solver='dense'")
    a, _ = check_inputs(net, x, None)
    return check_cast(a, np.float64, "x_train")


def tile_side(n: int, n_kernels: int = 1, band_bytes: int = BAND_BYTES) -> int:
    """Rows of a tile for ``n`` points: :data:`TILE`, fewer when a band would not fit."""
    fit = band_bytes // max(1, 8 * n * n_kernels)
    return int(max(1, min(n, TILE, max(64, fit))))


def upper_tiles(model, rows: np.ndarray, gets: tuple[str, ...], b: int
                ) -> Iterator[tuple[int, int, int, int, dict[str, np.ndarray]]]:
    """Yield ``(i0, i1, j0, j1, {get: K[i0:i1, j0:j1]})`` for the tiles ``j0 >= i0``.

    Row-block by row-block, left to right; each tile is float64 and checked finite.

    Arguments:
        model: a compiled :class:`ntkdsl.Model`.
        rows: inputs from :func:`prepared_rows`.
        gets: ``("nngp",)``, ``("ntk",)`` or both.
        b: the tile side.

    Raises:
        InputError: a tile has NaN/inf entries (named by row and column).
    """
    import jax

    from ..compiler.kernels import tile_kernels

    n = rows.shape[0]
    with jax.enable_x64(True):
        for i0 in range(0, n, b):
            i1 = min(n, i0 + b)
            for j0 in range(i0, n, b):
                j1 = min(n, j0 + b)
                res = tile_kernels(model, rows[i0:i1], None if j0 == i0 else rows[j0:j1],
                                   b, b, gets, np.float64)
                for g in gets:
                    bad = ~np.isfinite(res[g])
                    if bad.any():
                        r, c = (int(v) for v in np.argwhere(bad)[0])
                        raise InputError(f"{g}_train_train: the kernel has NaN/inf entries "
                                         f"(the first at row {i0 + r}, column {j0 + c})")
                yield i0, i1, j0, j1, res
