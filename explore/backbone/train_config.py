"""How a backbone is trained (:class:`BackboneTrainConfig`) and the architecture names
(:data:`ARCHITECTURES`): plain data, importable without torch (the sweep driver validates
its config with them; :mod:`explore.backbone.loop` and :mod:`explore.backbone.models` use
them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["ARCHITECTURES", "CPU_ARCHITECTURES", "TORCHVISION_ARCHITECTURES",
           "BackboneTrainConfig"]

CPU_ARCHITECTURES: tuple[str, ...] = ("small_cnn", "resnet32")
"""The architectures :mod:`explore.backbone.models` builds itself."""
TORCHVISION_ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet50", "resnext50_32x4d")
"""torchvision's architectures (when torchvision is importable)."""
ARCHITECTURES: tuple[str, ...] = CPU_ARCHITECTURES + TORCHVISION_ARCHITECTURES
"""Every architecture name :func:`explore.backbone.models.build_model` accepts."""


@dataclass(frozen=True)
class BackboneTrainConfig:
    """How a backbone is trained. Defaults follow the CIFAR-LT recipe of LDAM/SWRM (SGD,
    momentum 0.9, weight decay 5e-4, lr 0.1) with a cosine schedule."""

    arch: str = "small_cnn"
    """Architecture name (see ``explore.backbone.models.ARCHITECTURES``); recorded for provenance
    and checked against the model that is trained."""
    epochs: int = 10
    batch_size: int = 128
    """Global batch size, split evenly over the ``num_workers`` ranks."""
    lr: float = 0.1
    """Peak learning rate of SGD."""
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: Literal["cosine", "step"] = "cosine"
    """cosine: ``lr · ½(1 + cos(π·epoch/epochs))``; step: ``lr · gamma^(milestones passed)``."""
    lr_milestones: tuple[int, ...] = ()
    """step schedule: epochs at which the lr is multiplied by ``lr_gamma`` (LDAM: 160, 180)."""
    lr_gamma: float = 0.1
    warmup_epochs: int = 0
    """Linear warm-up over the first epochs (LDAM uses 5), before the schedule applies."""
    augment: bool = False
    """Random horizontal flip + 4-pixel-padded random crop of training batches (CIFAR recipe)."""
    seed: int = 0
    num_workers: int = 1
    """Data-parallel Ray Train workers of :func:`explore.backbone.ray_job.run_backbone_job`."""
    use_gpu: bool = False
    amp: bool = False
    """Mixed precision (float16 autocast + GradScaler); only on CUDA, so it needs ``use_gpu``."""
    checkpoint_every: int = 1
    """Hand rank 0's state to ``report`` every this many epochs (and always after the last)."""
    val_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {list(ARCHITECTURES)}")
        for name in ("epochs", "batch_size", "num_workers", "checkpoint_every", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2 * self.num_workers:
            raise ValueError(
                f"batch_size={self.batch_size} is the global batch: it needs at least 2 samples "
                f"per worker (num_workers={self.num_workers})"
            )
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, momentum={self.momentum}"
            )
        if self.lr_schedule not in ("cosine", "step"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'step', got {self.lr_schedule!r}")
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise ValueError("lr_schedule='step' needs lr_milestones, e.g. (160, 180)")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise ValueError(f"lr_milestones must be strictly increasing, got {self.lr_milestones}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} "
                f"(epochs={self.epochs})"
            )
        if self.amp and not self.use_gpu:
            raise ValueError("amp=True needs use_gpu=True (mixed precision is CUDA-only here)")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> BackboneTrainConfig:
        """The ``backbone`` config group → validated config; unknown keys are an error."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"backbone: unknown setting(s) {unknown}; allowed: "
                             f"{', '.join(sorted(allowed))}")
        values = dict(values)
        if "lr_milestones" in values:
            values["lr_milestones"] = tuple(values["lr_milestones"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d
