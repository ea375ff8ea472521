"""The one training loop for every head trained on cached features.

Methods change it only through :class:`~explore.plugins.Plugins` (loss, epoch
sampler, batch mixing, per-epoch update, extra parameters), never through a copy of the
loop. The loop stays visible: setup → epochs → validation → best-epoch selection. Heads
are small: the seeds of a configuration train either one after the other or stacked as one
batched head (:func:`fit_heads`, ``HeadTrainConfig.seeds_stacked``); each seed's result is
evaluated at its selected epoch. Everything runs on the device a trial was given (a
GPU Ray assigned it, else the CPU): the features go there once (:func:`train_seeds`),
batches are sliced there, and per epoch only the validation counts come back.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import nn

from explore.evaluation import evaluate_logits
from explore.methods.baselines import cross_entropy_loss
from explore.plugins import Plugins
from explore.training.head_config import HeadTrainConfig
from explore.training.outcome import SeedResult
from explore.training.tensors import to_device

__all__ = [
    "Arrays",
    "HeadData",
    "HeadFit",
    "HeadTrainConfig",
    "MakeHead",
    "Rows",
    "evaluate_model",
    "fit_head",
    "fit_heads",
    "on_device",
    "predict_logits",
    "reporting_epochs",
    "seed_result",
    "seeded_linear",
    "select_epoch",
    "top1",
    "train_seeds",
]

Arrays = tuple[np.ndarray, np.ndarray]
"""(features N×d, labels N) of one split."""
Rows: TypeAlias = tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
"""(features N×d, labels N) of one split, as arrays or as tensors (on the trial's device)."""
DeviceRows = tuple[torch.Tensor, torch.Tensor]
"""(float32 features N×d, int64 labels N) on one device."""


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


def _optimizer(params: Sequence[torch.Tensor], cfg: HeadTrainConfig) -> torch.optim.Optimizer:
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


def on_device(split: Rows, device: torch.device) -> DeviceRows:
    """A split's float32 features and int64 labels on ``device`` (views on the CPU)."""
    return to_device(split[0], device), to_device(split[1], device, torch.long)


def _labels(split: Rows) -> np.ndarray:
    y = split[1]
    return y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)


def fit_head(
    model: nn.Module,
    train: Rows,
    val: Rows | None,
    cfg: HeadTrainConfig,
    *,
    seed: int,
    plugins: Plugins | None = None,
    device: torch.device | None = None,
) -> HeadFit:
    """Train ``model`` (features → logits) on ``device`` (default: the CPU; the model is
    moved there, plug-ins must be built there) and return it at the selected epoch."""
    start = time.perf_counter()
    device = device or torch.device("cpu")
    plugins = plugins or Plugins()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    labels = _labels(train)
    x, y = on_device(train, device)
    val_rows = on_device(val, device) if val is not None else None
    params = [p for p in model.parameters() if p.requires_grad] + list(plugins.parameters)
    opt = _optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs,
                                                       eta_min=cfg.lr * cfg.min_lr_ratio)
    loss_fn = plugins.loss or cross_entropy_loss

    states: dict[int, dict[str, Any]] = {}
    curve: list[float] = []
    best = -1.0
    hook = _EPOCH_HOOK.get() if val_rows is not None else None
    for epoch in range(cfg.epochs):
        order = (plugins.sample_indices(labels, epoch, rng) if plugins.sample_indices is not None
                 else rng.permutation(len(labels)))
        stats = _train_epoch(model, opt, x, y, torch.as_tensor(order, device=device),
                             cfg.batch_size, loss_fn, plugins, epoch, rng)
        sched.step()
        if plugins.on_epoch_end is not None:
            plugins.on_epoch_end(epoch, model, stats)
        if val_rows is not None and cfg.select == "best_val":
            acc = top1(model, val_rows)
            curve.append(acc)
            if acc > best:  # keep only the state that can still be selected
                best = acc
                states = {epoch + 1: copy.deepcopy(model.state_dict())}
        if hook is not None:
            assert val_rows is not None
            hook(seed, epoch + 1, curve[-1] if cfg.select == "best_val" else top1(model, val_rows))
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
    return {"train_loss": _mean_loss(torch.stack(losses).tolist() if losses else [], sizes)}


def _mean_loss(values: Sequence[float], sizes: Sequence[int]) -> float:
    total = 0.0
    for value, size in zip(values, sizes):
        total += value * size  # the same float64 sum, in the same order, as per batch
    return total / max(sum(sizes), 1)


