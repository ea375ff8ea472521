"""What a trial trains on: the cached features, the base model's logits (post-hoc
methods), the split thresholds and the shared head-training settings; and the facts
about the data that knob validation needs before any trial runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.training.head_config import HeadTrainConfig

if TYPE_CHECKING:  # no torch to describe a trial's inputs (the sweep driver does)
    import torch

    from explore.training.head import HeadData
    from explore.training.posthoc import PosthocInputs

__all__ = ["DataFacts", "TrialInputs", "head_data", "splits_of"]


@dataclass(frozen=True)
class DataFacts:
    """What knob validation needs to know about the data."""

    num_classes: int
    counts: np.ndarray
    thresholds: SplitThresholds
    aux_classes: tuple[str, ...] = ()
    """Classes of the auxiliary pool (the feature split ``aux``), if the data has one."""
    class_names_given: bool = True
    """False when the classes have no names, only numbers (imported features without
    ``classes.txt``): methods that read the names' text cannot run."""

    @property
    def num_base_classes(self) -> int:
        return int((~self.thresholds.few_mask(self.counts)).sum())


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass(frozen=True)
class TrialInputs:
    features: FeatureSet
    posthoc: PosthocInputs | None
    thresholds: SplitThresholds
    head: HeadTrainConfig = field(default_factory=HeadTrainConfig)
    """How heads on these features train (the sweep's ``head`` group)."""
    device: torch.device = field(default_factory=_cpu)
    """Where the trial's heads train and are evaluated: the GPU Ray assigned the trial,
    else the CPU (``explore.sweep.trial.trial_device``). Every tensor of the trial lives
    there; the features are copied there once."""


def head_data(inputs: TrialInputs) -> HeadData:
    """The trial's splits as arrays, with training counts and each class's split."""
    from explore.training.head import HeadData

    fset = inputs.features
    counts = np.bincount(fset.train.labels, minlength=fset.num_classes)
    val = None
    if "val" in fset.splits and len(fset.val.labels):
        val = (fset.val.features, fset.val.labels)
    return HeadData(
        train=(fset.train.features, fset.train.labels),
        val=val,
        test=(fset.test.features, fset.test.labels),
        counts=counts,
        split_of_class=inputs.thresholds.split_of_class(counts),
    )


def splits_of(fset: FeatureSet) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split of ``fset`` as (features, labels) arrays."""
    return {name: (s.features, s.labels) for name, s in fset.splits.items()}
