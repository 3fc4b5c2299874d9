"""Small real datasets that ship with a package (no download).

The digits data (1797 8x8 grey images, 10 classes) comes with
scikit-learn (``pip install 'ntkdsl[examples]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .diagnostics import InputError


@dataclass(frozen=True)
class Dataset:
    """A train/test split of images with one-hot, zero-mean targets.

    ``x_*`` are float64, channel last ``(n, 8, 8, 1)`` (or flattened
    ``(n, 64)`` with ``flat=True``), scaled to zero mean and unit variance per
    pixel using the training statistics; ``y_*`` are one-hot targets shifted by
    ``-1/k`` so that they have zero mean (the paper's regression targets);
    ``labels_*`` are the integer classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    labels_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_test: np.ndarray
    classes: tuple[int, ...]


def load_digits(
    n_train: int = 200,
    n_test: int = 200,
    *,
    classes: tuple[int, ...] | None = None,
    flat: bool = False,
    seed: int = 0,
) -> Dataset:
    """A class-balanced random split of scikit-learn's 8x8 digits.

    Arguments:
        n_train, n_test: sizes of the two splits (disjoint).
        classes: the digit classes to keep (default: all ten).
        flat: return ``(n, 64)`` vectors instead of ``(n, 8, 8, 1)`` images.
        seed: the seed of the split.

    Returns:
        A :class:`Dataset`.
    """
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError(
            "the digits data needs scikit-learn: pip install 'ntkdsl[examples]'"
        ) from e
    raw = _load()
    images = raw.images.astype(np.float64)
    target = raw.target.astype(np.int64)
    classes = tuple(range(10)) if classes is None else tuple(classes)
    keep = np.isin(target, classes)
    images, target = images[keep], target[keep]
    if n_train < 1 or n_test < 0 or n_train + n_test > len(target):
        raise InputError(
            f"need 1 <= n_train and n_train + n_test <= {len(target)} digits, "
            f"got n_train={n_train}, n_test={n_test}"
        )
    order = np.random.default_rng(seed).permutation(len(target))
    tr, te = order[:n_train], order[n_train:n_train + n_test]
    x = images.reshape(len(images), -1)
    mean, std = x[tr].mean(0), x[tr].std(0)
    # A pixel that is constant over a small training set (the digits' borders
    # often are) must not be divided by ~0, which would blow up on test images;
    # it is scaled by the typical pixel spread instead, so it stays O(1).
    varying = std > 1e-6
    typical = float(np.mean(std[varying])) if varying.any() else 1.0
    x = (x - mean) / np.where(varying, std, typical)
    if not flat:
        x = x.reshape(-1, 8, 8, 1)
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    lab = np.array([index[int(t)] for t in target])
    onehot = np.eye(k)[lab] - 1.0 / k
    return Dataset(x[tr], onehot[tr], lab[tr], x[te], onehot[te], lab[te], classes)