def fit_heads(
    models: Sequence[nn.Module],
    train: Rows,
    val: Rows | None,
    cfg: HeadTrainConfig,
    *,
    seeds: Sequence[int],
    plugins: Sequence[Plugins],
    device: torch.device | None = None,
    stacked: bool | None = None,
) -> list[HeadFit]:
    """Train one model per seed (``models[i]`` with ``plugins[i]`` and ``seeds[i]``), either
    one after the other (:func:`fit_head`) or stacked (None: ``cfg.stacks_seeds(device)``).

    Stacked, the models' parameters become one tensor each with a leading seed dimension
    and every step is one batched forward (``torch.func.vmap``), so each seed's gradient is
    that of its own loss; every seed keeps its generator, its epoch samples, its mixing
    and its selected epoch, so the result equals the sequential one within float rounding.
    The models must share one architecture, and the seeds' epochs one number of samples.
    """
    device = device or torch.device("cpu")
    if len(models) != len(seeds) or len(plugins) != len(seeds):
        raise ValueError("fit_heads: one model and one Plugins per seed")
    if not (cfg.stacks_seeds(device) if stacked is None else stacked) or len(seeds) < 2:
        return [fit_head(m, train, val, cfg, seed=s, plugins=p, device=device)
                for m, s, p in zip(models, seeds, plugins)]
    from explore.training.stacked import fit_stacked  # the stacked loop lives beside this one

    return fit_stacked(list(models), train, val, cfg, list(seeds), list(plugins), device)


_PREDICT_BATCH = 8192
"""Rows per forward pass when predicting (the default of :func:`predict_logits`)."""


@torch.no_grad()
def predict_logits(model: nn.Module, features: np.ndarray | torch.Tensor,
                   batch_size: int = 8192) -> torch.Tensor:
    """Logits on the model's device (where the features are moved unless there already)."""
    model.eval()
    x = to_device(features, _device_of(model))
    return torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def top1(model: nn.Module, split: Rows) -> float:
    """Top-1 accuracy: predicted on the model's device, one count read back."""
    # predict_logits' blocks, each reduced to its argmax: no N×C concatenation per epoch.
    model.eval()
    x, y = on_device(split, _device_of(model))
    step = _PREDICT_BATCH
    correct = sum((model(x[s : s + step]).argmax(1) == y[s : s + step]).sum()
                  for s in range(0, len(x), step))
    return int(correct) / len(x)  # = the mean of the boolean hits, in float64


def evaluate_model(model: nn.Module, split: Rows, split_of_class: np.ndarray) -> dict[str, float]:
    """Metrics of ``model`` (features → logits over the classes of ``split_of_class``)."""
    return evaluate_logits(predict_logits(model, split[0]), split[1], split_of_class)


def seed_result(seed: int, fit: HeadFit, data: HeadData,
                records: dict[str, Any] | None = None) -> SeedResult:
    """Test metrics (and validation ones, if any) of one seed's model at its selected epoch."""
    return _seed_result(seed, fit, data.test, data.val, data.split_of_class, records)


def _seed_result(seed: int, fit: HeadFit, test: Rows, val: Rows | None,
                 split_of_class: np.ndarray, records: Mapping[str, Any] | None) -> SeedResult:
    test_metrics = evaluate_model(fit.model, test, split_of_class)
    val_metrics = evaluate_model(fit.model, val, split_of_class) if val is not None else {}
    return SeedResult(seed, fit.best_epoch, test_metrics, val_metrics, list(fit.val_curve),
                      fit.train_seconds, dict(records or {}))


MakeHead = Callable[[int, DeviceRows], tuple[nn.Module, Plugins]]
"""``make(seed, train_rows)`` → the seed's head (initialised from the seed) and its
plug-ins, built on the device of ``train_rows`` (the training rows on the trial's device)."""


def train_seeds(seeds: Sequence[int], data: HeadData, cfg: HeadTrainConfig, make: MakeHead,
                *, device: torch.device | None = None, train: Rows | None = None,
                ) -> list[SeedResult]:
    """Every seed's head trained (:func:`fit_heads`) on ``train`` (default: the data's
    training split) and evaluated on its test and validation splits at its selected
    epoch; the splits go to ``device`` once for all seeds. A seed's records are its
    plug-ins' ``records``."""
    device = device or torch.device("cpu")
    rows = on_device(train if train is not None else data.train, device)
    val = on_device(data.val, device) if data.val is not None else None
    test = on_device(data.test, device)
    built = [make(seed, rows) for seed in seeds]
    plugins = [p for _, p in built]
    fits = fit_heads([m for m, _ in built], rows, val, cfg, seeds=seeds, plugins=plugins,
                     device=device)
    return [_seed_result(seed, fit, test, val, data.split_of_class, p.records)
            for seed, fit, p in zip(seeds, fits, plugins)]


def seeded_linear(d: int, num_classes: int, seed: int) -> nn.Linear:
    """A linear head initialised from ``seed`` (the same weights for the same seed, on any
    device: it is built on the CPU, and training moves it)."""
    torch.manual_seed(seed)
    return nn.Linear(d, num_classes, device="cpu")
