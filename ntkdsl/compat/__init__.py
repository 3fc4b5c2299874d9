"""ntkdsl.compat: neural-tangents' API on ntkdsl (`import ntkdsl.compat as nt`).

A drop-in front end for code written against neural-tangents 0.6.5 (the "peer"):
``stax`` builds ntkdsl's layer graph, and the top-level functions and
``predict`` follow the peer's names, signatures and conventions while computing
with ntkdsl's own kernels, empirical kernels and predictions. docs/migrating.md
lists what is supported and every convention that differs.
"""

from __future__ import annotations

from . import predict, stax
from ._api import (
    Kernel,
    batch,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    linearize,
    monte_carlo_kernel_fn,
    taylor_expand,
)
from ._spec import to_spec

__all__ = [
    "Kernel", "batch", "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn",
    "linearize", "monte_carlo_kernel_fn", "predict", "stax", "taylor_expand", "to_spec",
]
