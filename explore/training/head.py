"""One training loop for every head trained on cached features.

Methods plug in pieces (STYLE.md item 4): a per-sample ``loss``, an epoch
``sample_indices`` (e.g. class-balanced for cRT) and a batch ``mix`` (LFM). The loop
stays visible: setup → epochs → validation → best-epoch selection.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explore.training.tensors import tensor_view

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits, targets) → per-sample losses. Targets are class indices or soft labels."""
SampleFn = Callable[[int, np.random.Generator], np.ndarray]
"""(epoch, rng) → the training sample indices of that epoch, in order."""
MixFn = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]
"""(features, labels, rng) → (inputs, targets) of a batch, e.g. mixup with soft targets."""


@dataclass(frozen=True)
class HeadTrainConfig:
    """Optimisation of a head on cached features (SGD, cosine schedule)."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    select: str = "best_val"
    """best_val: keep the epoch with the best balanced-validation top-1; last: the last."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("head training: epochs and batch_size must be >= 1 and lr > 0")
        if self.select not in ("best_val", "last"):
            raise ValueError(f"head training: select={self.select!r} must be 'best_val' or 'last'")


@dataclass
class HeadFit:
    model: nn.Module
    best_epoch: int  # 1-based
    val_curve: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


def fit_head(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    cfg: HeadTrainConfig,
    *,
    seed: int,
    loss: LossFn = ce_loss,
    sample_indices: SampleFn | None = None,
    mix: MixFn | None = None,
) -> HeadFit:
    """Train ``model`` (features → logits) and return it at the selected epoch."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = tensor_view(train[0])
    y = torch.tensor(np.asarray(train[1]), dtype=torch.long)  # a copy: labels are small
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    best_acc, best_epoch, best_state = -1.0, cfg.epochs, None
    curve: list[float] = []
    for epoch in range(cfg.epochs):
        order = sample_indices(epoch, rng) if sample_indices is not None else rng.permutation(len(y))
        _train_epoch(model, opt, x, y, torch.as_tensor(order), cfg.batch_size, loss, mix, rng)
        sched.step()
        if val is not None and cfg.select == "best_val":
            acc = top1(model, val)
            curve.append(acc)
            if acc > best_acc:  # strictly better: ties keep the earlier epoch
                best_acc, best_epoch, best_state = acc, epoch + 1, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return HeadFit(model, best_epoch, curve, time.perf_counter() - start)


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    loss: LossFn,
    mix: MixFn | None,
    rng: np.random.Generator,
) -> None:
    model.train()
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        inputs, targets = x[idx], y[idx]
        if mix is not None:
            inputs, targets = mix(inputs, targets, rng)
        batch_loss = loss(model(inputs), targets).mean()
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()


@torch.no_grad()
def predict_logits(model: nn.Module, features: np.ndarray, batch_size: int = 8192) -> torch.Tensor:
    model.eval()
    x = tensor_view(features)
    return torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


def top1(model: nn.Module, split: tuple[np.ndarray, np.ndarray]) -> float:
    pred = predict_logits(model, split[0]).argmax(1).numpy()
    return float((pred == np.asarray(split[1])).mean())
