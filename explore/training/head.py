"""The one training loop for every head trained on cached features.

Methods change it only through :class:`~explore.plugins.Plugins` (loss, epoch
sampler, batch mixing, per-epoch update, extra parameters), never through a copy of the
loop. The loop stays visible: setup → epochs → validation → best-epoch selection. Heads
are small, so the seeds of a configuration train one after the other
(:func:`run_seeds`); each seed's result is evaluated at its selected epoch.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from explore.evaluation import evaluate_logits
from explore.methods.baselines import cross_entropy_loss
from explore.plugins import Plugins
from explore.training.outcome import SeedResult
from explore.training.tensors import tensor_view

__all__ = [
    "Arrays",
    "HeadData",
    "HeadFit",
    "HeadTrainConfig",
    "evaluate_model",
    "fit_head",
    "predict_logits",
    "reporting_epochs",
    "run_seeds",
    "seed_result",
    "seeded_linear",
    "select_epoch",
    "top1",
]

Arrays = tuple[np.ndarray, np.ndarray]
"""(features N×d, labels N) of one split."""


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


@dataclass
class HeadFit:
    model: nn.Module
    best_epoch: int
    """1-based."""
    val_curve: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


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


EpochHook = Callable[[int, int, float], None]
"""Called after every epoch of every :func:`fit_head` with (seed, 1-based epoch, balanced
validation top-1)."""

_EPOCH_HOOK: contextvars.ContextVar[EpochHook | None] = contextvars.ContextVar(
    "explore_epoch_hook", default=None)


@contextlib.contextmanager
def reporting_epochs(hook: EpochHook) -> Iterator[None]:
    """Within this block every :func:`fit_head` (in this thread) reports each epoch's
    validation top-1 to ``hook``: how a Tune trial feeds an early-stopping scheduler
    without a recipe knowing about it. A hook may raise to end training."""
    token = _EPOCH_HOOK.set(hook)
    try:
        yield
    finally:
        _EPOCH_HOOK.reset(token)


def _optimizer(params: list[nn.Parameter], cfg: HeadTrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def select_epoch(val_curve: Sequence[float], num_epochs: int, first_epoch: int = 1) -> int:
    """The 1-based epoch with the best validation top-1 among epochs >= ``first_epoch``
    (strictly better wins, so ties keep the earlier); the last epoch without a curve."""
    if not val_curve:
        return num_epochs
    start = min(first_epoch, len(val_curve)) - 1
    window = list(val_curve[start:])
    return start + int(np.argmax(window)) + 1  # argmax returns the first maximum


def fit_head(
    model: nn.Module,
    train: Arrays,
    val: Arrays | None,
    cfg: HeadTrainConfig,
    *,
    seed: int,
    plugins: Plugins | None = None,
) -> HeadFit:
    """Train ``model`` (features → logits) and return it at the selected epoch."""
    start = time.perf_counter()
    plugins = plugins or Plugins()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = tensor_view(train[0])
    labels = np.asarray(train[1])
    y = torch.tensor(labels, dtype=torch.long)  # a copy: labels are small
    params = [p for p in model.parameters() if p.requires_grad] + list(plugins.parameters)
    opt = _optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs,
                                                       eta_min=cfg.lr * cfg.min_lr_ratio)
    loss_fn = plugins.loss or cross_entropy_loss

    states: dict[int, dict[str, Any]] = {}
    curve: list[float] = []
    best = -1.0
    hook = _EPOCH_HOOK.get() if val is not None else None
    for epoch in range(cfg.epochs):
        order = (plugins.sample_indices(labels, epoch, rng) if plugins.sample_indices is not None
                 else rng.permutation(len(y)))
        stats = _train_epoch(model, opt, x, y, torch.as_tensor(order), cfg.batch_size, loss_fn,
                             plugins, epoch, rng)
        sched.step()
        if plugins.on_epoch_end is not None:
            plugins.on_epoch_end(epoch, model, stats)
        if val is not None and cfg.select == "best_val":
            acc = top1(model, val)
            curve.append(acc)
            if acc > best:  # keep only the state that can still be selected
                best = acc
                states = {epoch + 1: copy.deepcopy(model.state_dict())}
        if hook is not None:
            assert val is not None
            hook(seed, epoch + 1, curve[-1] if cfg.select == "best_val" else top1(model, val))
    best_epoch = select_epoch(curve, cfg.epochs)
    if best_epoch in states:
        model.load_state_dict(states[best_epoch])
    return HeadFit(model, best_epoch, curve, time.perf_counter() - start)


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 order: torch.Tensor, batch_size: int, loss_fn: Callable[..., torch.Tensor],
                 plugins: Plugins, epoch: int, rng: np.random.Generator) -> dict[str, float]:
    model.train()
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        inputs, targets = x[idx], y[idx]
        if plugins.mix is not None:
            inputs, targets = plugins.mix(inputs, targets, epoch, rng)
        batch_loss = loss_fn(model(inputs), targets, epoch).mean()
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        losses.append(batch_loss.detach())  # read once after the epoch, not per batch
        sizes.append(len(idx))
    total = 0.0
    for value, size in zip(torch.stack(losses).tolist() if losses else [], sizes):
        total += value * size  # the same float64 sum, in the same order, as per batch
    return {"train_loss": total / max(sum(sizes), 1)}


_PREDICT_BATCH = 8192
"""Rows per forward pass when predicting (the default of :func:`predict_logits`)."""


@torch.no_grad()
def predict_logits(model: nn.Module, features: np.ndarray, batch_size: int = 8192) -> torch.Tensor:
    model.eval()
    x = tensor_view(features)
    return torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


@torch.no_grad()
def top1(model: nn.Module, split: Arrays) -> float:
    # predict_logits' blocks, each reduced to its argmax: no N×C concatenation per epoch.
    model.eval()
    x, step = tensor_view(split[0]), _PREDICT_BATCH
    pred = torch.cat([model(x[s : s + step]).argmax(1) for s in range(0, len(x), step)])
    return float((pred.numpy() == np.asarray(split[1])).mean())


def evaluate_model(model: nn.Module, split: Arrays, split_of_class: np.ndarray) -> dict[str, float]:
    """Metrics of ``model`` (features → logits over the classes of ``split_of_class``)."""
    return evaluate_logits(predict_logits(model, split[0]), split[1], split_of_class)


def seed_result(seed: int, fit: HeadFit, data: HeadData,
                records: dict[str, Any] | None = None) -> SeedResult:
    """Test metrics (and validation ones, if any) of one seed's model at its selected epoch."""
    test = evaluate_model(fit.model, data.test, data.split_of_class)
    val = evaluate_model(fit.model, data.val, data.split_of_class) if data.val is not None else {}
    return SeedResult(seed, fit.best_epoch, test, val, list(fit.val_curve), fit.train_seconds,
                      dict(records or {}))


def run_seeds(seeds: Sequence[int], data: HeadData,
              train_one: Callable[[int], tuple[HeadFit, dict[str, Any]]]) -> list[SeedResult]:
    """Train and evaluate each seed in turn; ``train_one(seed)`` → (fit, the seed's records)."""
    results = []
    for seed in seeds:
        fit, records = train_one(seed)
        results.append(seed_result(seed, fit, data, records))
    return results


def seeded_linear(d: int, num_classes: int, seed: int) -> nn.Linear:
    """A linear head initialised from ``seed`` (the same weights for the same seed)."""
    torch.manual_seed(seed)
    return nn.Linear(d, num_classes)
