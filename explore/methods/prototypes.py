"""Class prototypes: the mean training feature of each class.

AlphaNet finds neighbours between class means, SWRM projects them with t-SNE, NCM and
neighbor silencing's prototype neighbours use them: one implementation serves all.
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_means"]


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean training feature of each class, C×d (float64 for stable distances).

    Each class's rows are gathered in their original order and summed along axis 0, so
    the sums equal ``np.add.at``'s row-by-row ones bit for bit, ~20× faster at ImageNet-LT
    size (``np.add.at`` takes about a minute for 115k×2048 features); only one class's
    rows are held in float64 at a time.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"classes without training samples: {np.flatnonzero(counts == 0).tolist()}")
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    sums = np.empty((num_classes, features.shape[1]), dtype=np.float64)
    for c in range(num_classes):
        sums[c] = np.add.reduce(features[order[bounds[c] : bounds[c + 1]]].astype(np.float64), axis=0)
    return sums / counts[:, None]
