"""Many / medium / few class splits (docs/methods.md#splits-and-metrics).

A class is *many* when it has more than ``many_above`` training samples, *few* when
it has fewer than ``few_below``, *medium* otherwise. *base* = many ∪ medium.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Split(str, Enum):
    MANY = "many"
    MEDIUM = "medium"
    FEW = "few"


SPLITS: tuple[Split, ...] = (Split.MANY, Split.MEDIUM, Split.FEW)


@dataclass(frozen=True)
class SplitThresholds:
    """Defaults are those of every paper explore covers."""

    many_above: int = 100
    """A class with more than this many training samples is *many*."""
    few_below: int = 20
    """A class with fewer than this many training samples is *few*."""

    def __post_init__(self) -> None:
        if self.few_below > self.many_above + 1:
            raise ValueError(
                f"split thresholds overlap: few_below={self.few_below} must be <= many_above+1="
                f"{self.many_above + 1}"
            )

    def split_of_class(self, counts: np.ndarray) -> np.ndarray:
        """Split name ('many'/'medium'/'few') of each class, from its training count."""
        counts = np.asarray(counts)
        out = np.full(counts.shape, Split.MEDIUM.value, dtype=object)
        out[counts > self.many_above] = Split.MANY.value
        out[counts < self.few_below] = Split.FEW.value
        return out

    def few_mask(self, counts: np.ndarray) -> np.ndarray:
        return np.asarray(counts) < self.few_below
