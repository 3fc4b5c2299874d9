"""The signal-propagation analysis of a net: fixed points, phase, depth scales,
and what they mean for its kernels at a given depth.

:func:`analyze` is the entry point (``ntkdsl analyze`` prints its result);
:func:`propagate` iterates the mean-field maps layer by layer on given inputs,
which for a fully connected chain is exactly the compiled kernel's own
recursion; :func:`warn_if_deep` prints the one-line warning other commands
show before an expensive run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..diagnostics import InputError
from . import maps
from .chain import Block, Chain, find_chain

#: the correlations of the default input pairs (unit variances) when no inputs are given
DEFAULT_CORRELATIONS = (-0.5, 0.0, 0.5, 0.9, 0.99)
#: |chi_1 - 1| at most this counts as critical
CRITICAL_TOL = 1e-6
#: condition numbers above this are singular to float64 (1 / eps = 4.5e15)
SINGULAR_COND = 1e15
#: condition numbers above this make solves lose more than half of float64's digits
ILL_COND = 1e8
#: at most this many rows of the user's inputs go through model.kernel_fn
SAMPLE_ROWS = 200


@dataclass(frozen=True)
class Propagation:
    """Kernels of the pre-activations layer by layer, from the maps.

    Attributes:
        nngp: the output's NNGP matrix (entries as given: ``(n, n)`` or pairs).
        ntk: the output's NTK (``None`` under the standard parameterisation).
        diag: per-input variances at the output.
        ntk_diag: per-input NTK ``Theta(x, x)`` at the output (``None`` with ``ntk``).
        q: mean variance at each layer (index 0: the inputs).
        c_min, c_max: least and largest correlation of distinct pairs at each layer.
        layers: per-layer ``(nngp, ntk)`` when asked for (``record=True``), else ``()``.
        output: what the last entry is (``"readout"``, ``"post-activation"``,
            ``"pre-activation of the last block"``).
    """

    nngp: np.ndarray
    ntk: np.ndarray | None
    diag: np.ndarray
    ntk_diag: np.ndarray | None
    q: tuple[float, ...]
    c_min: tuple[float, ...]
    c_max: tuple[float, ...]
    layers: tuple
    output: str


def _blocks_for_depth(chain: Chain, depth: int) -> tuple[Block, ...]:
    if depth <= len(chain.blocks):
        return chain.blocks[:depth]
    return chain.blocks + (chain.repeated,) * (depth - len(chain.blocks))


def _corr(k, d, ia, ib):
    with np.errstate(divide="ignore", invalid="ignore"):
        return k / np.sqrt(d[ia] * d[ib])


def propagate(chain: Chain, depth: int, k0: np.ndarray, d0: np.ndarray, ia: np.ndarray,
              ib: np.ndarray, *, end: str | None = None, record: bool = False) -> Propagation:
    """Iterate the maps through ``depth`` blocks (and the readout) on given input kernels.

    ``K' = w2 T(K) + b2`` and, under the NTK parameterisation,
    ``Theta' = K' + w2 Tdot(K) Theta`` per affine layer, each entry from its own
    two variances: for a fully connected chain this is exactly the compiled
    model's recursion.

    Arguments:
        chain: from :func:`find_chain`.
        depth: how many blocks (the chain's own, then its repeated block).
        k0: input covariances (any shape), entry ``e`` between inputs ``ia[e]`` and ``ib[e]``.
        d0: the inputs' variances ``(n,)``.
        ia, ib: integer arrays of ``k0``'s shape indexing ``d0``.
        end: ``"readout"`` to apply the chain's readout, ``"act"`` to end with the last
            block's nonlinearity, ``None`` to stop at the last block's pre-activation
            (default: what the net does after the chain).
        record: keep every layer's ``(nngp, ntk)``.

    Returns:
        A :class:`Propagation`.
    """
    if end is None:
        end = ("readout" if chain.readout is not None
               else "act" if not chain.uncovered else None)
    blocks = _blocks_for_depth(chain, depth)
    affines = [b.affine for b in blocks]
    if end == "readout" and chain.readout is not None:
        affines.append(chain.readout)
    acts = [b.act for b in blocks]
    ntk_ok = chain.parameterization == "ntk"
    distinct = _corr(k0, d0, ia, ib) < 1 - 1e-9
    if ia.shape == ib.shape and ia.ndim == 2:
        distinct &= ia < ib

    def stats(k, d):
        c = _corr(k, d, ia, ib)[distinct]
        return (float(np.mean(d)), float(np.min(c)) if c.size else math.nan,
                float(np.max(c)) if c.size else math.nan)

    k, d = np.asarray(k0, np.float64), np.asarray(d0, np.float64)
    th = thd = None
    qs, cmin, cmax = [stats(k, d)[0]], [stats(k, d)[1]], [stats(k, d)[2]]
    layers = []
    with np.errstate(over="ignore", invalid="ignore"):
        for j, aff in enumerate(affines):
            w2, b2 = float(aff.W_std) ** 2, float(aff.b_std) ** 2
            if j == 0:
                k, d = w2 * k + b2, w2 * d + b2
                if ntk_ok:
                    th, thd = k.copy(), d.copy()
            else:
                act = acts[j - 1]
                t, td = maps.t_pair(act, d[ia], k, d[ib])
                dt, dtd = maps.t_pair(act, d, d, d)
                k, dn = w2 * t + b2, w2 * dt + b2
                if ntk_ok:
                    th, thd = k + w2 * td * th, dn + w2 * dtd * thd
                d = dn
            q, lo, hi = stats(k, d)
            qs.append(q)
            cmin.append(lo)
            cmax.append(hi)
            if record:
                layers.append((k.copy(), None if th is None else th.copy()))
        output = "readout" if end == "readout" and chain.readout is not None else \
            "pre-activation of the last block"
        if end == "act" and acts:
            act = acts[-1]
            t, td = maps.t_pair(act, d[ia], k, d[ib])
            dt, dtd = maps.t_pair(act, d, d, d)
            if ntk_ok:
                th, thd = td * th, dtd * thd
            k, d = t, dt
            output = "post-activation"
    return Propagation(k, th, d, thd, tuple(qs), tuple(cmin), tuple(cmax), tuple(layers), output)


def input_kernels(x) -> tuple[np.ndarray, np.ndarray]:
    """The inputs' covariance matrix and variances, as the first layer sees them.

    ``K0[i, j] = x_i . x_j / size`` over all axes but the batch: for a fully
    connected net ``x_i . x_j / d``; for a convolutional one the same-position
    covariance averaged over positions, ``mean_p x_i[p] . x_j[p] / C``.

    Arguments:
        x: inputs ``(n, ...)``.

    Returns:
        ``(K0, diag)``, shapes ``(n, n)`` and ``(n,)``.

    Raises:
        InputError: not a finite float array with a batch axis.
    """
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"inputs: expected a numeric array (n, ...) with n >= 1, got dtype "
                         f"{x.dtype} and shape {x.shape}")
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise InputError("inputs: expected finite values, got NaN or inf")
    k0 = flat @ flat.T / flat.shape[1]
    return k0, np.diag(k0).copy()


def _cond(m) -> float:
    m = (np.asarray(m, np.float64) + np.asarray(m, np.float64).T) / 2
    if not np.all(np.isfinite(m)):
        return math.inf
    lam = np.linalg.eigvalsh(m)
    return math.inf if lam[0] <= 0 else float(lam[-1] / lam[0])


def _eta(m) -> float | None:
    m = (np.asarray(m, np.float64) + np.asarray(m, np.float64).T) / 2
    if not np.all(np.isfinite(m)):
        return None
    lam = np.linalg.eigvalsh(m)
    return None if lam[-1] <= 0 else float(2.0 / (max(lam[0], 0.0) + lam[-1]))


@dataclass(frozen=True)
class Analysis:
    """The signal-propagation theory of one net (see docs/analyze.md).

    Attributes:
        net: the net's name.
        block: the repeated block the theory iterates, in words.
        covered: what part of the net the maps follow, in words.
        w2, b2, activation: the block's weight and bias variances and nonlinearity.
        q_star: the variance fixed point (``0.0`` or ``inf`` when there is none finite).
        q_slope: the variance map's slope there; ``q_stable``: ``|q_slope| < 1``.
        chi_1: ``w2 E[phi'(u)^2]`` at ``q*``.
        phase: ``"ordered"`` (chi_1 < 1), ``"chaotic"`` (> 1) or ``"critical"``.
        c_star: the correlation fixed point (1 in order); ``None`` when every
            correlation is preserved (a linear limit).
        chi_c: the correlation map's slope at ``c*``.
        xi_q, xi_c: depth scales ``-1/log(slope)`` (``inf``: no geometric convergence).
        critical_w2: the critical weight variance at this ``b2``, numerically.
        critical_line, critical_line_latex: the critical line in closed form
            (sympy), ``None`` where none is found or it was not asked for.
        depth: the depth (blocks) the predictions are for.
        inputs: which inputs the predictions use, in words.
        output: which kernel the predictions describe.
        q_out: the mean variance there.
        c_mean, c_spread: mean and half-range of the distinct pairs' correlations there.
        c_max: the largest such correlation.
        nngp_cond_predicted, ntk_cond_predicted: condition numbers of the predicted
            matrices (inputs given) or of the most correlated default pair's 2x2 matrix.
        nngp_cond, ntk_cond: of ``model.kernel_fn``'s matrices on a sample of the inputs.
        kernel_agreement: largest ``|c_predicted - c_kernel_fn|`` on that sample.
        ntk_scale: the predicted mean NTK diagonal (sets ``eta_critical``).
        eta_critical: ``2 / (lambda_min + lambda_max)`` of the sample's NTK (kernel_fn),
            else of the predicted NTK; ``None`` without inputs.
        q_trajectory, c_min_trajectory, c_max_trajectory: per layer, inputs first.
        notes: facts about the analysis itself (what it approximates).
        warnings: plain-words warnings about the kernels at this depth.
    """

    net: str
    block: str
    covered: str
    w2: float
    b2: float
    activation: str
    q_star: float
    q_slope: float
    q_stable: bool
    chi_1: float
    phase: str
    c_star: float | None
    chi_c: float
    xi_q: float
    xi_c: float
    critical_w2: float | None
    critical_line: str | None
    critical_line_latex: str | None
    depth: int
    inputs: str
    output: str
    q_out: float
    c_mean: float | None
    c_spread: float | None
    c_max: float | None
    nngp_cond_predicted: float | None
    ntk_cond_predicted: float | None
    nngp_cond: float | None
    ntk_cond: float | None
    kernel_agreement: float | None
    ntk_scale: float | None
    eta_critical: float | None
    q_trajectory: tuple[float, ...]
    c_min_trajectory: tuple[float, ...]
    c_max_trajectory: tuple[float, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        """A JSON-ready dict: tuples become lists, ``inf`` / NaN become ``None``."""

        def clean(v):
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, tuple | list):
                return [clean(u) for u in v]
            return v

        return {k: clean(v) for k, v in asdict(self).items()}


def _phase(chi_1: float) -> str:
    if abs(chi_1 - 1.0) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi_1 < 1 else "chaotic"


def _fmt_c(c: float) -> str:
    if c >= 1.0:
        return "1 (to float64)"
    return f"1 - {1 - c:.1e}" if c > 0.999 else f"{c:.4g}"


def _warnings(a: dict, fp: maps.VarianceFixedPoint, q_in: float) -> list[str]:
    out = []
    depth, phase = a["depth"], a["phase"]
    cond = a["nngp_cond"] if a["nngp_cond"] is not None else a["nngp_cond_predicted"]
    c_mean, c_spread = a["c_mean"], a["c_spread"]
    where = f"in the {phase} phase; at depth {depth}"
    if c_mean is not None and math.isfinite(c_mean):
        pairs = (f"every pair of distinct inputs has correlation {_fmt_c(c_mean)} "
                 f"+- {c_spread:.1e}")
    else:
        pairs = "the correlations are not finite"
    if cond is not None and cond > SINGULAR_COND:
        out.append(f"{where} {pairs}: the NNGP matrix will be singular to float64 "
                   + (f"(condition number {cond:.1e})" if math.isfinite(cond)
                      else "(not positive definite in float64)"))
    elif cond is not None and cond > ILL_COND:
        out.append(f"{where} {pairs}: the NNGP matrix is ill-conditioned (condition number "
                   f"{cond:.1e}: solves with it lose {math.log10(cond):.0f} of float64's "
                   "16 digits)")
    if (phase == "chaotic" and c_spread is not None and c_spread < 1e-6
            and (cond is None or cond <= ILL_COND)):
        out.append(f"{where} {pairs}: the NNGP kernel no longer tells the inputs apart "
                   "(its predictions are the same for every test input)")
    ntk_cond = a["ntk_cond"] if a["ntk_cond"] is not None else a["ntk_cond_predicted"]
    if ntk_cond is not None and ntk_cond > SINGULAR_COND:
        out.append(f"{where} the NTK matrix will be singular to float64 "
                   + (f"(condition number {ntk_cond:.1e})" if math.isfinite(ntk_cond)
                      else "(not positive definite in float64)"))
    q_out = a["q_out"]
    if not math.isfinite(q_out) or q_out > 1e12 * max(q_in, 1e-300) or \
            0 <= q_out < 1e-12 * q_in:
        note = fp.note or "the variance changes geometrically with depth"
        out.append(f"{note}; at depth {depth} the kernel's entries are about {q_out:.1e}"
                   + (" (float64 overflows)" if not math.isfinite(q_out) or q_out > 1e300
                      else ""))
    return out


def analyze(model, *, x=None, depth: int | None = None, closed_form: bool = True,
            kernels: bool = True, sample: int = SAMPLE_ROWS) -> Analysis:
    """The signal-propagation theory of ``model``'s net.

    Arguments:
        model: a compiled :class:`ntkdsl.Model` (or anything with ``.net``).
        x: inputs ``(n, ...)`` to predict the kernels' degeneracy on; ``None``: the
            default unit-variance pairs with correlations :data:`DEFAULT_CORRELATIONS`.
        depth: how many blocks to predict for (default: the net's own).
        closed_form: derive the critical line with sympy (~1 s the first time).
        kernels: with ``x``, also compute ``model.kernel_fn`` on at most ``sample`` rows
            for the real condition numbers and ``eta_critical``.
        sample: rows of ``x`` used for matrices (the predictions use them too).

    Returns:
        An :class:`Analysis`.

    Raises:
        NotCovered: (an :class:`ntkdsl.InputError`) the net is outside the theory.
        InputError: bad ``depth`` or ``x``.
    """
    net = model.net
    chain = find_chain(net)
    if depth is None:
        depth = len(chain.blocks)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError(f"depth must be a positive integer, got {depth!r}")
    blk = chain.repeated
    w2, b2, act = blk.w2, blk.b2, blk.act
    notes: list[str] = []

    if x is not None:
        x = np.asarray(x)
        if x.ndim >= 1 and x.shape[0] > sample:
            x = x[:sample]
            notes.append(f"the inputs' first {sample} rows are used")
        k0, d0 = input_kernels(x)
        n = k0.shape[0]
        ia, ib = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        inputs = f"{n} given inputs"
    else:
        c0 = np.asarray(DEFAULT_CORRELATIONS, np.float64)
        k0, d0 = c0, np.ones(1)
        ia = ib = np.zeros(c0.shape, int)
        inputs = ("default pairs of unit-variance inputs with correlations "
                  + ", ".join(f"{c:g}" for c in DEFAULT_CORRELATIONS))
    q_in = float(np.mean(d0))

    # the fixed points, from the repeated block's maps, started where its input would be
    first = chain.blocks[0]
    q1 = first.w2 * q_in + first.b2
    fp = maps.variance_fixed_point(w2, b2, act, q1)
    if fp.note:
        notes.append(fp.note)
    q_ref = maps.reference_variance(fp, q1, b2)
    limit = not (0.0 < fp.q_star < math.inf) or fp.note is not None
    chi_1 = float(w2 * maps.diag_dot(act, q_ref))
    cf = maps.correlation_fixed_point(w2, b2, act, q_ref)
    chi_c = cf.chi_c
    if limit and abs(chi_c - 1.0) < 1e-6:
        chi_c = 1.0  # the scale-free limit map: slope exactly 1 at c = 1
    if cf.c_star is None:
        notes.append("the correlation map is the identity in this limit (the net acts "
                     "linearly): every correlation is preserved")
    if limit and cf.c_star == 1.0 and chi_c == 1.0:
        notes.append("correlations approach 1 polynomially, not geometrically (the "
                     "scale-free limit of the correlation map has slope 1 at c = 1)")
    phase = _phase(chi_1)
    xi_q = maps.depth_scale(abs(fp.slope)) if fp.stable or fp.q_star == 0.0 else math.inf
    xi_c = maps.depth_scale(chi_c)

    crit_w2 = maps.critical_w2(act, b2)
    line = maps.critical_line(act) if closed_form else None

    if chain.convolutional:
        notes.append("Conv layers are followed through the per-position variance and "
                     "same-position correlation (exact for inputs with the same statistics "
                     "at every position and VALID/CIRCULAR padding)")
    if chain.uncovered:
        notes.append("not covered by the maps: " + ", ".join(chain.uncovered)
                     + "; the predictions stop at the last block's pre-activation")
    if chain.parameterization != "ntk":
        notes.append("the standard parameterisation's NTK depends on the widths: "
                     "its scale is not predicted")

    prop = propagate(chain, depth, k0, d0, ia, ib)
    c_all = _corr(prop.nngp, prop.diag, ia, ib)
    distinct = _corr(k0, d0, ia, ib) < 1 - 1e-9
    if x is not None:
        distinct &= ia < ib
    cd = c_all[distinct]
    c_mean = float(np.mean(cd)) if cd.size else None
    c_spread = float((np.max(cd) - np.min(cd)) / 2) if cd.size else None
    c_max = float(np.max(cd)) if cd.size else None

    ntk_scale = None if prop.ntk_diag is None else float(np.mean(prop.ntk_diag))
    if x is not None:
        nngp_cp = _cond(prop.nngp) if prop.nngp.shape[0] > 1 else None
        ntk_cp = (_cond(prop.ntk) if prop.ntk is not None and prop.ntk.shape[0] > 1 else None)
    else:
        # the 2x2 matrix of the most correlated pair: cond = (1 + c) / (1 - c)
        nngp_cp = None
        if c_max is not None and math.isfinite(c_max):
            nngp_cp = math.inf if c_max >= 1 else (1 + abs(c_max)) / (1 - abs(c_max))
        ntk_cp = None
        if prop.ntk is not None:
            ctd = _corr(prop.ntk, prop.ntk_diag, ia, ib)[distinct]
            if ctd.size and np.all(np.isfinite(ctd)):
                m = float(np.max(np.abs(ctd)))
                ntk_cp = math.inf if m >= 1 else (1 + m) / (1 - m)

    nngp_c = ntk_c = agree = eta = None
    if x is not None and kernels:
        k = model.kernel_fn(x, None, ("nngp", "ntk"), dtype="float64", progress=False)
        kn, kt = np.asarray(k.nngp, np.float64), np.asarray(k.ntk, np.float64)
        if kn.shape[0] > 1:
            nngp_c, ntk_c = _cond(kn), _cond(kt)
        eta = _eta(kt)
        if not chain.uncovered:
            dk = np.diag(kn)
            with np.errstate(divide="ignore", invalid="ignore"):
                ck = kn / np.sqrt(dk[:, None] * dk[None, :])
                diff = np.abs(ck - c_all)
            agree = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
    elif x is not None and prop.ntk is not None:
        eta = _eta(prop.ntk)

    fields = dict(
        net=net.name, block=blk.describe(),
        covered=_covered(chain), w2=w2, b2=b2, activation=act.describe(),
        q_star=float(fp.q_star), q_slope=float(fp.slope), q_stable=bool(fp.stable),
        chi_1=chi_1, phase=phase, c_star=cf.c_star, chi_c=float(chi_c),
        xi_q=float(xi_q), xi_c=float(xi_c), critical_w2=crit_w2,
        critical_line=None if line is None else line.text,
        critical_line_latex=None if line is None else line.latex,
        depth=depth, inputs=inputs, output=prop.output, q_out=float(np.mean(prop.diag)),
        c_mean=c_mean, c_spread=c_spread, c_max=c_max,
        nngp_cond_predicted=nngp_cp, ntk_cond_predicted=ntk_cp,
        nngp_cond=nngp_c, ntk_cond=ntk_c, kernel_agreement=agree,
        ntk_scale=ntk_scale, eta_critical=eta,
        q_trajectory=prop.q, c_min_trajectory=prop.c_min, c_max_trajectory=prop.c_max,
        notes=tuple(notes),
    )
    fields["warnings"] = tuple(_warnings(fields, fp, q_in))
    return Analysis(**fields)


def _covered(chain: Chain) -> str:
    n = len(chain.blocks)
    s = f"{n} block{'s' if n != 1 else ''} ({chain.run} identical: {chain.repeated.describe()})"
    if chain.readout is not None:
        s += (" + Flatten" if chain.flatten else "") + f" + readout {chain.readout.describe()}"
    return s


def warn_if_deep(model, file=None) -> str | None:
    """Print the analysis's first warning, one line, if the net's depth makes it matter.

    Cheap (no kernel is computed, no sympy) and never raises: a net outside the
    theory, or any failure, prints nothing.

    Arguments:
        model: a compiled :class:`ntkdsl.Model` (or its :class:`ntkdsl.Net`).
        file: where to print (default: ``sys.stderr``).

    Returns:
        The line printed, or ``None``.
    """
    import sys
    from types import SimpleNamespace

    try:
        target = model if hasattr(model, "net") else SimpleNamespace(net=model)
        a = analyze(target, closed_form=False, kernels=False)
        if not a.warnings:
            return None
        line = f"ntkdsl: warning: {a.warnings[0]} (see `ntkdsl analyze`)"
        print(line, file=file if file is not None else sys.stderr)
        return line
    except Exception:  # a warning must never break the command it decorates
        return None
