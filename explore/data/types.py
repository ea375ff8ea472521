"""The in-memory shape of a long-tail image dataset, shared by every reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageSplit:
    """One split (train / val / test) of an image dataset.

    Small datasets hold decoded ``images`` in memory (uint8, N×H×W or N×H×W×3);
    large ones (ImageNet-LT, Places-LT) hold file ``paths`` decoded on demand.
    Exactly one of the two is set.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("ImageSplit needs exactly one of images= or paths=")
        n = len(self.images) if self.images is not None else len(self.paths or ())
        if n != len(self.labels):
            raise ValueError(f"ImageSplit has {n} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return int(len(self.labels))


@dataclass(frozen=True)
class LongTailDataset:
    """A long-tail train split, a class-balanced validation split and a balanced test set."""

    name: str
    classes: tuple[str, ...]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    params: dict[str, Any] = field(default_factory=dict)
    """Everything that determines the splits (part of the feature-cache key)."""
    aux: ImageSplit | None = None
    """Open-set auxiliary images (neighbor silencing): classes outside the target label
    space, labelled 0..A−1 by ``aux_classes``. Never part of train/val/test."""
    aux_classes: tuple[str, ...] = ()
    """Names of the auxiliary classes, indexed by ``aux`` label; empty without ``aux``."""

    def __post_init__(self) -> None:
        if (self.aux is None) != (not self.aux_classes):
            raise ValueError("LongTailDataset needs aux and aux_classes together (or neither)")
        if self.aux is not None and len(self.aux) and (
            self.aux.labels.min() < 0 or self.aux.labels.max() >= len(self.aux_classes)
        ):
            raise ValueError(
                f"aux labels must lie in [0, {len(self.aux_classes)}) (one per aux class)"
            )
        overlap = set(self.aux_classes) & set(self.classes)
        if overlap:
            raise ValueError(f"aux classes {sorted(overlap)} are also target classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> np.ndarray:
        """Training samples per class, indexed by class."""
        return np.bincount(self.train.labels, minlength=self.num_classes)


class DatasetError(ValueError):
    """A dataset could not be built: a bad setting, missing files, or a malformed file.

    The message says what to fix (which setting, which file, which command).
    """


class DatasetFilesMissing(DatasetError, FileNotFoundError):
    """The files a dataset is read from are not on disk (the message says how to get them)."""
