"""What training a configuration produced: one :class:`SeedResult` per seed, and the
data-dependent values the recipe resolved (returned, never written into frozen params)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fit", "SeedResult"]


@dataclass
class SeedResult:
    """Test metrics at the selected epoch, the validation metrics there, and timing."""

    seed: int
    best_epoch: int
    test: dict[str, float]
    val: dict[str, float]
    val_curve: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    records: dict[str, Any] = field(default_factory=dict)
    """Per-seed values measured while training (e.g. DySWRM's last mean margin); they
    join the row's ``params_json`` under ``resolved``."""


@dataclass(frozen=True)
class Fit:
    """All seeds of one configuration."""

    results: list[SeedResult]
    resolved: dict[str, Any] = field(default_factory=dict)
    """Values the recipe resolved from the data (the t-SNE perplexity actually used, the
    auxiliary classes chosen, the text encoder, ...): the same for every seed."""
