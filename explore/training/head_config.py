"""How a head is trained on cached features (:class:`HeadTrainConfig`, the ``head`` config
group): plain data, importable without torch (the sweep driver validates its config with
it; :mod:`explore.training.head` trains with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["HeadTrainConfig"]


@dataclass(frozen=True)
class HeadTrainConfig:
    """Optimisation of a head on cached features (the ``head`` config group): every
    training-time method's head and every base/reference model train with it."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"
    """sgd: SGD with ``momentum``; adam: Adam (``momentum`` unused). Both with
    ``weight_decay`` and a cosine schedule to ``lr · min_lr_ratio``."""
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_lr_ratio: float = 0.0
    """The cosine schedule anneals to ``lr · min_lr_ratio`` (0: to zero)."""
    select: Literal["best_val", "last"] = "best_val"
    """best_val: keep the epoch with the best balanced-validation top-1; last: the last."""
    seeds_stacked: bool | Literal["auto"] = "auto"
    """True: a configuration's seeds train as one stacked head (one batched product per
    step, each seed with its own samples and generator: the sequential result within
    float rounding); False: one seed after the other; auto: stacked on a GPU, sequential
    on the CPU (where stacking does not pay, BENCHMARKS.md §6). How, not what: it is not
    part of a base model's cache key."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("head training: epochs and batch_size must be >= 1 and lr > 0")
        if self.select not in ("best_val", "last"):
            raise ValueError(f"head training: select={self.select!r} must be 'best_val' or 'last'")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"head training: optimizer={self.optimizer!r} must be 'sgd' or 'adam'")
        if not 0 <= self.min_lr_ratio <= 1 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("head training: need 0 <= min_lr_ratio <= 1, weight_decay >= 0 and "
                             "0 <= momentum < 1")
        if not (isinstance(self.seeds_stacked, bool) or self.seeds_stacked == "auto"):
            raise ValueError(f"head training: seeds_stacked={self.seeds_stacked!r} must be "
                             "auto, true or false")

    def stacks_seeds(self, device: torch.device) -> bool:
        """Whether the seeds train stacked on ``device`` (``seeds_stacked`` resolved)."""
        if isinstance(self.seeds_stacked, bool):
            return self.seeds_stacked
        return device.type == "cuda"
