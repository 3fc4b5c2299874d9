"""ntkdsl: a small language for infinitely wide neural networks.

Write an architecture once in a spec file; get its NNGP kernel and NTK
(analytic, infinite width), its finite-width network, empirical NTK and
linearisation, and the training dynamics and GP predictions of
Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as Linear Models
Under Gradient Descent".

The public names are imported lazily: ``import ntkdsl`` stays cheap (no jax
import) so that ``ntkdsl check`` starts instantly; the first use of a name
that needs jax imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .diagnostics import InputError, SpecError

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # front end (spec -> layer graph)
    "parse": "ntkdsl.compiler.frontend",
    "load": "ntkdsl.compiler.frontend",
    "parse_all": "ntkdsl.compiler.frontend", "load_all": "ntkdsl.compiler.frontend",
    "infer_shapes": "ntkdsl.compiler.frontend",
    "Net": "ntkdsl.compiler.graph",
    # compiled model
    "compile": "ntkdsl.model",
    "compile_file": "ntkdsl.model",
    "Model": "ntkdsl.model",
    "Kernel": "ntkdsl.result",
    # finite width
    "empirical_ntk": "ntkdsl.empirical",
    "empirical_nngp": "ntkdsl.empirical",
    "linearize": "ntkdsl.empirical",
    "taylor_expand": "ntkdsl.empirical",
    "monte_carlo_kernel": "ntkdsl.empirical",
    # dynamics and predictions (paper eq. 8-16)
    "predict": "ntkdsl.predict",
    "gradient_descent_mse": "ntkdsl.predict",
    "gp_inference": "ntkdsl.predict",
    "eta_critical": "ntkdsl.predict",
    "gradient_descent_mse_gp": "ntkdsl.predict",
    "train": "ntkdsl.training",
    "load_digits": "ntkdsl.data",
    # signal propagation (docs/analyze.md)
    "analyze": "ntkdsl.signal",
    # kernel stores (zarr, resumable, computed tile by tile)
    "open_kernel": "ntkdsl.store",
    # fitting trainable net parameters (docs/fitting.md)
    "log_marginal_likelihood": "ntkdsl.likelihood",
    "cross_validation_error": "ntkdsl.likelihood",
    "fit_hyperparameters": "ntkdsl.fit",
    "FitResult": "ntkdsl.fit",
}

__all__ = ["InputError", "SpecError", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ntkdsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
