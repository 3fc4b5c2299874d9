"""The paired NNGP/NTK recursion of a net, as text or LaTeX, and its closed form.

Two interpreters of the family rules of ``rules.py`` (the ones the kernel
compiler evaluates on arrays):

* :func:`explain` feeds them printable terms (``terms.py``), layer by layer:
  each layer's ``explain_rule`` calls its family rule with named symbols, and
  every intermediate result the rule binds is printed as one equation;
* :func:`closed_form` feeds them sympy expressions in ``x.x'``, ``|x|^2``,
  ``|x'|^2`` and the input dimension ``d``, giving the kernels of a fully
  connected net as one expression, within a size budget.

Combinators are folded by what they declare (``combine``); each nonlinearity
used is listed once with the sympy expressions of its T and Tdot (the
expressions that are checked and compiled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy

from . import quadrature as Q
from . import rules, symbolic
from .graph import Net
from .layers import Layer, Shape
from .terms import Sym, Term

#: largest sympy operation count that is still simplified (deep nets grow fast)
SIMPLIFY_LIMIT = 600
#: largest operation count of the whole-net closed form; beyond it explain keeps the
#: per-layer recursion and says so (the expression of a deep smooth net grows
#: exponentially: Dense, Gelu, Dense, Sin, Dense is already ~10^5 operations)
CLOSED_FORM_LIMIT = 20_000


@dataclass
class _Ctx:
    """What the layers' ``explain_rule`` methods see: rendering and naming."""

    latex: bool
    lines: list[str] = field(default_factory=list)
    n: int = 0
    in_shape: Shape | None = None
    used: list[Layer] = field(default_factory=list)

    def k(self, i: int) -> Sym:
        return Sym(f"K{i}", f"K_{{{i}}}")

    def th(self, i: int) -> Sym:
        return Sym(f"Theta{i}", f"\\Theta_{{{i}}}")

    def sym(self, text: str, tex: str) -> Sym:
        return Sym(text, tex)

    def variances(self, k: Term) -> tuple[Sym, Sym]:
        """The per-input variance symbols belonging to the kernel symbol ``k``."""
        t = k.render(False)
        x = k.render(True)
        return Sym(f"{t}_11", f"{x}^{{(11)}}"), Sym(f"{t}_22", f"{x}^{{(22)}}")

    def use(self, layer: Layer) -> None:
        if layer not in self.used:
            self.used.append(layer)

    def eq(self, lhs: str, rhs: str, note: str = "") -> None:
        if self.latex:
            tail = f" && \\text{{{note}}}" if note else ""
            self.lines.append(f"  {lhs} &= {rhs}{tail} \\\\")
        else:
            self.lines.append(f"    {lhs} = {rhs}" + (f"    # {note}" if note else ""))

    def head(self, text: str) -> None:
        self.lines.append(f"  % {text}" if self.latex else f"  {text}")

    def binder(self, note: str = "") -> Callable[[str, Any], Sym]:
        """``bind`` for the family rules: print ``K{n} = ...`` (with ``note``), return ``K{n}``."""
        j = self.n

        def bind(kind: str, value: Any) -> Sym:
            lhs = self.k(j) if kind == "K" else self.th(j)
            self.eq(lhs.render(self.latex), value.render(self.latex),
                    note if kind == "K" else "")
            return lhs

        return bind


def _walk(body: Layer, ctx: _Ctx, i: int, shape: Shape | None) -> tuple[int, Shape | None]:
    """Emit the lines of a sequence starting from state ``i``; return the last state index."""
    for layer in body.children():
        in_shape = shape
        try:
            shape = layer.out_shape(shape) if shape is not None else None
        except Exception:  # shapes are the front end's job; explain still works without
            shape = None
        if layer.combine == "sequence":
            i, shape = _walk(layer, ctx, i, in_shape)
            continue
        if layer.combine in ("sum", "concat", "product"):
            i = _sum(layer, ctx, i, in_shape)
            continue
        ctx.n += 1
        j = ctx.n
        ctx.head(f"[{j}] {layer.describe(short=True)}")
        ctx.in_shape = in_shape
        layer.explain_rule(ctx.k(i), ctx.th(i), ctx)
        i = j
    return i, shape


