"""The data the store holds: features and labels per split, class names, provenance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explore.store.keys import canonical_json, check_name

__all__ = ["REQUIRED_SPLITS", "FeatureSet", "FeatureSplit"]

REQUIRED_SPLITS: tuple[str, ...] = ("train", "val", "test")


_FINITE_CHECK_ROWS = 4096


def _all_finite(f: np.ndarray) -> bool:
    # In slices: a whole-array check would allocate an N×d mask in every process that
    # reads the features, next to arrays that are otherwise shared memory maps.
    return all(np.isfinite(f[i:i + _FINITE_CHECK_ROWS]).all()
               for i in range(0, len(f), _FINITE_CHECK_ROWS))


@dataclass(frozen=True, eq=False)
class FeatureSplit:
    """Features and labels of one split. Stored as C-contiguous float32 N×d and int64 N."""

    features: np.ndarray
    """float32, N×d, finite (other float dtypes are converted)."""
    labels: np.ndarray
    """int64, N, non-negative class indices (other integer dtypes are converted)."""

    def __post_init__(self) -> None:
        f, y = np.asarray(self.features), np.asarray(self.labels)
        if f.ndim != 2 or f.shape[1] < 1:
            raise ValueError(f"features must be 2-D N×d with d >= 1, got shape {f.shape}")
        if not np.issubdtype(f.dtype, np.floating):
            raise ValueError(f"features must be floating point, got dtype {f.dtype}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}"
            )
        if len(y) != len(f):
            raise ValueError(f"features have {len(f)} rows but labels have {len(y)}")
        f = np.ascontiguousarray(f, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        if not _all_finite(f):
            raise ValueError(
                "features contain NaN or inf (after conversion to float32); fix the extractor"
            )
        if y.size and y.min() < 0:
            raise ValueError(f"labels must be >= 0, found {int(y.min())}")
        object.__setattr__(self, "features", f)
        object.__setattr__(self, "labels", y)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def d(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """All splits of one feature extraction, the class names, and provenance."""

    splits: dict[str, FeatureSplit]
    """At least 'train', 'val', 'test'; other names (e.g. 'aux') are allowed. All share d."""
    classes: tuple[str, ...]
    """Class names, indexed by label."""
    meta: dict[str, Any] = field(default_factory=dict)
    """JSON-able provenance (dataset params, backbone, extraction time, ...)."""

    def __post_init__(self) -> None:
        # ValueError, not TypeError, for every bad input: callers catch one kind.
        if not isinstance(self.splits, Mapping):
            raise ValueError("splits must be a dict of split name -> FeatureSplit")  # noqa: TRY004
        missing = [s for s in REQUIRED_SPLITS if s not in self.splits]
        if missing:
            raise ValueError(
                f"FeatureSet is missing split(s) {missing}; it needs {list(REQUIRED_SPLITS)}"
            )
        for name, split in self.splits.items():
            check_name(name, "split name")
            if not isinstance(split, FeatureSplit):
                raise ValueError(  # noqa: TRY004
                    f"split {name!r} must be a FeatureSplit, got {type(split).__name__}"
                )
        dims = {name: s.d for name, s in self.splits.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"all splits must share the feature dimension d, got {dims}")
        classes = tuple(self.classes)
        if not classes or not all(isinstance(c, str) and c for c in classes):
            raise ValueError("classes must be a non-empty sequence of non-empty class names")
        if len(set(classes)) != len(classes):
            raise ValueError("class names must be unique")
        for name, split in self.splits.items():
            if len(split) and int(split.labels.max()) >= len(classes):
                raise ValueError(
                    f"split {name!r} has label {int(split.labels.max())} "
                    f"but only {len(classes)} classes"
                )
        if not isinstance(self.meta, Mapping):
            raise ValueError("meta must be a dict")  # noqa: TRY004
        canonical_json(dict(self.meta), "FeatureSet.meta")
        object.__setattr__(self, "splits", dict(self.splits))
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def d(self) -> int:
        return next(iter(self.splits.values())).d

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train(self) -> FeatureSplit:
        return self.splits["train"]

    @property
    def val(self) -> FeatureSplit:
        return self.splits["val"]

    @property
    def test(self) -> FeatureSplit:
        return self.splits["test"]
