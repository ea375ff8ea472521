"""Class prototypes (explore/methods/prototypes.py): the one class-means function that
AlphaNet, SWRM, NCM and neighbor silencing share."""

from __future__ import annotations

import numpy as np
import pytest

from explore.methods.prototypes import class_means


def test_class_means_by_hand() -> None:
    features = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    labels = np.array([0, 0, 1, 2, 2])
    means = class_means(features, labels, 3)
    assert means.dtype == np.float64
    np.testing.assert_allclose(means, [[2.0, 3.0], [10.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"classes without training samples: \[3\]"):
        class_means(features, labels, 4)


def test_class_means_is_bit_identical_to_a_row_by_row_sum() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 33)) * 5 + 2).astype(np.float32)
    y = rng.integers(0, 17, size=3000)  # unsorted labels
    sums = np.zeros((17, 33))
    np.add.at(sums, y, x)  # the straightforward reference
    np.testing.assert_array_equal(class_means(x, y, 17), sums / np.bincount(y, minlength=17)[:, None])
    with pytest.raises(ValueError, match="without training samples"):
        class_means(x, y, 18)
