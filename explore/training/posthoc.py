"""What every post-hoc method needs from a base model, computed once.

The base model's bias-free logits ``Z = F Wᵀ`` for each split are the expensive
part (N×d×C); AlphaNet only ever recombines their columns (docs/methods.md#alphanet-logit-reuse), so they are
built once per (features, base model) and reused by every epoch, seed and trial
that runs in the same worker process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from explore.classifier import LinearClassifier
from explore.methods.prototypes import class_means
from explore.splits import SplitThresholds
from explore.training.tensors import to_device


@dataclass(frozen=True)
class SplitLogits:
    """Bias-free base logits of one split and its labels."""

    logits: torch.Tensor  # N×C float32, F Wᵀ (no bias)
    labels: torch.Tensor  # N int64


@dataclass(frozen=True)
class PosthocInputs:
    """Everything a post-hoc method trains and evaluates on."""

    classifier: LinearClassifier
    class_means: np.ndarray  # C×d, training-feature means (for neighbour search)
    counts: np.ndarray  # C training samples per class
    split_of_class: np.ndarray  # C of 'many' | 'medium' | 'few'
    train: SplitLogits
    val: SplitLogits | None
    test: SplitLogits
    train_labels: np.ndarray  # N_train int64 (numpy, for samplers)

    @property
    def few_mask(self) -> np.ndarray:
        return self.split_of_class == "few"

    @property
    def num_base_classes(self) -> int:
        return int((~self.few_mask).sum())


def build_posthoc_inputs(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classifier: LinearClassifier,
    num_classes: int,
    thresholds: SplitThresholds,
    device: torch.device | None = None,
) -> PosthocInputs:
    """``splits`` maps 'train'/'val'/'test' to (features N×d, labels N); the logits are
    computed on ``device`` (default: the CPU) and stay there."""
    device = device or torch.device("cpu")
    train_x, train_y = splits["train"]
    counts = np.bincount(train_y, minlength=num_classes)
    weight_t = to_device(np.ascontiguousarray(classifier.weight, dtype=np.float32), device)

    def split_logits(name: str) -> SplitLogits | None:
        if name not in splits:
            return None
        x, y = splits[name]
        return SplitLogits(to_device(x, device) @ weight_t.T,
                           torch.tensor(np.asarray(y), dtype=torch.int64, device=device))

    train = split_logits("train")
    test = split_logits("test")
    assert train is not None and test is not None
    return PosthocInputs(
        classifier=classifier,
        class_means=class_means(train_x, train_y, num_classes),
        counts=counts,
        split_of_class=thresholds.split_of_class(counts),
        train=train,
        val=split_logits("val"),
        test=test,
        train_labels=np.asarray(train_y, dtype=np.int64),
    )


def posthoc_on(inputs: PosthocInputs, device: torch.device) -> PosthocInputs:
    """``inputs`` with its base logits and labels on ``device`` (the same object when they
    are there): one copy per trial, every epoch and seed then reads them there."""
    if inputs.train.logits.device == device:
        return inputs

    def moved(split: SplitLogits | None) -> SplitLogits | None:
        if split is None:
            return None
        return SplitLogits(to_device(split.logits, device), to_device(split.labels, device, torch.long))

    train, test = moved(inputs.train), moved(inputs.test)
    assert train is not None and test is not None
    return dataclasses.replace(inputs, train=train, val=moved(inputs.val), test=test)
