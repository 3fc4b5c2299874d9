"""``ntkdsl explain SPEC [--net NAME] [--set ...] [--latex] [--check]``.

Prints the paired NNGP/NTK recursion of a net layer by layer, in the form the
kernel compiler evaluates it (``compiler/kernel_rules.py``):

* affine (NTK parameterisation): ``K1 = W^2 * A(K0) + b^2``, ``Theta1 = K1 + W^2 * A(Theta0)``;
  standard parameterisation: ``K1`` the same, ``Theta1 = fan_in * A(K0) + W^2 * A(Theta0)
  [+ 1 with a bias]`` (what the peer library computes for ``parameterization='standard'``);
  ``A`` is the identity for Dense and a named patch average for Conv;
* pointwise: ``K1 = T(K0_11, K0, K0_22)``, ``Theta1 = Tdot(K0_11, K0, K0_22) * Theta0``, the
  variances mapped by ``T(s, s, s)``; each nonlinearity's T and Tdot are printed once
  (the sympy expressions that are checked and compiled);
* pooling, flatten: the linear map, named; Residual: the sum of the branch kernels.

For a fully connected net the kernel is also given as one closed-form expression
in ``x.x'``, ``|x|^2``, ``|x'|^2`` and the input dimension ``d`` (``K0 = x.x'/d``),
simplified by sympy. ``--latex`` prints the same as LaTeX; ``--check`` runs the
symbolic checks (``compiler/symbolic.py``) for the nonlinearities the net uses,
prints how many identities held and how they were shown, and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from ..compiler.graph import Net
from ..compiler.layers import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Pointwise,
    Residual,
    Serial,
)

#: largest sympy operation count that is still simplified (deep nets grow fast)
_SIMPLIFY_LIMIT = 600


def add_parser(subparsers) -> None:
    """Register the ``explain`` subcommand."""
    from .common import add_spec_arguments, positive_int

    p = subparsers.add_parser(
        "explain", help="print the NNGP/NTK recursion of a net",
        description="Print the paired NNGP/NTK kernel recursion of a net, layer by layer.",
    )
    add_spec_arguments(p)
    p.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    p.add_argument("--check", action="store_true",
                   help="also run the symbolic checks of the net's nonlinearities; "
                        "exit 1 if any fails")
    p.add_argument("--points", type=positive_int, default=1, metavar="N",
                   help="random covariances for the numerical-integration checks (default 1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the explanation of the net ``args`` names; 1 if a check failed, else 0."""
    from .common import load_net

    net = load_net(args)
    print(explain(net, latex=args.latex), end="")
    if args.check:
        report = check_net(net, n_integration=args.points)
        print()
        print(format_report(report, latex=args.latex), end="")
        return 0 if report.ok else 1
    return 0


# ---------------------------------------------------------------------------------------
# rendering helpers: every line exists as text and as LaTeX


def _num(v: float) -> str:
    return f"{float(v):.6g}"


@dataclass
class _Out:
    latex: bool
    lines: list[str] = field(default_factory=list)
    n: int = 0

    def k(self, i) -> str:
        return f"K_{{{i}}}" if self.latex else f"K{i}"

    def th(self, i) -> str:
        return f"\\Theta_{{{i}}}" if self.latex else f"Theta{i}"

    def mul(self, a: str, b: str) -> str:
        return f"{a} \\, {b}" if self.latex else f"{a} * {b}"

    def eq(self, lhs: str, rhs: str, note: str = "") -> None:
        if self.latex:
            tail = f" && \\text{{{note}}}" if note else ""
            self.lines.append(f"  {lhs} &= {rhs}{tail} \\\\")
        else:
            self.lines.append(f"    {lhs} = {rhs}" + (f"    # {note}" if note else ""))

    def head(self, text: str) -> None:
        if self.latex:
            self.lines.append(f"  % {text}")
        else:
            self.lines.append(f"  {text}")


def _describe(layer) -> str:
    """Like ``layer.describe()``, with floats to 6 significant digits."""
    from dataclasses import fields

    def fmt(v):
        return _num(v) if isinstance(v, float) else repr(v)

    args = [f"{f.name}={fmt(getattr(layer, f.name))}" for f in fields(layer)
            if f.name != "span" and f.init]
    name = layer.spec_name or type(layer).__name__
    return f"{name}({', '.join(args)})" if args else name


