"""Fashion-MNIST-LT-open: a long-tail target set plus an open-set auxiliary pool, from real images.

The neighbor-silencing method ("Granularity Matters in Long-Tail Learning", §3.2; docs/methods.md#fashion-mnist-lt-open) adds
*auxiliary* classes that lie outside the target label space but look like target classes
(the paper crawls them from the web). This dataset builds that setting honestly from
Fashion-MNIST: three classes are held OUT of the target label space entirely and only their
training images form the auxiliary pool.

Why these three (Xiao et al. 2017's confusion matrices, and any CE model trained here: the
errors concentrate in these pairs):

* **Shirt** — the class most confused with T-shirt/top and Pullover (same silhouette,
  sleeves/collar being the only cue);
* **Coat** — confused with Pullover (and Shirt): long sleeves, similar outline;
* **Ankle boot** — the footwear neighbour of Sneaker and Sandal.

So every auxiliary class is a visual neighbour of at least one target (a head one for
Shirt/Coat, tail ones for Ankle boot), as the paper's auxiliary classes are, and no
auxiliary image is ever a target image.

Splits (project defaults, documented in ``search_spaces/dataset/fashion_mnist_lt_open.yaml``):

* targets, in the official label order: T-shirt/top, Trouser, Pullover, Dress, Sandal,
  Sneaker, Bag (labels 0..6). Train: the exponential profile over the 7 targets,
  ``n_c = floor(n_max · IF^(−c/6))`` — with ``n_max = 1000, IF = 200``:
  ``[1000, 413, 170, 70, 29, 12, 5]``, i.e. 3 many, 2 medium, 2 few;
* val: ``val_per_class`` images per TARGET class from the train images the long-tail split
  did not keep; test: the official t10k images of the target classes (1000 each, or a
  balanced seeded subset of ``test_per_class`` each for quick runs);
* aux: ``aux_per_class`` train images of each auxiliary class (labels 0..2 in the order
  Shirt, Coat, Ankle boot), drawn with their own seeded stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explore.data.fashion_mnist import (
    DEFAULT_IMBALANCE_FACTOR,
    DEFAULT_N_MAX,
    DEFAULT_VAL_PER_CLASS,
    FASHION_MNIST_CLASSES,
    read_fashion_mnist,
)
from explore.data.longtail import SPLIT_ALGORITHM, exponential_profile, long_tail_split
from explore.data.types import DatasetError, ImageSplit, LongTailDataset

__all__ = ["AUX_CLASSES", "DEFAULT_AUX_PER_CLASS", "TARGET_CLASSES", "fashion_mnist_lt_open"]

TARGET_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Sandal", "Sneaker", "Bag",
)
AUX_CLASSES: tuple[str, ...] = ("Shirt", "Coat", "Ankle boot")
DEFAULT_AUX_PER_CLASS = 300
"""Auxiliary training images per held-out class; neighbor silencing takes at most 50 of a
class per epoch (paper), so 300 gives six epochs of fresh images."""


def _relabel(labels: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(indices of samples whose class is in ``names``, their labels as indices into ``names``)."""
    official = np.array([FASHION_MNIST_CLASSES.index(n) for n in names])
    lookup = np.full(len(FASHION_MNIST_CLASSES), -1, dtype=np.int64)
    lookup[official] = np.arange(len(names))
    new = lookup[labels]
    keep = np.flatnonzero(new >= 0)
    return keep, new[keep]


def fashion_mnist_lt_open(
    root: str | Path | None = None,
    *,
    n_max: int = DEFAULT_N_MAX,
    imbalance_factor: float = DEFAULT_IMBALANCE_FACTOR,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    aux_per_class: int = DEFAULT_AUX_PER_CLASS,
    test_per_class: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> LongTailDataset:
    """Fashion-MNIST-LT over 7 target classes with Shirt / Coat / Ankle boot held out as the
    auxiliary pool (see the module docstring). ``test_per_class`` keeps a balanced seeded
    subset of the t10k targets (quick runs); None keeps all 1000. Deterministic in ``seed``."""
    for knob, value in (("aux_per_class", aux_per_class), ("test_per_class", test_per_class)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise DatasetError(f"dataset.{knob} must be an integer >= 1, got {value!r}")
    train_x, train_y, test_x, test_y, digests = read_fashion_mnist(root, download)
    counts = exponential_profile(n_max, imbalance_factor, len(TARGET_CLASSES))

    target_idx, target_y = _relabel(train_y, TARGET_CLASSES)
    train_local, val_local = long_tail_split(target_y, counts, val_per_class, seed)
    train_idx, val_idx = target_idx[train_local], target_idx[val_local]

    aux_idx, aux_y = _relabel(train_y, AUX_CLASSES)
    # A separate stream: the auxiliary draw never shifts the target splits.
    rng = np.random.default_rng([int(seed), 1])
    chosen = []
    for a, name in enumerate(AUX_CLASSES):
        pool = np.flatnonzero(aux_y == a)
        if len(pool) < aux_per_class:
            raise DatasetError(
                f"aux class {name} has {len(pool)} training images but aux_per_class="
                f"{aux_per_class}; lower dataset.aux_per_class"
            )
        chosen.append(rng.choice(pool, size=int(aux_per_class), replace=False))
    aux_local = np.sort(np.concatenate(chosen))

    test_idx, test_labels = _relabel(test_y, TARGET_CLASSES)
    if test_per_class is not None:
        sub = np.random.default_rng([int(seed), 2])
        keep = np.sort(np.concatenate([
            sub.choice(np.flatnonzero(test_labels == c), size=min(int(test_per_class), int((test_labels == c).sum())),
                       replace=False)
            for c in range(len(TARGET_CLASSES))
        ]))
        test_idx, test_labels = test_idx[keep], test_labels[keep]
    params = {
        "name": "fashion_mnist_lt_open",
        "n_max": int(n_max),
        "imbalance_factor": float(imbalance_factor),
        "val_per_class": int(val_per_class),
        "aux_per_class": int(aux_per_class),
        "test_per_class": None if test_per_class is None else int(test_per_class),
        "seed": int(seed),
        "split_algorithm": SPLIT_ALGORITHM,
        "num_classes": len(TARGET_CLASSES),
        "target_classes": list(TARGET_CLASSES),
        "aux_classes": list(AUX_CLASSES),
        "train_counts": counts.tolist(),
        "source_sha256": dict(sorted(digests.items())),
    }
    return LongTailDataset(
        name="fashion_mnist_lt_open",
        classes=TARGET_CLASSES,
        train=ImageSplit(labels=target_y[train_local], images=train_x[train_idx]),
        val=ImageSplit(labels=target_y[val_local], images=train_x[val_idx]),
        test=ImageSplit(labels=test_labels, images=test_x[test_idx]),
        params=params,
        aux=ImageSplit(labels=aux_y[aux_local], images=train_x[aux_idx[aux_local]]),
        aux_classes=AUX_CLASSES,
    )
