"""Long-tail profile and split construction (explore/data/longtail.py) on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explore.data.longtail import (
    balanced_holdout,
    exponential_profile,
    long_tail_split,
    subsample_long_tail,
)
from explore.data.types import DatasetError


def test_profile_matches_hand_computed_counts() -> None:
    # 1000 · 200^(−c/9), floored, worked out by hand: 200^(1/9) ≈ 1.8017.
    expected = [1000, 555, 308, 170, 94, 52, 29, 16, 9, 5]
    assert exponential_profile(1000, 200, 10).tolist() == expected
    # 10 · 10^(−c/2): 10, 3.16, 1.
    assert exponential_profile(10, 10, 3).tolist() == [10, 3, 1]


def test_profile_matches_explicit_loop_and_keeps_exact_endpoints() -> None:
    cases = [(500, 100, 100), (5000, 100, 10), (500, 50, 100), (500, 10, 100)]
    for n_max, imbalance, classes in cases:
        expected = []
        for c in range(classes):
            value = n_max * math.exp(-math.log(imbalance) * c / (classes - 1))
            expected.append(math.floor(value + 1e-7))
        got = exponential_profile(n_max, imbalance, classes)
        assert got.tolist() == expected
        # The tail class holds exactly n_max / IF (no 4.999… → 4 rounding loss).
        assert got[0] == n_max and got[-1] == n_max // imbalance


def test_profile_edge_cases() -> None:
    assert exponential_profile(7, 3, 1).tolist() == [7]
    assert exponential_profile(40, 1, 4).tolist() == [40, 40, 40, 40]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100, 0.5, 10), "imbalance_factor must be >= 1"),
        ((100, 200, 10), "imbalance_factor=200 > n_max=100"),
        ((0, 1, 10), "n_max must be a positive integer"),
        ((100, 10, 0), "num_classes must be a positive integer"),
        ((100, float("nan"), 10), "imbalance_factor must be >= 1"),
    ],
)
def test_profile_rejects_bad_settings(args: tuple, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        exponential_profile(*args)


def _shuffled_labels(per_class: int, classes: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def test_subsample_long_tail_takes_exact_counts_without_repeats() -> None:
    labels = _shuffled_labels(30, 3)
    idx = subsample_long_tail(labels, np.array([30, 10, 2]), np.random.default_rng(0))
    assert np.bincount(labels[idx], minlength=3).tolist() == [30, 10, 2]
    assert len(np.unique(idx)) == len(idx) == 42
    assert (np.diff(idx) > 0).all()


def test_subsample_long_tail_is_deterministic_in_the_seed() -> None:
    labels = _shuffled_labels(30, 3)
    counts = np.array([20, 10, 2])
    a = subsample_long_tail(labels, counts, np.random.default_rng(5))
    b = subsample_long_tail(labels, counts, np.random.default_rng(5))
    c = subsample_long_tail(labels, counts, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_subsample_long_tail_errors() -> None:
    labels = _shuffled_labels(5, 2)
    with pytest.raises(DatasetError, match="class 1 has 5 training images .* asks for 6"):
        subsample_long_tail(labels, np.array([5, 6]), np.random.default_rng(0))
    with pytest.raises(DatasetError, match=r"labels must lie in \[0, 1\)"):
        subsample_long_tail(labels, np.array([5]), np.random.default_rng(0))
    with pytest.raises(DatasetError, match="non-negative integers"):
        subsample_long_tail(labels, np.array([5, -1]), np.random.default_rng(0))


def test_balanced_holdout_is_disjoint_and_balanced() -> None:
    labels = _shuffled_labels(30, 3)
    train = subsample_long_tail(labels, np.array([25, 10, 2]), np.random.default_rng(0))
    val = balanced_holdout(labels, train, 5, np.random.default_rng(1))
    assert not set(val.tolist()) & set(train.tolist())
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 5, 5]
    assert len(np.unique(val)) == 15


def test_balanced_holdout_errors_and_empty() -> None:
    labels = _shuffled_labels(30, 3)
    train = subsample_long_tail(labels, np.array([28, 10, 2]), np.random.default_rng(0))
    with pytest.raises(DatasetError, match="class 0 has only 2 training images left .*_class=3"):
        balanced_holdout(labels, train, 3, np.random.default_rng(1))
    assert balanced_holdout(labels, train, 0, np.random.default_rng(1)).size == 0
    with pytest.raises(DatasetError, match="val_per_class must be a non-negative integer"):
        balanced_holdout(labels, train, -1, np.random.default_rng(1))


def test_long_tail_split_train_does_not_depend_on_val_size() -> None:
    labels = _shuffled_labels(30, 3)
    counts = np.array([20, 8, 3])
    train_a, val_a = long_tail_split(labels, counts, 4, seed=3)
    train_b, val_b = long_tail_split(labels, counts, 9, seed=3)
    assert np.array_equal(train_a, train_b)
    assert np.bincount(labels[val_b], minlength=3).tolist() == [9, 9, 9]
    again = long_tail_split(labels, counts, 4, seed=3)
    assert np.array_equal(again[0], train_a) and np.array_equal(again[1], val_a)
    with pytest.raises(DatasetError, match="seed must be a non-negative integer"):
        long_tail_split(labels, counts, 4, seed=-1)
