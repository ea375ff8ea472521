"""What every method that trains a head on cached features shares.

The training settings every such method adds to its paper knobs (:class:`HeadTraining`,
flat fields so the ``method`` config group sets them directly), the trial's splits
as arrays (:class:`HeadData`), and the evaluation of one trained seed
(:func:`seed_result`): test and validation metrics of the model at its selected epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from explore.evaluation import evaluate_logits
from explore.training.head import HeadFit, HeadTrainConfig, predict_logits
from explore.training.outcome import SeedResult

if TYPE_CHECKING:
    from explore.training.registry import TrialInputs

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class HeadTraining:
    """SGD settings of the head (see :class:`explore.training.head.HeadTrainConfig`)."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    select: str = "best_val"
    """best_val: the epoch with the best balanced-validation top-1; last: the last epoch."""
    resolved: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Filled in by the method's ``run``: data-dependent values it actually used (e.g.
    the clamped t-SNE perplexity, the text encoder). Not settable; being a field, it
    lands in every result row's ``params_json``."""

    def __post_init__(self) -> None:
        self.head_config()  # validates the training settings

    def head_config(self) -> HeadTrainConfig:
        return HeadTrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                               momentum=self.momentum, weight_decay=self.weight_decay, select=self.select)


@dataclass(frozen=True)
class HeadData:
    """A trial's features as arrays, the training counts and each class's split."""

    train: Arrays
    val: Arrays | None
    test: Arrays
    counts: np.ndarray
    split_of_class: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def d(self) -> int:
        return int(self.train[0].shape[1])


def head_data(inputs: TrialInputs) -> HeadData:
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


def evaluate_model(model: nn.Module, split: Arrays, split_of_class: np.ndarray) -> dict[str, float]:
    """Metrics of ``model`` (features → logits over the classes of ``split_of_class``)."""
    return evaluate_logits(predict_logits(model, split[0]), split[1], split_of_class)


def seed_result(seed: int, fit: HeadFit, data: HeadData) -> SeedResult:
    """Test metrics (and validation ones, if any) of one seed's model at its selected epoch."""
    test = evaluate_model(fit.model, data.test, data.split_of_class)
    val = evaluate_model(fit.model, data.val, data.split_of_class) if data.val is not None else {}
    return SeedResult(seed, fit.best_epoch, test, val, list(fit.val_curve), fit.train_seconds)


def run_seeds(seeds: list[int], data: HeadData, train_one: Callable[[int], HeadFit]) -> list[SeedResult]:
    """Train and evaluate each seed in turn (heads are small: sequential is simplest)."""
    return [seed_result(seed, train_one(seed), data) for seed in seeds]


def seeded_linear(d: int, num_classes: int, seed: int) -> nn.Linear:
    """A linear head initialised as ``bases.train_ce`` does (same seed → same weights)."""
    torch.manual_seed(seed)
    return nn.Linear(d, num_classes)
