"""The backbone training loop: one plain per-worker function that methods plug into.

explore trains a backbone once with plain cross-entropy (the features every head-level sweep
reuses) and, in "full mode", again with a long-tail method's loss (SWRM, neighbor
silencing, LFM mixup). Both use :func:`train_backbone`; a method changes it only through
:class:`Plugins` (its loss, its batch mixing, its per-epoch sampling, its extra
trainable parameters), never through a copy of the loop.

The same function runs in a plain process (``rank=0, world_size=1``) and on every Ray Train
worker (:mod:`explore.backbone.ray_job` passes the rank, a DDP-wrapped model and a
``report`` callback that turns metrics and state into ``ray.train.report`` + a checkpoint).

Data-parallel rules (why the helpers look as they do):

- every rank draws the same epoch permutation (rng seeded by ``(seed, epoch)``) and takes
  every ``world_size``-th index, after cyclic padding so that all ranks run the same number
  of steps (DDP hangs when one rank stops early);
- ``batch_size`` is the *global* batch, split evenly over the ranks, so changing the number
  of workers keeps the optimisation the same up to BatchNorm statistics;
- each rank's mixing/augmentation rng is seeded by ``(seed, epoch, rank)``, so a resumed run
  repeats exactly what an uninterrupted one does.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from explore.backbone.models import load_batch, unwrap
from explore.backbone.train_config import BackboneTrainConfig
from explore.data.types import ImageSplit
from explore.methods.baselines import cross_entropy_loss
from explore.plugins import Plugins

__all__ = [
    "BatchFn",
    "ReportFn",
    "evaluate",
    "lr_at",
    "train_backbone",
]

log = logging.getLogger(__name__)

ReportFn = Callable[[dict[str, float], "dict[str, Any] | None"], None]
"""``report(metrics, state)``: called on every rank after every epoch; ``state`` (what a
checkpoint holds) is given on rank 0 at checkpoint epochs and is None otherwise."""

BatchFn = Callable[[int, int, int], None]
"""``on_batch(epoch, batches_done, batches_in_epoch)``: called on every rank after every
training step (progress display; it must be cheap, e.g. rate-limited by the caller)."""


# ---------------------------------------------------------------------------------------------
# Small helpers beside the loop
# ---------------------------------------------------------------------------------------------


def lr_at(cfg: BackboneTrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` (constant within an epoch)."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    if cfg.lr_schedule == "cosine":
        span = cfg.epochs - cfg.warmup_epochs
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    passed = sum(1 for m in cfg.lr_milestones if epoch >= m)
    return cfg.lr * cfg.lr_gamma**passed


def _rank_indices(labels: np.ndarray, cfg: BackboneTrainConfig, plugins: Plugins, epoch: int,
                  rank: int, world_size: int) -> np.ndarray:
    """This rank's training indices for ``epoch`` (same length on every rank)."""
    shared = np.random.default_rng([cfg.seed, epoch, 0])  # identical on every rank
    n = len(labels)
    idx = np.arange(n) if plugins.sample_indices is None else np.asarray(
        plugins.sample_indices(labels, epoch, shared), dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(
            f"sample_indices must return a non-empty 1-D array of indices in [0, {n}), got "
            f"shape {idx.shape}"
        )
    idx = shared.permutation(idx)
    per_rank = -(-len(idx) // world_size)
    idx = np.resize(idx, per_rank * world_size)  # cyclic padding, as DistributedSampler does
    return idx[rank::world_size]


def _batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches; a last batch of one sample is dropped (BatchNorm cannot train on it)."""
    out = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return [b for b in out if len(b) > 1] or out


def _flip_crop(x: torch.Tensor, rng: np.random.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after zero padding by ``pad`` pixels."""
    n, _, h, w = x.shape
    flip = torch.from_numpy(rng.random(n) < 0.5).to(x.device)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def _distributed(world_size: int) -> bool:
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def _sum_over_ranks(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if _distributed(world_size):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _make_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                plugins: Plugins, cfg: BackboneTrainConfig, epoch: int,
                metrics: dict[str, float]) -> dict[str, Any]:
    # Copies, not views: a state kept in memory must not follow the model as training goes on.
    return {
        "model": {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scaler": scaler.state_dict(),
        "plugin_parameters": [p.detach().cpu().clone() for p in plugins.parameters],
        "plugin_records": copy.deepcopy(plugins.records),
        "plugin_state": (copy.deepcopy(plugins.state_dict())
                         if plugins.state_dict is not None else None),
        "epoch": epoch,
        "metrics": dict(metrics),
        "config": cfg.as_dict(),
    }


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            plugins: Plugins, state: dict[str, Any]) -> int:
    """Load a state written by :func:`_make_state`; returns the first epoch still to run."""
    missing = {"model", "optimizer", "epoch"} - set(state)
    if missing:
        raise ValueError(f"start_state lacks {sorted(missing)}; pass a state handed to report()")
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    saved = state.get("plugin_parameters", [])
    if len(saved) != len(plugins.parameters):
        raise ValueError(
            f"start_state holds {len(saved)} plug-in parameters but the plug-ins have "
            f"{len(plugins.parameters)}; resume with the same method"
        )
    with torch.no_grad():
        for p, v in zip(plugins.parameters, saved, strict=True):
            p.copy_(v)
    plugins.records.update(copy.deepcopy(state.get("plugin_records", {})))
    saved_state = state.get("plugin_state")
    if plugins.load_state_dict is not None:
        if saved_state is None:  # silently starting the plug-ins afresh would change the run
            raise ValueError("start_state holds no plug-in state but the plug-ins keep one; it "
                             "was saved by another method or an older explore: start afresh")
        plugins.load_state_dict(copy.deepcopy(saved_state))
    elif saved_state is not None:
        raise ValueError("start_state holds a plug-in state but the plug-ins keep none; resume "
                         "with the same method")
    return int(state["epoch"]) + 1


# ---------------------------------------------------------------------------------------------
# One epoch, validation
# ---------------------------------------------------------------------------------------------


def _train_epoch(model: nn.Module, train: ImageSplit, batches: list[np.ndarray],
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 plugins: Plugins, cfg: BackboneTrainConfig, epoch: int,
                 rng: np.random.Generator, device: torch.device, world_size: int,
                 decode: Callable[[str], np.ndarray] | None,
                 on_batch: BatchFn | None = None) -> dict[str, float]:
    """One pass over this rank's batches; returns loss/accuracy averaged over all ranks."""
    model.train()
    pre = unwrap(model).preprocess
    loss_fn = plugins.loss or cross_entropy_loss
    use_amp = cfg.amp and device.type == "cuda"
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss·n, correct, n
    for step, idx in enumerate(batches, 1):
        x = load_batch(train, idx, pre, decode).to(device, non_blocking=True)
        y = torch.from_numpy(np.asarray(train.labels[idx], dtype=np.int64)).to(device)
        if cfg.augment:
            x = _flip_crop(x, rng)
        targets: torch.Tensor = y
        if plugins.mix is not None:
            x, targets = plugins.mix(x, y, epoch, rng)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x)
            loss = loss_fn(logits, targets, epoch)
            loss = loss.float().mean()  # per-sample losses are averaged over the batch
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for p in plugins.parameters:  # DDP only averages the model's own gradients
            if p.grad is not None and _distributed(world_size):
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world_size
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            totals += torch.stack([loss.detach().double() * len(y),
                                   (logits.argmax(1) == y).sum().double(),
                                   torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
        if on_batch is not None:
            on_batch(epoch, step, len(batches))
    totals = _sum_over_ranks(totals, world_size)
    n = max(float(totals[2]), 1.0)
    return {"train_loss": float(totals[0]) / n, "train_acc": float(totals[1]) / n}


def evaluate(model: nn.Module, split: ImageSplit, *, batch_size: int = 512,
             device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
             decode: Callable[[str], np.ndarray] | None = None,
             amp: bool = False) -> dict[str, float]:
    """Top-1 accuracy on ``split``: ``acc`` over samples and ``class_acc`` (mean per-class
    recall, equal to ``acc`` on a class-balanced split). Each rank scores every
    ``world_size``-th sample; counts are summed over ranks, so every rank returns the same."""
    device = torch.device(device)
    net = unwrap(model)  # plain module: no DDP hooks, eval needs no gradient sync
    was_training = net.training
    net.eval()
    idx = np.arange(len(split))[rank::world_size]
    num_classes = int(split.labels.max()) + 1 if len(split) else 1
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    count = torch.zeros(num_classes, dtype=torch.float64, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                enabled=amp and device.type == "cuda"):
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            x = load_batch(split, b, net.preprocess, decode).to(device)
            y = torch.from_numpy(np.asarray(split.labels[b], dtype=np.int64)).to(device)
            hit = (net(x).argmax(1) == y).double()
            correct.index_add_(0, y, hit)
            count.index_add_(0, y, torch.ones_like(hit))
    stats = _sum_over_ranks(torch.cat([correct, count]), world_size).cpu()
    correct, count = stats[:num_classes], stats[num_classes:]
    net.train(was_training)
    present = count > 0
    return {
        "acc": float(correct.sum() / count.sum().clamp(min=1)),
        "class_acc": float((correct[present] / count[present]).mean()) if present.any() else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train_backbone(
    model: nn.Module,
    train: ImageSplit,
    val: ImageSplit | None,
    cfg: BackboneTrainConfig,
    plugins: Plugins | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    report: ReportFn | None = None,
    start_state: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    decode: Callable[[str], np.ndarray] | None = None,
    on_batch: BatchFn | None = None,
) -> dict[str, Any]:
    """Train ``model`` (a ``Backbone``, possibly DDP-wrapped) in place on ``train``.

    ``model`` should already be seeded/initialised identically on every rank (DDP also
    broadcasts rank 0's weights). ``start_state`` (a state once handed to ``report``)
    resumes after its epoch. ``device`` defaults to ``cuda`` when ``cfg.use_gpu`` else
    ``cpu``; ``decode`` reads path-based splits; ``on_batch`` (see :data:`BatchFn`) follows
    each epoch's steps.

    Returns ``{"history": [metrics per epoch run here], "final": last metrics}``; both are
    the same on every rank. Metrics per epoch: ``epoch`` (0-based), ``lr``, ``train_loss``,
    ``train_acc`` (against the un-mixed labels), ``val_acc``, ``val_class_acc`` (when
    ``val`` is given), ``world_size``, ``dist_world_size`` (from ``torch.distributed``; 1
    when not distributed), ``epoch_time_s``.
    """
    # --- setup -------------------------------------------------------------------------------
    plugins = plugins or Plugins()
    if unwrap(model).arch != cfg.arch:
        raise ValueError(f"cfg.arch={cfg.arch!r} but the model is a {unwrap(model).arch!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if len(train) == 0:
        raise ValueError("the training split is empty")
    if device is None:
        if cfg.use_gpu and not torch.cuda.is_available():
            raise ValueError("cfg.use_gpu=True but CUDA is not available here")
        device = "cuda" if cfg.use_gpu else "cpu"
    device = torch.device(device)
    torch.manual_seed(cfg.seed * 1000 + rank)  # for any stochastic layers; data rngs are below
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(plugins.parameters)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    first_epoch = 0 if start_state is None else _resume(model, optimizer, scaler, plugins,
                                                       start_state)
    local_batch = cfg.batch_size // world_size

    # --- fit ---------------------------------------------------------------------------------
    history: list[dict[str, float]] = []
    for epoch in range(first_epoch, cfg.epochs):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        _set_lr(optimizer, lr)
        batches = _batches(_rank_indices(train.labels, cfg, plugins, epoch, rank, world_size),
                           local_batch)
        rank_rng = np.random.default_rng([cfg.seed, epoch, 1 + rank])
        metrics: dict[str, float] = {
            "epoch": epoch, "lr": lr, "world_size": world_size,
            # what torch.distributed itself says: evidence that DDP really spans the ranks
            "dist_world_size": dist.get_world_size() if _distributed(world_size) else 1,
        }
        metrics |= _train_epoch(model, train, batches, optimizer, scaler, plugins, cfg, epoch,
                                rank_rng, device, world_size, decode, on_batch)
        if plugins.on_epoch_end is not None:
            plugins.on_epoch_end(epoch, model, metrics)
        if val is not None:
            scores = evaluate(model, val, batch_size=cfg.val_batch_size, device=device,
                              rank=rank, world_size=world_size, decode=decode, amp=cfg.amp)
            metrics |= {"val_acc": scores["acc"], "val_class_acc": scores["class_acc"]}
        metrics["epoch_time_s"] = time.perf_counter() - t0
        history.append(metrics)
        if rank == 0:
            log.info("epoch %d/%d lr %.4g loss %.4f train_acc %.3f%s (%.1fs)", epoch + 1,
                     cfg.epochs, lr, metrics["train_loss"], metrics["train_acc"],
                     f" val_acc {metrics['val_acc']:.3f}" if val is not None else "",
                     metrics["epoch_time_s"])
        checkpoint_now = (epoch + 1) % cfg.checkpoint_every == 0 or epoch == cfg.epochs - 1
        state = (_make_state(model, optimizer, scaler, plugins, cfg, epoch, metrics)
                 if rank == 0 and checkpoint_now else None)
        if report is not None:
            report(metrics, state)
    return {"history": history, "final": history[-1] if history else {}}
