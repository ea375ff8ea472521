"""Small synthetic long-tail feature sets in the bring-your-own-features format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COUNTS = (300, 200, 150, 120, 60, 30, 12, 8, 5)  # 4 many, 2 medium, 3 few


def feature_arrays(seed: int = 0, d: int = 16, counts=COUNTS, val_per_class: int = 20, test_per_class: int = 40):
    rng = np.random.default_rng(seed)
    C = len(counts)
    centers = rng.normal(size=(C, d)) * 1.3
    for few, near in zip(range(C - 3, C), range(3)):  # few classes sit near base ones
        centers[few] = 0.6 * centers[near] + 0.5 * rng.normal(size=d)

    def draw(ns):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(ns)]).astype(np.int64)
        return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y

    return {"train": draw(counts), "val": draw([val_per_class] * C), "test": draw([test_per_class] * C)}


def write_feature_dir(path: Path, seed: int = 0, classifier: bool = False, aux: bool = False,
                      **kw) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    splits = feature_arrays(seed, **kw)
    if aux:  # an auxiliary pool for neighbor silencing: aux.npz + aux_classes.txt
        d = splits["train"][0].shape[1]
        rng = np.random.default_rng(seed + 7)
        y = np.concatenate([np.full(n, a) for a, n in enumerate(AUX_COUNTS)]).astype(np.int64)
        centers = rng.normal(size=(len(AUX_NAMES), d))
        np.savez(path / "aux.npz", features=(centers[y] + rng.normal(size=(len(y), d))).astype(np.float32),
                 labels=y)
        (path / "aux_classes.txt").write_text("".join(f"{n}\n" for n in AUX_NAMES))
    for name, (x, y) in splits.items():
        np.savez(path / f"{name}.npz", features=x, labels=y)
    C = int(splits["train"][1].max()) + 1
    (path / "classes.txt").write_text("".join(f"class_{c}\n" for c in range(C)))
    if classifier:
        x, y = splits["train"]
        means = np.stack([x[y == c].mean(0) for c in range(C)])
        counts = np.bincount(y, minlength=C)
        np.savez(path / "classifier.npz", weight=means.astype(np.float32),
                 bias=(-0.5 * (means**2).sum(1) + np.log(counts / counts.sum())).astype(np.float32))
    return path


CLASS_NAMES = ("cat", "dog", "horse", "sheep", "truck", "car", "lion", "wolf", "zebra")
AUX_NAMES = ("tiger", "van", "fox", "bus", "pony")
AUX_COUNTS = (80, 30, 60, 10, 45)  # tiger and fox exceed neighbor silencing's cap of 50


def feature_set(with_aux: bool = True):
    """The synthetic features as a FeatureSet with class names and, optionally, an
    auxiliary pool (split ``aux``) for neighbor silencing."""
    from explore.store import FeatureSet, FeatureSplit

    arrays = feature_arrays(seed=0, d=16)
    splits = {name: FeatureSplit(x, y) for name, (x, y) in arrays.items()}
    meta: dict = {}
    if with_aux:
        rng = np.random.default_rng(5)
        centers = rng.normal(size=(len(AUX_NAMES), 16))
        y = np.concatenate([np.full(n, a) for a, n in enumerate(AUX_COUNTS)])
        splits["aux"] = FeatureSplit((centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32), y)
        meta["aux_classes"] = list(AUX_NAMES)
    return FeatureSet(splits, CLASS_NAMES, meta)
