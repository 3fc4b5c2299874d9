"""The digits loader: split, scaling and targets."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdsl import InputError
from ntkdsl.data import load_digits


def test_split_scaling_and_targets():
    d = load_digits(40, 30, classes=(0, 1), seed=3)
    assert d.x_train.shape == (40, 8, 8, 1) and d.x_test.shape == (30, 8, 8, 1)
    assert set(np.unique(d.labels_train)) <= {0, 1}
    np.testing.assert_allclose(d.y_train.sum(1), 0, atol=1e-12)  # zero-mean one-hot
    assert np.all(np.argmax(d.y_test, 1) == d.labels_test)
    # pixels constant on the small train set stay bounded on the test set
    assert np.abs(d.x_test).max() < 20
    flat = load_digits(40, 30, classes=(0, 1), seed=3, flat=True)
    np.testing.assert_array_equal(flat.x_train, d.x_train.reshape(40, -1))


def test_bad_sizes_are_named():
    with pytest.raises(InputError, match="n_train"):
        load_digits(0, 10)
    with pytest.raises(InputError, match="n_train"):
        load_digits(2000, 10)
