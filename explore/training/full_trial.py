"""One full-mode configuration: every seed's Ray Train run, with each finished seed's
result recorded as a small JSON document, so that a retried trial never retrains it.

The sweep supplies where things go (the Train runs' storage, one record URI per seed)
and, inside a Tune trial, the per-epoch callbacks; this module knows no method and no
sweep.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from explore.backbone.train_config import BackboneTrainConfig
from explore.data.registry import DatasetConfig
from explore.data.types import LongTailDataset
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.store.documents import read_json, write_json
from explore.store.uri import is_s3, resolve
from explore.training.full import FullPlan, FullSetup, run_full_seeds
from explore.training.head_config import HeadTrainConfig
from explore.training.outcome import Fit, SeedResult

__all__ = ["full_setup", "run_full_configuration", "seed_result_from_json", "seed_result_json"]

_DATASETS: OrderedDict[str, LongTailDataset] = OrderedDict()


def _images(dataset: DatasetConfig) -> LongTailDataset:
    """The sweep's image dataset, loaded once per trial process."""
    from explore.data.registry import load_dataset

    key = repr(dataset)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(dataset)
        while len(_DATASETS) > 1:
            _DATASETS.popitem(last=False)
    return _DATASETS[key]


def full_setup(dataset: DatasetConfig, features: FeatureSet, backbone: BackboneTrainConfig,
               thresholds: SplitThresholds, head: HeadTrainConfig) -> FullSetup:
    images = _images(dataset)
    channels = images.train.images
    return FullSetup(dataset=images, features=features, backbone=backbone, thresholds=thresholds,
                     head=head, in_channels=1 if channels is not None and channels.ndim == 3 else 3)


def run_full_configuration(
    plan_for_seed: Callable[[int], FullPlan],
    seeds: Sequence[int],
    setup: FullSetup,
    *,
    train_uri: str,
    record_uri: Callable[[int], str],
    run_prefix: str,
    max_failures: int,
    resources_per_worker: dict[str, float],
    callbacks_for_seed: Callable[[int], Sequence[Any]] = lambda seed: (),
) -> Fit:
    """Every seed of one configuration: Train runs under ``train_uri``, each finished
    seed's result at ``record_uri(seed)`` (read back instead of retrained)."""
    fs, train_path = resolve(train_uri)
    results = run_full_seeds(
        plan_for_seed, seeds, setup, storage_path=train_path, run_prefix=run_prefix,
        storage_filesystem=fs if is_s3(train_uri) else None, max_failures=max_failures,
        resources_per_worker=resources_per_worker, callbacks_for_seed=callbacks_for_seed,
        done=functools.partial(_recorded, record_uri),
        save=lambda result: write_json(record_uri(result.seed), seed_result_json(result),
                                       "recording a finished seed"),
    )
    return Fit(results)


def _recorded(record_uri: Callable[[int], str], seed: int) -> SeedResult | None:
    try:
        return seed_result_from_json(read_json(record_uri(seed), "reading a finished seed"))
    except FileNotFoundError:
        return None


def seed_result_json(result: SeedResult) -> dict[str, Any]:
    def clean(d: dict[str, float]) -> dict[str, float | None]:  # JSON has no NaN
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    return {"seed": result.seed, "best_epoch": result.best_epoch, "test": clean(result.test),
            "val": clean(result.val), "train_seconds": result.train_seconds,
            "records": result.records}


def seed_result_from_json(doc: dict[str, Any]) -> SeedResult:
    def restore(d: dict[str, Any]) -> dict[str, float]:
        return {k: float("nan") if v is None else float(v) for k, v in d.items()}

    return SeedResult(seed=int(doc["seed"]), best_epoch=int(doc["best_epoch"]),
                      test=restore(doc["test"]), val=restore(doc["val"]),
                      train_seconds=float(doc["train_seconds"]), records=doc.get("records", {}))
