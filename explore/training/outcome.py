"""What one seed of one trained configuration produced."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SeedResult:
    """Test metrics at the selected epoch, the validation metrics there, and timing."""

    seed: int
    best_epoch: int
    test: dict[str, float]
    val: dict[str, float]
    val_curve: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
