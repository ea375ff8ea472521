"""Base models on cached features: the linear classifiers post-hoc methods correct.

Every base is a ``LinearClassifier`` (W, b), so any of them can be AlphaNet's base.
cRT (Kang et al. 2020) re-trains the linear classifier on frozen features with
class-balanced sampling; ``ce`` trains it with plain instance sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from explore.methods.baselines import class_balanced_indices
from explore.training.head import HeadTrainConfig, fit_head
from explore.training.posthoc import LinearClassifier

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BaseSpec:
    """Which base model, and how it is trained (the ``base`` config group)."""

    name: str = "crt"
    train: HeadTrainConfig = HeadTrainConfig()

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> BaseSpec:
        values = dict(values)
        name = values.pop("name", "crt")
        if name not in BASES:
            raise ValueError(f"unknown base {name!r}; known bases: {', '.join(sorted(BASES))}")
        allowed = {f.name for f in fields(HeadTrainConfig)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"base: unknown setting(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        return cls(name, HeadTrainConfig(**values))


def _linear_head(splits: Splits, num_classes: int) -> nn.Linear:
    return nn.Linear(splits["train"][0].shape[1], num_classes)


def _to_classifier(head: nn.Linear) -> LinearClassifier:
    return LinearClassifier(
        head.weight.detach().numpy().astype(np.float32).copy(),
        head.bias.detach().numpy().astype(np.float32).copy(),
    )


def train_ce(splits: Splits, num_classes: int, cfg: HeadTrainConfig, seed: int) -> LinearClassifier:
    torch.manual_seed(seed)
    head = _linear_head(splits, num_classes)
    fit = fit_head(head, splits["train"], splits.get("val"), cfg, seed=seed)
    return _to_classifier(fit.model)  # type: ignore[arg-type]


def train_crt(splits: Splits, num_classes: int, cfg: HeadTrainConfig, seed: int) -> LinearClassifier:
    """cRT: a fresh linear classifier trained with class-balanced sampling."""
    labels = splits["train"][1]

    def balanced(_epoch: int, rng: np.random.Generator) -> np.ndarray:
        return class_balanced_indices(labels, num_classes, len(labels), rng)

    torch.manual_seed(seed)
    head = _linear_head(splits, num_classes)
    fit = fit_head(head, splits["train"], splits.get("val"), cfg, seed=seed, sample_indices=balanced)
    return _to_classifier(fit.model)  # type: ignore[arg-type]


BASES: dict[str, Callable[[Splits, int, HeadTrainConfig, int], LinearClassifier]] = {
    "crt": train_crt,
    "ce": train_ce,
}


def train_base(spec: BaseSpec, splits: Splits, num_classes: int, seed: int) -> LinearClassifier:
    return BASES[spec.name](splits, num_classes, spec.train, seed)
