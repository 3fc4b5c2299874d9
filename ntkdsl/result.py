"""The result of a kernel computation: the NNGP kernel and the NTK side by side.

Saved kernels are ``.npz`` archives with arrays ``nngp`` and/or ``ntk`` (what
``ntkdsl kernel -o`` writes and :meth:`Kernel.save` writes); they are read
back without unpickling (:meth:`Kernel.load`, ``ntkdsl predict --k-...``).
A folder (a kernel store) is opened with ``ntkdsl.open_kernel`` when this
installation provides it: see :func:`read_kernel_arrays`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .diagnostics import InputError

#: the arrays a saved kernel may hold
KERNEL_NAMES = ("nngp", "ntk")


def _store_opener():
    """``ntkdsl.open_kernel`` if this installation has kernel stores, else ``None``."""
    return getattr(importlib.import_module("ntkdsl"), "open_kernel", None)


def read_kernel_arrays(path: str | os.PathLike, flag: str = "path",
                       names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The arrays of a saved kernel: an ``.npz`` file, or a kernel store (a folder).

    Arguments:
        path: an ``.npz`` with ``nngp`` and/or ``ntk``, or a store folder, opened
            with ``ntkdsl.open_kernel(path)`` (an object with lazily sliceable
            ``.nngp`` / ``.ntk`` and ``.metadata``) when that function exists.
        flag: how messages name the file (``"--k-train-train"``).
        names: the arrays needed (each must be present); ``None``: those present.

    Returns:
        name -> 2-D array (numpy for ``.npz``; the store's lazy arrays for a store).

    Raises:
        InputError: a missing or unreadable file, a missing array, an array that
            is not 2-D, or ``nngp`` and ``ntk`` of different shapes.
    """
    from .io import load_npz

    text = os.fspath(path)
    if os.path.isdir(text):
        opener = _store_opener()
        if opener is None:
            raise InputError(f"{flag}: {text} is a folder; expected an .npz file with "
                             f"arrays {' and/or '.join(KERNEL_NAMES)}")
        store = opener(text)
        present = [g for g in KERNEL_NAMES if getattr(store, g, None) is not None]
        arrays = {g: getattr(store, g) for g in (present if names is None else names)
                  if getattr(store, g, None) is not None}
    else:
        arrays = load_npz(text, flag, names)
        arrays = {g: a for g, a in arrays.items() if g in KERNEL_NAMES}
        present = list(arrays)
    for g in names or ():
        if g not in arrays:
            raise InputError(f"{flag}: {text} has no {g!r} kernel (it holds: "
                             f"{', '.join(present) or 'none'})")
    if not arrays:
        raise InputError(f"{flag}: {text} holds neither an 'nngp' nor an 'ntk' array")
    shapes = {g: tuple(a.shape) for g, a in arrays.items()}
    for g, s in shapes.items():
        if len(s) != 2:
            raise InputError(f"{flag}: expected {g} of shape (n1, n2) in {text}, got {s}")
    if len(set(shapes.values())) > 1:
        raise InputError(f"{flag}: nngp {shapes['nngp']} and ntk {shapes['ntk']} in {text} "
                         f"differ in shape")
    return arrays


@dataclass(frozen=True)
class Kernel:
    """The kernels between two batches of inputs, each ``(n1, n2)``.

    Attributes:
        nngp: the NNGP kernel (``None`` if not asked for).
        ntk: the neural tangent kernel (``None`` if not asked for).
    """

    nngp: Any = None
    ntk: Any = None

    def save(self, path: str | os.PathLike) -> None:
        """Write the kernels present to an ``.npz`` (arrays ``nngp``/``ntk``), atomically.

        Arguments:
            path: the destination (see ``ntkdsl.io.atomic_write`` for the rules).

        Raises:
            InputError: no kernel to save, or a refused destination.
        """
        from .io import save_npz

        arrays = {g: np.asarray(getattr(self, g)) for g in KERNEL_NAMES
                  if getattr(self, g) is not None}
        if not arrays:
            raise InputError("Kernel.save: the kernel holds neither nngp nor ntk")
        save_npz(path, arrays, flag="path")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Kernel:
        """Read a kernel saved by :meth:`save` or ``ntkdsl kernel -o`` (never unpickles).

        Arguments:
            path: an ``.npz`` with ``nngp`` and/or ``ntk`` (or a kernel store, see
                :func:`read_kernel_arrays`).

        Returns:
            A :class:`Kernel` with numpy arrays (missing kernels are ``None``).

        Raises:
            InputError: as :func:`read_kernel_arrays`.
        """
        arrays = read_kernel_arrays(path, "path")
        return cls(**{g: np.asarray(a) for g, a in arrays.items()})