def _window(v) -> str:
    return "x".join(str(t) for t in v) if isinstance(v, tuple) else f"{v} (each axis)"


def _affine(layer, out: _Out, i: int, j: int, in_shape) -> None:
    w2, b2 = float(layer.W_std) ** 2, float(layer.b_std) ** 2
    if isinstance(layer, Conv):
        name = "A" if not out.latex else "\\mathcal{A}"
        A = lambda t: f"{name}({t})"  # noqa: E731
        note = (f"A = patch average over a {_window(layer.kernel)} window, strides "
                f"{_window(layer.strides)}, padding {layer.padding}")
        fan_in = "fan_in" if in_shape is None else str(_fan_in(layer, in_shape))
    else:
        A = lambda t: t  # noqa: E731
        note = ""
        fan_in = "fan_in" if in_shape is None else str(in_shape[-1])
    k = out.mul(_num(w2), A(out.k(i))) if w2 != 1 else A(out.k(i))
    if w2 == 0:
        k = "0"
    rhs = k + (f" + {_num(b2)}" if b2 else "")
    out.eq(out.k(j), rhs, note)
    wth = out.mul(_num(w2), A(out.th(i))) if w2 != 1 else A(out.th(i))
    if layer.parameterization == "standard":
        rhs_t = f"{out.mul(fan_in, A(out.k(i)))} + {wth}" + (" + 1" if b2 else "")
        out.eq(out.th(j), rhs_t, "standard parameterisation")
    else:
        out.eq(out.th(j), f"{out.k(j)} + {wth}")


def _fan_in(layer: Conv, in_shape) -> int:
    import math

    from ..compiler.layers.base import per_axis

    nd = len(in_shape) - 1
    return in_shape[-1] * math.prod(per_axis(layer.kernel, nd, "kernel"))


def _pointwise(layer: Pointwise, out: _Out, i: int, j: int) -> None:
    name = _tname(layer, out)
    args = (f"{out.k(i)}^{{(11)}}, {out.k(i)}, {out.k(i)}^{{(22)}}" if out.latex
            else f"{out.k(i)}_11, {out.k(i)}, {out.k(i)}_22")
    if out.latex:
        out.eq(out.k(j), f"T_{{{name}}}({args})", "variances: T(s, s, s)")
        out.eq(out.th(j), f"\\dot T_{{{name}}}({args}) \\, {out.th(i)}")
    else:
        out.eq(out.k(j), f"T_{name}({args})", "variances: T(s, s, s)")
        out.eq(out.th(j), f"Tdot_{name}({args}) * {out.th(i)}")


def _tname(layer: Pointwise, out: _Out) -> str:
    d = _describe(layer).replace("'", "")
    if not out.latex:
        return d if d.isidentifier() else f"[{d}]"
    head, _, rest = d.partition("(")
    return f"\\mathrm{{{head}}}" + (f"({rest}" if rest else "")


