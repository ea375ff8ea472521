"""What every trial of a sweep shares, typed by mode: a head trial trains heads on the
cached features; a full trial trains the backbone with the method as Ray Train runs.
Pickled once into the Tune trainable."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from explore.backbone.train_config import BackboneTrainConfig
from explore.data.registry import DatasetConfig
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance
from explore.training.head_config import HeadTrainConfig

__all__ = ["FullTrialContext", "HeadTrialContext", "TrialContext", "TrialMode"]


class TrialMode(enum.Enum):
    HEAD = "head"
    """Heads on the sweep's cached features."""
    FULL = "full"
    """The backbone trained with the method (Ray Train, one run per seed)."""


@dataclass(frozen=True, kw_only=True)
class TrialContext:
    """Shared by both modes."""

    mode: ClassVar[TrialMode]
    layout: SweepLayout
    provenance: Provenance
    method: str
    method_settings: dict[str, Any]
    """The ``method`` group's settings; a trial's knobs override them."""
    head: HeadTrainConfig
    """How heads train (a full trial's stage 2 and references too)."""
    seeds: tuple[int, ...]
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    report_rungs: tuple[float, ...] = ()
    """Epoch counts (over the trial's seeds) at which a head trial reports its validation
    top-1 to Tune: the early-stopping scheduler's rungs. Empty: a head trial reports once,
    at its end. (Full mode reports every epoch through Train.)"""

    @property
    def storage_uri(self) -> str:
        return self.layout.storage_uri


@dataclass(frozen=True, kw_only=True)
class HeadTrialContext(TrialContext):
    mode: ClassVar[TrialMode] = TrialMode.HEAD


@dataclass(frozen=True, kw_only=True)
class FullTrialContext(TrialContext):
    mode: ClassVar[TrialMode] = TrialMode.FULL
    dataset: DatasetConfig
    """The images the backbone trains on."""
    backbone: BackboneTrainConfig
    """Architecture, epochs, workers, GPU, AMP."""
    gpus_per_worker: float = 0.0
    """GPUs each Ray Train worker requests (``runner.gpus_per_worker`` resolved)."""
