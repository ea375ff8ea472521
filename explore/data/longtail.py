"""Long-tail splits of a balanced image dataset (docs/methods.md#exponential-profile).

The CIFAR-style exponential profile of Cao et al. (2019) / Cui et al. (2019) gives class
``c`` of ``C`` classes

    n_c = floor(n_max · IF^(−c / (C − 1))),        IF = n_max / n_min,

so class 0 is the head (``n_max`` samples) and class ``C − 1`` the tail (``n_max / IF``).
The long-tail training split keeps ``n_c`` images of class ``c`` drawn without replacement;
the class-balanced validation split is drawn from the training images the long-tail split
did *not* keep, so validation never sees a training image.

Everything here is a pure function of its inputs and a ``numpy.random.Generator``: the
same seed gives the same indices on every machine (numpy's PCG64 stream is stable).
"""

from __future__ import annotations

import numpy as np

from explore.data.types import DatasetError

SPLIT_ALGORITHM = "exp-profile-v1"
"""Names the sampling procedure below; part of every dataset's ``params`` (and so of the
feature-cache key), so that a change to how indices are drawn invalidates old caches."""

# floor() of a float power can land just below an exact integer (e.g. 500 · 100^−1 may
# evaluate to 4.999…); nudge by a relative epsilon so exact integers stay exact.
_FLOOR_RTOL = 1e-9


def exponential_profile(n_max: int, imbalance_factor: float, num_classes: int) -> np.ndarray:
    """Training samples per class, ``n_c = floor(n_max · IF^(−c/(C−1)))`` for c = 0..C−1.

    With one class the profile is ``[n_max]``. Every class gets at least one sample, which
    requires ``imbalance_factor <= n_max``.

    >>> exponential_profile(1000, 200, 10).tolist()
    [1000, 555, 308, 170, 94, 52, 29, 16, 9, 5]
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise DatasetError(f"num_classes must be a positive integer, got {num_classes!r}")
    if int(n_max) != n_max or n_max < 1:
        raise DatasetError(f"n_max must be a positive integer, got {n_max!r}")
    if not np.isfinite(imbalance_factor) or imbalance_factor < 1:
        raise DatasetError(
            f"imbalance_factor must be >= 1 (it is n_max / n_min), got {imbalance_factor!r}"
        )
    if imbalance_factor > n_max:
        raise DatasetError(
            f"imbalance_factor={imbalance_factor} > n_max={n_max} would leave the tail class "
            f"with 0 samples; lower imbalance_factor or raise n_max"
        )
    if num_classes == 1:
        return np.array([int(n_max)], dtype=np.int64)
    exponents = np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
    exact = n_max / np.power(float(imbalance_factor), exponents)
    return np.floor(exact * (1 + _FLOOR_RTOL)).astype(np.int64)


def _class_pools(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of each class's samples, in ascending index order."""
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=num_classes))
    return np.split(order, bounds[:-1])


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"labels must lie in [0, {num_classes}), found range "
            f"[{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64, copy=False)


def subsample_long_tail(
    labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Indices of a training split with ``counts[c]`` samples of class ``c``, sorted ascending.

    ``counts`` has one entry per class (``len(counts)`` = number of classes). Samples of a
    class are drawn uniformly without replacement, classes in index order, from ``rng``.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise DatasetError(f"counts must be a 1-D array of non-negative integers, got {counts!r}")
    labels = _check_labels(labels, len(counts))
    chosen = []
    for c, pool in enumerate(_class_pools(labels, len(counts))):
        if len(pool) < counts[c]:
            raise DatasetError(
                f"class {c} has {len(pool)} training images but the long-tail profile asks for "
                f"{counts[c]}; lower n_max"
            )
        chosen.append(rng.choice(pool, size=int(counts[c]), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def balanced_holdout(
    labels: np.ndarray,
    exclude_idx: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    num_classes: int | None = None,
) -> np.ndarray:
    """Indices of ``per_class`` samples of every class, none of them in ``exclude_idx``.

    Used for the validation split: ``exclude_idx`` is the long-tail training split, so the
    two never share an image. Sorted ascending. ``num_classes`` defaults to
    ``labels.max() + 1``.
    """
    if int(per_class) != per_class or per_class < 0:
        raise DatasetError(f"val_per_class must be a non-negative integer, got {per_class!r}")
    labels = np.asarray(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    labels = _check_labels(labels, num_classes)
    exclude_idx = np.asarray(exclude_idx, dtype=np.int64)
    if exclude_idx.size and (exclude_idx.min() < 0 or exclude_idx.max() >= len(labels)):
        raise DatasetError(f"exclude_idx must index into labels (length {len(labels)})")
    available = np.ones(len(labels), dtype=bool)
    available[exclude_idx] = False
    chosen = []
    for c, pool in enumerate(_class_pools(labels, num_classes)):
        pool = pool[available[pool]]
        if len(pool) < per_class:
            raise DatasetError(
                f"class {c} has only {len(pool)} training images left after the long-tail split "
                f"but val_per_class={per_class}; lower val_per_class or n_max"
            )
        chosen.append(rng.choice(pool, size=int(per_class), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def long_tail_split(
    labels: np.ndarray, counts: np.ndarray, val_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of a balanced training set, from one seed.

    The training split is drawn first, so it does not depend on ``val_per_class``.
    """
    if int(seed) != seed or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    train_idx = subsample_long_tail(labels, counts, rng)
    val_idx = balanced_holdout(labels, train_idx, val_per_class, rng, num_classes=len(counts))
    return train_idx, val_idx