def _sum(layer: Layer, ctx: _Ctx, i: int, shape: Shape | None) -> int:
    """A branch statement: each path from ``K{i}``, then the rule that combines them."""
    paths = layer.children()
    ctx.n += 1
    src = ctx.k(i).render(ctx.latex)
    ends = []
    for b, path in enumerate(paths):
        label = layer.short_label(b)
        if b == 0:
            ctx.head(f"[{ctx.n}] {layer.spec_name}: {label} from {src}"
                     + (" (identity)" if path is None else ""))
        elif path is None:
            ctx.head(f"     {label}: identity")
        else:
            ctx.head(f"     {label} from {src}")
        ends.append(i if path is None else _walk(path, ctx, i, shape)[0])
    ctx.n += 1
    ctx.head(f"[{ctx.n}] {layer.explain_title()}")
    ks, ths = [ctx.k(e) for e in ends], [ctx.th(e) for e in ends]
    if layer.combine == "product":
        rules.branch_product(ks, ths, bind=ctx.binder())
    elif layer.combine == "concat":
        rules.branch_concat(ks, ths, weights=_concat_weights(layer, shape, ctx),
                            bind=ctx.binder())
    else:
        rules.branch_sum(ks, ths, bind=ctx.binder())
    return ctx.n


def _concat_weights(layer: Layer, shape: Shape | None, ctx: _Ctx) -> list:
    """``C_b / C``: numbers for a known input shape, else the symbols ``C_b/C``."""
    if shape is not None:
        try:
            return list(layer.weights(shape))
        except Exception:  # shapes are the front end's job
            pass
    n = len(layer.children())
    return [ctx.sym(f"(C{b + 1}/C)", f"\\frac{{C_{{{b + 1}}}}}{{C}}") for b in range(n)]


def _nonlinearity_lines(layer: Layer, ctx: _Ctx) -> None:
    name = layer.explain_name(ctx.latex)
    T, Td, D = layer.T_expr(), layer.Tdot_expr(), layer.diag_expr()
    if ctx.latex:
        ctx.eq(f"T_{{{name}}}(s_{{11}}, s_{{12}}, s_{{22}})", sympy.latex(T))
        ctx.eq(f"\\dot T_{{{name}}}(s_{{11}}, s_{{12}}, s_{{22}})", sympy.latex(Td))
        ctx.eq(f"T_{{{name}}}(s, s, s)", sympy.latex(D))
    else:
        ctx.eq(f"T_{name}(s11, s12, s22)", str(T))
        ctx.eq(f"Tdot_{name}(s11, s12, s22)", str(Td))
        ctx.eq(f"T_{name}(s, s, s)", str(D))
    notes = getattr(layer, "explain_notes", None)  # a user-defined activation: its formula
    for line in notes(ctx.latex) if notes is not None else ():
        ctx.head(line)
    if not layer.closed_form:
        ctx.head(f"  no closed form: {Q.RULE} rule, {Q.NODES} nodes per axis "
                 f"(accurate to 1e-7 for variances <= {Q.MAX_ACCURATE_VARIANCE:g})")


# ---------------------------------------------------------------------------------------
# the closed form of a fully connected net


class _TooLarge(Exception):
    pass


def _channels(layer: Layer | None, c):
    """The feature count after ``layer`` of a fully connected net, from ``c`` before it."""
    if layer is None:
        return c
    if layer.combine == "sequence":
        for child in layer.children():
            c = _channels(child, c)
        return c
    if layer.combine == "concat":
        return sum(_channels(p, c) for p in layer.children())
    if layer.combine is not None:
        return _channels(layer.children()[0], c)
    out = layer.channels_out()
    return c if out is None else out


def _combine_closed(layer: Layer, parts: list[tuple], c_in) -> tuple:
    """``(K11, K12, K22, Theta)`` of a Concat or Product from its paths' (sympy)."""
    k11s, k12s, k22s, ths = (list(v) for v in zip(*parts))
    if layer.combine == "concat":
        chans = [_channels(p, c_in) for p in layer.children()]
        ws = [c / sum(chans) for c in chans]

        def mean(vals):
            return sum((w * v for w, v in zip(ws, vals)), sympy.Integer(0))

        return mean(k11s), mean(k12s), mean(k22s), mean(ths)

    def prod(vals):
        return sympy.Mul(*vals)

    k12, th = rules.branch_product(k12s, ths)
    return prod(k11s), k12, prod(k22s), sympy.Integer(0) if th is None else th


@dataclass(frozen=True)
class _SympyCtx:
    """What the layers' ``closed_form_rule`` methods see."""

    fan_in_symbol: Any

    @staticmethod
    def rational(v: float):
        return sympy.nsimplify(float(v), rational=True, tolerance=1e-10)


#: the functions sympy.simplify handles quickly in these kernels (the arc-cosine and erf
#: kernels: roots, inverse trigonometric functions); with exp, erf, sin or atan inside
#: (Gelu, Sin, ...) it can take minutes even on a few hundred operations, so such
#: closed forms are printed as built
_FAST_SIMPLIFY = ("asin", "acos", "atan2")


def _simplifies_fast(e) -> bool:
    names = {type(f).__name__ for f in e.atoms(sympy.Function)}
    return names <= set(_FAST_SIMPLIFY)