def _walk(body: Serial, out: _Out, i: int, shape, used: list) -> tuple[int, object]:
    """Emit the lines of ``body`` starting from state ``i``; return the last state index."""
    for layer in body.layers:
        in_shape = shape
        try:
            shape = layer.out_shape(shape) if shape is not None else None
        except Exception:  # shapes are the front end's job; explain still works without
            shape = None
        if isinstance(layer, Serial):
            i, shape = _walk(layer, out, i, in_shape, used)
            continue
        if isinstance(layer, Residual):
            out.n += 1
            j = out.n
            out.head(f"[{j}] Residual: branch from {out.k(i)}")
            bi, _ = _walk(layer.branch, out, i, in_shape, used)
            if layer.shortcut is None:
                si = i
                out.head("     shortcut: identity")
            else:
                out.head(f"     shortcut from {out.k(i)}")
                si, _ = _walk(layer.shortcut, out, i, in_shape, used)
            out.n += 1
            j = out.n
            out.head(f"[{j}] Residual sum (independent branches)")
            out.eq(out.k(j), f"{out.k(bi)} + {out.k(si)}")
            out.eq(out.th(j), f"{out.th(bi)} + {out.th(si)}")
            i = j
            continue
        out.n += 1
        j = out.n
        out.head(f"[{j}] {_describe(layer)}")
        if isinstance(layer, Dense | Conv):
            _affine(layer, out, i, j, in_shape)
        elif isinstance(layer, Pointwise):
            if layer not in used:
                used.append(layer)
            _pointwise(layer, out, i, j)
        elif isinstance(layer, AvgPool):
            P = "\\mathcal{P}" if out.latex else "P"
            note = (f"P = mean over {_window(layer.window)} windows of both positions, strides "
                    f"{_window(layer.effective_strides)}, padding {layer.padding}")
            out.eq(out.k(j), f"{P}({out.k(i)})", note)
            out.eq(out.th(j), f"{P}({out.th(i)})")
        elif isinstance(layer, GlobalAvgPool):
            M = "\\operatorname{mean}_{p, q}" if out.latex else "mean_{p,q}"
            out.eq(out.k(j), f"{M} {out.k(i)}[p, q]", "mean over all pairs of positions")
            out.eq(out.th(j), f"{M} {out.th(i)}[p, q]")
        elif isinstance(layer, Flatten):
            M = "\\operatorname{mean}_{p}" if out.latex else "mean_p"
            out.eq(out.k(j), f"{M} {out.k(i)}[p, p]", "mean over positions of the diagonal")
            out.eq(out.th(j), f"{M} {out.th(i)}[p, p]")
        else:
            out.eq(out.k(j), f"{layer.describe()}({out.k(i)})", "no rule to show")
        i = j
    return i, shape


def _nonlinearity_lines(layer: Pointwise, out: _Out) -> None:
    import sympy

    from ..compiler import symbolic as S

    name = _tname(layer, out)
    T, Td, D = layer.T_expr(), layer.Tdot_expr(), layer.diag_expr()
    if out.latex:
        out.eq(f"T_{{{name}}}(s_{{11}}, s_{{12}}, s_{{22}})", sympy.latex(T))
        out.eq(f"\\dot T_{{{name}}}(s_{{11}}, s_{{12}}, s_{{22}})", sympy.latex(Td))
        out.eq(f"T_{{{name}}}(s, s, s)", sympy.latex(D))
    else:
        out.eq(f"T_{name}(s11, s12, s22)", str(T))
        out.eq(f"Tdot_{name}(s11, s12, s22)", str(Td))
        out.eq(f"T_{name}(s, s, s)", str(D))
    if not layer.closed_form:
        from ..compiler import quadrature as Q

        out.head(f"  no closed form: {Q.RULE} rule, {Q.NODES} nodes per axis "
                 f"(accurate to 1e-7 for variances <= {Q.MAX_ACCURATE_VARIANCE:g})")
    del S


# ---------------------------------------------------------------------------------------
# the closed form of a fully connected net


def _fully_connected(body: Serial) -> bool:
    for layer in body.layers:
        if isinstance(layer, Serial):
            if not _fully_connected(layer):
                return False
        elif isinstance(layer, Residual):
            if not _fully_connected(layer.branch) or (
                    layer.shortcut is not None and not _fully_connected(layer.shortcut)):
                return False
        elif not isinstance(layer, Dense | Pointwise):
            return False
    return True


