"""Property tests over random valid specs, drawn from a small grammar of the language.

Every spec the grammar below produces is valid by construction: nonlinearities
follow an affine layer, a Residual's branch ends in one and keeps the width,
pooling leaves a spatial size of at least one. So ``check`` must accept each,
and the kernels on random inputs must be finite, symmetric and positive
semi-definite (within a tolerance relative to the largest entry).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ntkdsl
from ntkdsl.cli import main

ACTS = ["Relu", "Erf", "Gelu", "Sin", "LeakyRelu(0.1)", "ABRelu(-0.5, 1)", "Erf(1, 2, 0)",
        "Identity"]
#: at most this many units after the stem, and repeat counts up to 2: small nets, quick kernels
MAX_UNITS = 3


@st.composite
def scale(draw) -> str:
    """A W_std or b_std expression: a number, a let, or a little arithmetic."""
    return draw(st.sampled_from(["1", "1.5", "sqrt(2)", "W", "W / 2 + 0.5", "max(0.5, B)",
                                 "0.1 * 3"]))


@st.composite
def affine(draw, kind: str, width: str, w_std: str | None = None) -> str:
    """A Dense or a Conv keeping ``width`` channels (and, for a Conv, the spatial size)."""
    args = [width]
    if kind != "fc":
        args.append(draw(st.sampled_from(["3", "1", "(3,)" if kind == "1d" else "(3, 1)"])))
        args.append("padding = " + draw(st.sampled_from(["SAME", "CIRCULAR", "'SAME'"])))
    if w_std is not None:
        args.append(f"W_std = {w_std}")
    elif draw(st.booleans()):
        args.append(f"W_std = {draw(scale())}")
    if draw(st.booleans()):
        args.append(f"b_std = {draw(scale())}")
    if draw(st.integers(0, 4)) == 0:
        args.append("parameterization = \"standard\"")
    return f"{'Dense' if kind == 'fc' else 'Conv'}({', '.join(args)})"


@st.composite
def unit(draw, kind: str, depth: int = 0) -> str:
    """Statements taking a Gaussian input of ``w`` channels to a Gaussian output of ``w``."""
    choices = ["plain", "residual", "block", "let"]
    if depth < 1:
        choices.append("repeat")
    what = draw(st.sampled_from(choices))
    act = draw(st.sampled_from(ACTS))
    if what == "plain":
        return f"{act} {draw(affine(kind, 'w'))}"
    if what == "residual":
        shortcut = ""
        if draw(st.booleans()):
            shortcut = f" shortcut {{ {draw(affine(kind, 'w'))} }}"
        return f"Residual {{ {act} {draw(affine(kind, 'w'))} }}{shortcut}"
    if what == "block":
        return draw(st.sampled_from(["hidden(w)", f"hidden(w, act = {act})", "hidden(c = w)"]))
    if what == "let":
        # a body of its own, so that several of these may shadow each other's v
        return f"repeat 1 {{ let v = {draw(scale())} {act} {draw(affine(kind, 'w', 'v'))} }}"
    count = draw(st.integers(0, 2))
    return f"repeat {count} {{ {draw(unit(kind, depth + 1))} }}"


@st.composite
def spec(draw) -> tuple[str, tuple[int, ...]]:
    """A spec text and an input shape (no batch axis) it accepts."""
    kind = draw(st.sampled_from(["fc", "1d", "2d"]))
    shape = {"fc": (3,), "1d": (6, 2), "2d": (4, 4, 1)}[kind]
    body = [f"Input({shape!r})" if draw(st.booleans()) else ""]
    if draw(st.booleans()):
        body.append("defaults b_std = 0.1")
    body.append(draw(affine(kind, "w")))
    for _ in range(draw(st.integers(0, MAX_UNITS))):
        body.append(draw(unit(kind)))
    if kind != "fc" and draw(st.booleans()):
        # linear pooling keeps the input Gaussian; a nonlinearity and a Conv may follow
        body.append(draw(st.sampled_from(["AvgPool(2)", "AvgPool(2, strides = 1)"])))
        body.append(f"{draw(st.sampled_from(ACTS))} {draw(affine(kind, 'w'))}")
    body.append(draw(st.sampled_from(ACTS)))
    if kind != "fc":
        body.append(draw(st.sampled_from(["Flatten", "GlobalAvgPool"])))
    body.append("Dense(outputs, W_std = W)")
    if kind == "fc":
        block = "block hidden(c, act = Relu) { act Dense(c, W_std = W) }"
    else:
        block = "block hidden(c, act = Relu) { act Conv(c, 3, padding = SAME, W_std = W) }"
    width = draw(st.sampled_from(["4", "8"]))
    text = "\n".join([
        "# generated",
        f"let W = {draw(st.sampled_from(['1', 'sqrt(2)', '1.2']))}",
        "let B = 0.25",
        block,
        f"net gen(w = {width}, outputs = 1) {{",
        *("    " + line for line in body if line),
        "}",
    ])
    return text, shape


def _kernel_ok(k: np.ndarray) -> None:
    assert np.all(np.isfinite(k)), k
    scale_ = np.abs(k).max()
    np.testing.assert_allclose(k, k.T, rtol=1e-10, atol=1e-12 * scale_)
    assert np.linalg.eigvalsh((k + k.T) / 2).min() >= -1e-9 * scale_, np.linalg.eigvalsh(k)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)


@settings(max_examples=60, **SETTINGS)
@given(case=spec())
def test_check_accepts_every_generated_spec(case, tmp_path_factory):
    text, shape = case
    path = tmp_path_factory.mktemp("gen") / "gen.ntk"
    path.write_text(text)
    assert main(["check", str(path), "--input-shape", ",".join(map(str, shape))]) == 0, text
    net = ntkdsl.load(path)
    assert net.input_shape in (None, shape)


def _kernels_of_generated_specs(case) -> None:
    text, shape = case
    model = ntkdsl.compile(text)
    x = np.random.default_rng(len(text)).normal(size=(3, *shape))
    k = model.kernel_fn(x)
    for name in ("nngp", "ntk"):
        _kernel_ok(np.asarray(getattr(k, name), dtype=np.float64))


@settings(max_examples=6, **SETTINGS)  # each example compiles a new kernel (seconds)
@given(case=spec())
def test_kernels_of_generated_specs_are_finite_symmetric_psd(case):
    _kernels_of_generated_specs(case)


@pytest.mark.slow
@settings(max_examples=60, **SETTINGS)
@given(case=spec())
def test_kernels_of_many_generated_specs(case):
    _kernels_of_generated_specs(case)