def _fully_connected(layer: Layer | None) -> bool:
    if layer is None:
        return True
    if layer.combine is not None:
        return all(_fully_connected(c) for c in layer.children())
    return layer.spatial == "any"


def closed_form(net: Net, limit: int = CLOSED_FORM_LIMIT):
    """The NNGP and NTK of a fully connected net as sympy expressions, or None.

    In the symbols ``xx = x.x'``, ``xx1 = |x|^2``, ``xx2 = |x'|^2`` and ``d`` (the input
    dimension), with ``K0 = xx/d``; simplified by sympy while small enough.

    Arguments:
        net: the net.
        limit: the largest operation count the expression may reach while it is
            built; beyond it the closed form is abandoned (None).

    Returns:
        ``(K, Theta)`` sympy expressions, or None for a net with spatial layers or
        whose closed form exceeds ``limit``.
    """
    if not _fully_connected(net.body):
        return None
    xx, xx1, xx2 = sympy.symbols("xx xx1 xx2", real=True)
    d = sympy.Symbol("d", positive=True)
    ctx = _SympyCtx(sympy.Symbol("fan_in", positive=True))

    def go(layer: Layer | None, st, c):
        # c: the feature count at the layer's input (Concat weighs its paths by theirs)
        if layer is None:
            return st
        if layer.combine == "sequence":
            for child in layer.children():
                st = go(child, st, c)
                c = _channels(child, c)
            return st
        if layer.combine == "sum":
            parts = [go(p, st, c) for p in layer.children()]
            st = tuple(sum(vals[1:], vals[0]) for vals in zip(*parts))
        elif layer.combine in ("concat", "product"):
            parts = [go(p, st, c) for p in layer.children()]
            st = _combine_closed(layer, parts, c)
        else:
            st = layer.closed_form_rule(st, ctx)
        if sum(sympy.count_ops(e) for e in st) > limit:
            raise _TooLarge
        return st

    try:
        _, K, _, Th = go(net.body, (xx1 / d, xx / d, xx2 / d, sympy.Integer(0)), d)
    except _TooLarge:
        return None

    def simp(e):
        small = sympy.count_ops(e) < SIMPLIFY_LIMIT
        return sympy.simplify(e) if small and _simplifies_fast(e) else e

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
    ctx = _Ctx(latex=latex)
    par = {layer.parameterization for layer in net.walk()
           if layer.combine is None and layer.gaussian == "makes"}
    kinds = " and ".join(sorted(par)) or "no affine layers"
    title = f"net {net.name} ({net.filename}): {kinds} parameterisation"
    if latex:
        ctx.lines.append(f"% {title}")
        ctx.lines.append("\\begin{align*}")
    else:
        ctx.lines.append(title)
    x0 = ("\\frac{x \\cdot x'}{d}" if latex else "x.x'/d")
    ctx.head(f"[0] input: K0 = {x0}, Theta0 = 0" if not latex else "[0] input")
    if latex:
        ctx.eq("K_{0}", x0)
        ctx.eq("\\Theta_{0}", "0")
    last, _ = _walk(net.body, ctx, 0, input_shape)
    ctx.head(f"output: nngp = {ctx.k(last).render(latex)}, ntk = {ctx.th(last).render(latex)}")
    if ctx.used:
        ctx.head("nonlinearities (T = E[phi(u) phi(v)], Tdot = E[phi'(u) phi'(v)], "
                 "(u, v) ~ N(0, [[s11, s12], [s12, s22]]))")
        for layer in ctx.used:
            _nonlinearity_lines(layer, ctx)
    cf = closed_form(net)
    if cf is not None:
        ctx.head("closed form (fully connected; xx = x.x', xx1 = |x|^2, xx2 = |x'|^2, "
                 "d = input dimension)")
        if latex:
            ctx.eq("K", sympy.latex(cf[0]))
            ctx.eq("\\Theta", sympy.latex(cf[1]))
        else:
            ctx.eq("K", str(cf[0]))
            ctx.eq("Theta", str(cf[1]))
    elif _fully_connected(net.body):
        ctx.head(f"no closed form printed: the whole-net expression exceeds "
                 f"{CLOSED_FORM_LIMIT} operations; the recursion above is exact")
    if latex:
        ctx.lines.append("\\end{align*}")
    return "\n".join(ctx.lines) + "\n"


def check_net(net: Net, n_integration: int = 1) -> symbolic.Report:
    """The symbolic checks for the nonlinearities ``net`` uses."""
    return symbolic.check_layers(net.walk(), n_integration=n_integration)


def format_report(report: symbolic.Report, *, latex: bool = False) -> str:
    """One line per check and a summary; LaTeX output comments them out (``%``)."""
    lines = [r.line() for r in report.results]
    lines.append("checks: " + report.summary())
    pre = "% " if latex else ""
    return "".join(f"{pre}{ln}\n" for ln in lines)