def closed_form(net: Net):
    """The NNGP and NTK of a fully connected net as sympy expressions, or None.

    In the symbols ``xx = x.x'``, ``xx1 = |x|^2``, ``xx2 = |x'|^2`` and ``d`` (the input
    dimension), with ``K0 = xx/d``; simplified by sympy while small enough.

    Arguments:
        net: the net.

    Returns:
        ``(K, Theta)`` sympy expressions, or None for a net with spatial layers.
    """
    import sympy

    from ..compiler import symbolic as S

    if not _fully_connected(net.body):
        return None
    xx, xx1, xx2 = sympy.symbols("xx xx1 xx2", real=True)
    d = sympy.Symbol("d", positive=True)

    def q(v: float):
        return sympy.nsimplify(float(v), rational=True, tolerance=1e-10)

    def go(body: Serial, st):
        for layer in body.layers:
            k11, k12, k22, th = st
            if isinstance(layer, Serial):
                st = go(layer, st)
            elif isinstance(layer, Residual):
                b = go(layer.branch, st)
                s = st if layer.shortcut is None else go(layer.shortcut, st)
                st = tuple(x + y for x, y in zip(b, s))
            elif isinstance(layer, Dense):
                w2, b2 = q(float(layer.W_std) ** 2), q(float(layer.b_std) ** 2)
                n11, n12, n22 = (w2 * k + b2 for k in (k11, k12, k22))
                if layer.parameterization == "standard":
                    # fan_in is the input width; symbolic for the first layer
                    fan = sympy.Symbol("fan_in", positive=True)
                    th = fan * k12 + w2 * th + (1 if b2 else 0)
                else:
                    th = n12 + w2 * th
                st = (n11, n12, n22, th)
            else:
                T, Td, D = layer.T_expr(), layer.Tdot_expr(), layer.diag_expr()
                sub = {S.s11: k11, S.s12: k12, S.s22: k22}
                st = (D.subs(S.s, k11), T.subs(sub, simultaneous=True),
                      D.subs(S.s, k22), Td.subs(sub, simultaneous=True) * th)
        return st

    _, K, _, Th = go(net.body, (xx1 / d, xx / d, xx2 / d, sympy.Integer(0)))

    def simp(e):
        return sympy.simplify(e) if sympy.count_ops(e) < _SIMPLIFY_LIMIT else e

    return simp(K), simp(Th)


# ---------------------------------------------------------------------------------------


def explain(net: Net, *, latex: bool = False, input_shape=None) -> str:
    """The paired recursion of ``net`` as text (or LaTeX).

    Arguments:
        net: the expanded net.
        latex: render LaTeX (an ``align*`` environment) instead of text.
        input_shape: optional input shape (no batch axis), to print numeric fan-ins.

    Returns:
        the explanation, ending with a newline.
    """
    out = _Out(latex=latex)
    par = {layer.parameterization for layer in net.walk() if isinstance(layer, Dense | Conv)}
    kinds = " and ".join(sorted(par)) or "no affine layers"
    title = f"net {net.name} ({net.filename}): {kinds} parameterisation"
    if latex:
        out.lines.append(f"% {title}")
        out.lines.append("\\begin{align*}")
    else:
        out.lines.append(title)
    x0 = ("\\frac{x \\cdot x'}{d}" if latex else "x.x'/d")
    out.head(f"[0] input: {out.k(0)} = {x0}, {out.th(0)} = 0" if not latex else "[0] input")
    if latex:
        out.eq(out.k(0), x0)
        out.eq(out.th(0), "0")
    used: list = []
    last, _ = _walk(net.body, out, 0, input_shape, used)
    out.head(f"output: nngp = {out.k(last)}, ntk = {out.th(last)}")
    if used:
        out.head("nonlinearities (T = E[phi(u) phi(v)], Tdot = E[phi'(u) phi'(v)], "
                 "(u, v) ~ N(0, [[s11, s12], [s12, s22]]))")
        for layer in used:
            _nonlinearity_lines(layer, out)
    cf = closed_form(net)
    if cf is not None:
        import sympy

        out.head("closed form (fully connected; xx = x.x', xx1 = |x|^2, xx2 = |x'|^2, "
                 "d = input dimension)")
        if latex:
            out.eq("K", sympy.latex(cf[0]))
            out.eq("\\Theta", sympy.latex(cf[1]))
        else:
            out.eq("K", str(cf[0]))
            out.eq("Theta", str(cf[1]))
    if latex:
        out.lines.append("\\end{align*}")
    return "\n".join(out.lines) + "\n"


def check_net(net: Net, n_integration: int = 1):
    """The symbolic checks for the nonlinearities ``net`` uses (a ``symbolic.Report``)."""
    from ..compiler import symbolic

    return symbolic.check_layers(net.walk(), n_integration=n_integration)


def format_report(report, *, latex: bool = False) -> str:
    """One line per check and a summary; LaTeX output comments them out (``%``)."""
    lines = [r.line() for r in report.results]
    lines.append("checks: " + report.summary())
    pre = "% " if latex else ""
    return "".join(f"{pre}{ln}\n" for ln in lines)


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["explain", *sys.argv[1:]]))
