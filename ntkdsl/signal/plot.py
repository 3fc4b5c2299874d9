"""The figure of ``ntkdsl analyze --plot``: phase diagram, correlation map, convergence."""

from __future__ import annotations

import io
import math

import numpy as np

from . import maps
from .analysis import Analysis
from .chain import find_chain


def phase_grid(act, w2: np.ndarray, b2: np.ndarray, q_max: float = 1e8) -> np.ndarray:
    """``chi_1`` at the variance fixed point over a grid of ``(W^2, b^2)``.

    The fixed point is found for all points at once by bisection in ``log q``
    (the variance map minus the identity changes sign once for every
    nonlinearity here); where the variance has no finite fixed point below
    ``q_max`` the map is evaluated at ``q_max``, its limit on the plot.

    Arguments:
        act: the pointwise layer.
        w2, b2: arrays of the same shape.
        q_max: the largest variance searched.

    Returns:
        ``chi_1`` with the grid's shape.
    """
    w2, b2 = np.broadcast_arrays(np.asarray(w2, np.float64), np.asarray(b2, np.float64))
    lo = np.full(w2.shape, math.log(1e-12))
    hi = np.full(w2.shape, math.log(q_max))

    def g(logq):
        q = np.exp(logq)
        return w2 * maps.diag(act, q) + b2 - q

    up = g(hi) > 0
    for _ in range(60):
        mid = (lo + hi) / 2
        pos = g(mid) > 0
        lo = np.where(pos, mid, lo)
        hi = np.where(pos, hi, mid)
    q = np.where(up, q_max, np.exp((lo + hi) / 2))
    return w2 * maps.diag_dot(act, q)


def plot_analysis(model, analysis: Analysis, path) -> None:
    """Draw the analysis figure and write it (PNG, atomically) to ``path``.

    Panels: the order/chaos phase diagram of the net's nonlinearity over
    (``W_std^2``, ``b_std^2``) with the critical line and the spec's point; the
    correlation map ``c_{l+1}(c_l)``; the variance and the correlations layer by
    layer.

    Arguments:
        model: the compiled model the analysis is of.
        analysis: from :func:`ntkdsl.analyze`.
        path: the PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    from ..io import atomic_write

    chain = find_chain(model.net)
    act = chain.repeated.act
    a = analysis
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))

    # phase diagram
    ax = axes[0, 0]
    wmax = max(4.0, 1.3 * a.w2)
    bmax = max(0.3, 1.3 * a.b2)
    W, B = np.meshgrid(np.linspace(0.05 * wmax, wmax, 90), np.linspace(0.0, bmax, 70))
    chi = phase_grid(act, W, B)
    lc = np.log(np.clip(chi, 1e-3, 1e3))
    span = max(float(np.max(np.abs(lc))), 1e-3)
    mesh = ax.pcolormesh(W, B, lc, cmap="coolwarm", shading="auto",
                         norm=TwoSlopeNorm(0.0, -span, span))
    fig.colorbar(mesh, ax=ax, label=r"$\log \chi_1$ (blue: ordered, red: chaotic)")
    if np.nanmin(lc) < 0 < np.nanmax(lc):
        ax.contour(W, B, lc, levels=[0.0], colors="w", linestyles="--", linewidths=1)
    wc, bc = maps.critical_curve(act)
    if wc.size and np.ptp(wc) > 1e-9 * np.max(wc):
        keep = (bc <= bmax) & (wc <= wmax)
        ax.plot(wc[keep], bc[keep], "k-", lw=2, label=r"critical line $\chi_1 = 1$")
    elif wc.size:
        ax.axvline(float(wc[0]), color="k", lw=2,
                   label=rf"critical line $W^2 = {float(wc[0]):.4g}$")
    ax.plot([a.w2], [a.b2], marker="*", ms=16, color="gold", mec="k", ls="none",
            label=f"{a.net}: {a.phase}")
    ax.set_xlabel(r"$W_\mathrm{std}^2$")
    ax.set_ylabel(r"$b_\mathrm{std}^2$")
    ax.set_title(f"order / chaos of {act.describe()}")
    ax.set_xlim(W.min(), W.max())
    ax.set_ylim(0, bmax)
    ax.legend(loc="upper left", fontsize=8)

    # correlation map
    ax = axes[0, 1]
    q_ref = maps.reference_variance(
        maps.VarianceFixedPoint(a.q_star, a.q_slope, a.q_stable, None),
        a.q_trajectory[1] if len(a.q_trajectory) > 1 else 1.0, a.b2)
    c = np.linspace(-1, 1, 401)
    ax.plot(c, maps.correlation_map(a.w2, a.b2, act, q_ref, c), "C0-", label=r"$c_{l+1}(c_l)$")
    ax.plot(c, c, "k:", lw=1, label="identity")
    if a.c_star is not None:
        ax.plot([a.c_star], [a.c_star], "o", color="C3", label=f"c* = {a.c_star:.4g}")
    ax.set_xlabel(r"$c_l$")
    ax.set_ylabel(r"$c_{l+1}$")
    ax.set_title(rf"correlation map ($\chi_1$ = {a.chi_1:.4g}, $\xi_c$ = {a.xi_c:.3g})")
    ax.legend(fontsize=8)

    layers = np.arange(len(a.q_trajectory))
    ax = axes[1, 0]
    ax.semilogy(layers, a.q_trajectory, "C0.-", label="mean variance $q_l$")
    if 0 < a.q_star < math.inf:
        ax.axhline(a.q_star, color="C3", ls="--", label=f"q* = {a.q_star:.4g}")
    ax.set_xlabel("layer (0: inputs)")
    ax.set_ylabel("variance")
    ax.set_title(rf"variance with depth ($\xi_q$ = {a.xi_q:.3g})")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    ax.plot(layers, a.c_min_trajectory, "C0.-", label="least correlation")
    ax.plot(layers, a.c_max_trajectory, "C1.-", label="largest correlation")
    if a.c_star is not None:
        ax.axhline(a.c_star, color="C3", ls="--", label=f"c* = {a.c_star:.4g}")
    ax.set_xlabel("layer (0: inputs)")
    ax.set_ylabel("correlation of distinct inputs")
    ax.set_title("correlations with depth" + (" (given inputs)" if "given" in a.inputs
                                               else " (default input pairs)"))
    ax.legend(fontsize=8)

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()), flag="--plot")
