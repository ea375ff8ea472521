"""Full mode: the backbone trained on images with a long-tail method (``mode=full``).

Head mode trains a classifier on the cached features of a CE-trained backbone; full mode
trains the whole backbone with the method, as the papers do. This module knows no method:
a recipe turns its params into a :class:`FullPlan` per seed (what to train on, how many
outputs, and a picklable factory of its :class:`~explore.plugins.Plugins`, the
same plug-ins its head mode uses), and :func:`run_full_seeds` trains each seed as one Ray
Train run of the one backbone loop (:func:`explore.backbone.loop.train_backbone`).

One Ray Train run per (trial, seed) with a stable name (``<prefix>-seed<s>``), checkpointed
every epoch, so a retried trial resumes its seed where it stopped; a finished seed's result
is recorded (``done``/``save``), so a retry never retrains it. Each seed is evaluated at its
last epoch (``best_epoch`` = the number of epochs); outputs beyond the dataset's classes
(neighbor silencing's auxiliary classes) are dropped at evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explore.backbone.models import load_batch
from explore.backbone.train_config import BackboneTrainConfig
from explore.data.types import ImageSplit, LongTailDataset
from explore.evaluation import evaluate_logits
from explore.plugins import Plugins
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.training.head_config import HeadTrainConfig
from explore.training.outcome import SeedResult

__all__ = ["FullModeError", "FullPlan", "FullSetup", "method_start", "run_full_seeds"]

log = logging.getLogger("explore")


class FullModeError(ValueError):
    """A full-mode setting or method that cannot run; the message says what to change."""


@dataclass(frozen=True)
class FullSetup:
    """What a recipe's full-mode plan may use; computed once on the trial driver."""

    dataset: LongTailDataset
    features: FeatureSet
    """The sweep's CE-backbone features (SWRM prototypes, neighbour search)."""
    backbone: BackboneTrainConfig
    thresholds: SplitThresholds
    head: HeadTrainConfig
    in_channels: int


@dataclass(frozen=True)
class FullPlan:
    """One seed's full-mode training, as a recipe plans it."""

    train: ImageSplit
    num_outputs: int
    plugins: Callable[[], Plugins]
    """Built on every Ray Train worker (plug-ins hold closures and tensors), so it must
    pickle: a module-level function or a ``functools.partial`` of one."""
    resolved: Mapping[str, Any] = field(default_factory=dict)
    stage2: Callable[[FeatureSet, int], SeedResult] | None = None
    """LFM: a head trained on the stage-1 backbone's features gives the seed's result."""
    classifier: Callable[[int], torch.nn.Module] | None = None
    """Replaces the backbone's linear classifier (see ``ModelSpec.classifier``). When it has
    a ``project`` method, the features handed to ``stage2`` are ``project(embed(x))``."""


def method_start(drw_start: int | None, fraction: float, epochs: int) -> int:
    """The 0-based epoch a deferred method loss starts at: ``drw_start``, or
    ``floor(fraction · epochs)`` when it is None; checked against ``epochs``."""
    start = int(fraction * epochs) if drw_start is None else drw_start
    if not 0 <= start < epochs:
        raise FullModeError(f"drw_start={start} must be below backbone.epochs={epochs} (the method "
                            "loss needs at least one epoch)")
    return start


def _logits(model: Any, split: ImageSplit, batch_size: int = 512) -> torch.Tensor:
    """Logits of a ``Backbone`` (it carries its own ``preprocess``) over a whole split."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([
            model(load_batch(split, np.arange(s, min(s + batch_size, len(split))),
                             model.preprocess)).float()
            for s in range(0, len(split), batch_size)
        ])


def _features_of(model: torch.nn.Module, dataset: LongTailDataset, seed: int) -> FeatureSet:
    from explore.backbone.extract import extract_features
    from explore.store import FeatureSplit

    project = getattr(model.classifier, "project", None)

    def features(split: ImageSplit) -> np.ndarray:
        x = extract_features(model, split)
        if project is None:
            return x
        with torch.no_grad():
            return project(torch.from_numpy(x)).numpy()

    splits = {name: FeatureSplit(features(getattr(dataset, name)), getattr(dataset, name).labels)
              for name in ("train", "val", "test")}
    return FeatureSet(splits, tuple(dataset.classes), {"stage": "full-1", "seed": seed})


def run_full_seeds(
    plan_for_seed: Callable[[int], FullPlan],
    seeds: Sequence[int],
    setup: FullSetup,
    *,
    storage_path: str,
    run_prefix: str,
    storage_filesystem: Any = None,
    max_failures: int = 0,
    resources_per_worker: dict[str, float] | None = None,
    callbacks_for_seed: Callable[[int], Sequence[Any]] = lambda seed: (),
    done: Callable[[int], SeedResult | None] = lambda seed: None,
    save: Callable[[SeedResult], None] = lambda result: None,
) -> list[SeedResult]:
    """Train the backbone with the method once per seed and evaluate it on val/test."""
    from explore.backbone.models import ModelSpec
    from explore.backbone.ray_job import run_backbone_job

    dataset = setup.dataset
    L = dataset.num_classes
    split_of_class = setup.thresholds.split_of_class(dataset.class_counts())
    results = []
    for seed in seeds:
        previous = done(seed)
        if previous is not None:
            results.append(previous)
            continue
        start = time.perf_counter()
        plan = plan_for_seed(seed)
        spec = ModelSpec(setup.backbone.arch, plan.num_outputs, setup.in_channels,
                         classifier=plan.classifier)
        state, metrics = run_backbone_job(
            spec, plan.train, dataset.val if len(dataset.val) else None,
            dataclasses.replace(setup.backbone, seed=seed), plan.plugins, storage_path,
            run_name=f"{run_prefix}-seed{seed}", storage_filesystem=storage_filesystem,
            max_failures=max_failures, resources_per_worker=resources_per_worker,
            callbacks=callbacks_for_seed(seed),
        )
        model = spec.build()
        model.load_state_dict(state)
        records = {**plan.resolved, **metrics.get("plugin_records", {}),
                   "worker_gpu_ids": metrics.get("worker_gpu_ids", [])}
        if plan.stage2 is not None:
            result = plan.stage2(_features_of(model, dataset, seed), seed)
            result.records = {**records, **result.records}
        else:
            test = evaluate_logits(_logits(model, dataset.test)[:, :L], dataset.test.labels,
                                   split_of_class)
            val = (evaluate_logits(_logits(model, dataset.val)[:, :L], dataset.val.labels,
                                   split_of_class) if len(dataset.val) else {})
            result = SeedResult(seed=seed, best_epoch=setup.backbone.epochs, test=test, val=val,
                                records=records)
        result.train_seconds = time.perf_counter() - start
        log.info("full seed %d: test top-1 %.3f (%.0f s)", seed, result.test["acc_overall"],
                 result.train_seconds)
        save(result)
        results.append(result)
    return results
