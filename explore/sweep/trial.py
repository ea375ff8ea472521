"""One trial: a configuration's knobs → every seed trained → result rows.

``run_configuration`` is a plain function (the unit tests and a one-off rerun of a
row call it directly); ``trainable`` is the thin Tune wrapper around it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from explore.splits import SplitThresholds
from explore.training.outcome import SeedResult
from explore.training.registry import TrialInputs, get_method


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (pickled once into the Tune trainable)."""

    sweep_id: str
    space_name: str
    storage_uri: str
    feature_key: str
    dataset_name: str
    method_name: str
    method_settings: dict[str, Any]
    seeds: tuple[int, ...]
    thresholds: SplitThresholds
    mode: str = "head"
    base_name: str | None = None
    base_key: str | None = None
    code_version: str = ""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    dataset: dict[str, Any] = dataclasses.field(default_factory=dict)
    """mode=full: the sweep's ``dataset`` group (full-mode trials load the images themselves)."""
    backbone: dict[str, Any] = dataclasses.field(default_factory=dict)
    """mode=full: the ``backbone`` group (architecture, epochs, ``num_workers``, ``use_gpu``, ``amp``)."""
    full: dict[str, Any] = dataclasses.field(default_factory=dict)
    """mode=full: the ``full`` settings (:class:`explore.training.full.FullModeConfig`)."""


_INPUTS: OrderedDict[tuple[str, str, str | None, SplitThresholds], TrialInputs] = OrderedDict()
_MAX_CACHED = 2


def load_inputs(ctx: TrialContext) -> TrialInputs:
    """Features (and base logits) for this sweep, loaded once per worker process:
    with ``reuse_actors`` every later trial in the process skips the load."""
    key = (ctx.storage_uri, ctx.feature_key, ctx.base_key, ctx.thresholds)
    if key in _INPUTS:
        _INPUTS.move_to_end(key)
        return _INPUTS[key]
    from explore.pipeline import splits_of
    from explore.store.feature_store import FeatureStore
    from explore.training.posthoc import LinearClassifier, build_posthoc_inputs

    store = FeatureStore(ctx.storage_uri, check=False)
    fset = store.read(ctx.feature_key)
    posthoc = None
    if ctx.base_key is not None:
        arrays, _ = store.get_arrays(ctx.base_key, "classifier")
        classifier = LinearClassifier(arrays["weight"], arrays["bias"])
        splits = {n: s for n, s in splits_of(fset).items() if len(s[1]) or n == "train"}
        posthoc = build_posthoc_inputs(splits, classifier, fset.num_classes, ctx.thresholds)
    inputs = TrialInputs(fset, posthoc, ctx.thresholds)
    _INPUTS[key] = inputs
    while len(_INPUTS) > _MAX_CACHED:
        _INPUTS.popitem(last=False)
    return inputs


def run_configuration(ctx: TrialContext, knobs: dict[str, Any], trial_id: str) -> list[dict[str, Any]]:
    """Train every seed of one configuration; one result row per seed. ``mode=full``
    trains the backbone with the method (one Ray Train run per seed); ``head`` trains on
    the cached features."""
    method = get_method(ctx.method_name)
    params = method.make_params({**ctx.method_settings, **knobs})
    if ctx.mode == "full":
        results = _run_full(ctx, method, params, trial_id)
    else:
        results = method.run(load_inputs(ctx), params, list(ctx.seeds))
    return [
        result_row(ctx, trial_id, ctx.method_name, ctx.base_name, params, r) for r in results
    ]


def result_row(
    ctx: TrialContext,
    trial_id: str,
    method: str,
    base: str | None,
    params: Any,
    result: SeedResult,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    """One Parquet row: ids, every knob the method has, test and validation metrics, provenance."""
    param_values = dataclasses.asdict(params) if params is not None else {}
    row: dict[str, Any] = {
        "sweep_id": ctx.sweep_id,
        "space": ctx.space_name,
        "trial_id": trial_id,
        "seed": result.seed,
        "method": method,
        "base": base,
        "mode": ctx.mode,
        "status": status,
        "dataset": ctx.dataset_name,
        "feature_key": ctx.feature_key,
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "many_above": ctx.thresholds.many_above,
        "few_below": ctx.thresholds.few_below,
        "code_version": ctx.code_version,
        "params_json": json.dumps(param_values, sort_keys=True, default=str),
        "error": error,
    }
    from explore.results.schema import KNOB_COLUMNS

    for knob in KNOB_COLUMNS:
        row[knob] = param_values.get(knob)
    for name, value in result.test.items():
        row[name] = value
    for name, value in result.val.items():
        if name.startswith("acc_"):
            row["val_" + name] = value
    return row


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over seeds of the numeric metrics: what Tune and Optuna see of a trial."""
    out: dict[str, float] = {"num_seeds": float(len(rows))}
    for name in ("val_acc_overall", "val_acc_many", "val_acc_medium", "val_acc_few",
                 "acc_overall", "acc_many", "acc_medium", "acc_few", "top5_overall", "train_seconds"):
        values = [float(r[name]) for r in rows if r.get(name) is not None and not math.isnan(float(r[name]))]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def rows_of_trial(ctx: TrialContext, knobs: dict[str, Any], trial_id: str) -> list[dict[str, Any]]:
    """Rows are written (atomically) before the trial reports, so a finished trial is
    never lost; a restarted or resumed trial whose rows exist reuses them."""
    from explore.results import writer

    name = f"trial-{trial_id}"
    if name in writer.existing_names(ctx.storage_uri, ctx.sweep_id):
        uri = writer.storage.join(writer.results_uri(ctx.storage_uri, ctx.sweep_id), f"{name}.parquet")
        return writer.read_results(uri).to_dict("records")
    rows = run_configuration(ctx, knobs, trial_id)
    writer.write_rows(ctx.storage_uri, ctx.sweep_id, name, rows)
    return rows


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function for ``runner.head_placement=in_trial``: trains inside the trial."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    started = time.perf_counter()
    rows = rows_of_trial(ctx, dict(config), trial_id)
    # trial_seconds: the work itself, so that the sweep's overhead can be measured around it.
    tune.report({**summarize_rows(rows), "trial_seconds": time.perf_counter() - started})


def train_job_trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function for ``runner.head_placement=ray_train``: the trial drives a one-worker
    Ray Train job (the trial holds only the ``trial_driver`` resource; the worker holds
    the CPU/GPU). Costs Train's start-up per trial, buys Train's worker fault tolerance:
    a lost worker is restarted ``max_failures`` times and the trial goes on."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from explore.results import writer
    from explore.store.uri import is_s3, resolve

    trial_id = tune.get_context().get_trial_id()
    fs, sweep_path = resolve(writer.sweep_uri(ctx.storage_uri, ctx.sweep_id))
    resources = {"CPU": ctx.cpus_per_trial}
    if ctx.gpus_per_trial:
        resources["GPU"] = ctx.gpus_per_trial
    TorchTrainer(
        _train_worker,
        train_loop_config={"ctx": ctx, "knobs": dict(config), "trial_id": trial_id},
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=ctx.gpus_per_trial > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",  # stable per trial: a restarted trial resumes its run
            storage_path=f"{sweep_path}/train",
            storage_filesystem=fs if is_s3(ctx.storage_uri) else None,
            failure_config=ray.train.FailureConfig(max_failures=ctx.max_failures),
            callbacks=[TuneReportCallback()],
        ),
    ).fit()


def full_trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function for ``mode=full``: the trial holds only ``trial_driver`` and drives one
    Ray Train run per seed on ``backbone.num_workers`` DDP workers (RAY_NOTES §3); every
    epoch reaches Tune through :class:`_EpochReport`, and the trial's last report is the
    mean over its seeds' evaluated rows (what Optuna sees)."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    started = time.perf_counter()
    rows = rows_of_trial(ctx, dict(config), trial_id)
    # trial_seconds: the work itself, so that the sweep's overhead can be measured around it.
    tune.report({**summarize_rows(rows), "trial_seconds": time.perf_counter() - started})


_DATASETS: OrderedDict[str, Any] = OrderedDict()


def load_images(ctx: TrialContext) -> Any:
    """The sweep's image dataset, loaded once per trial process (full mode)."""
    from explore.data.registry import DatasetConfig, load_dataset

    key = json.dumps(ctx.dataset, sort_keys=True, default=str)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(DatasetConfig.from_mapping(ctx.dataset))
        while len(_DATASETS) > 1:
            _DATASETS.popitem(last=False)
    return _DATASETS[key]


def _run_full(ctx: TrialContext, method: Any, params: Any, trial_id: str) -> list[SeedResult]:
    """Every seed of one full-mode configuration (:func:`explore.training.full.run_full_seeds`),
    with this sweep's storage: Train runs under ``<sweep>/train``, finished seeds' results
    as JSON artifacts (a retried trial skips them)."""
    from explore.pipeline import backbone_train_config
    from explore.results import writer
    from explore.store.feature_store import FeatureStore, feature_key
    from explore.store.uri import is_s3, resolve
    from explore.training.full import FullModeConfig, full_method_kind, run_full_seeds
    from explore.training.registry import TrialInputs

    store = FeatureStore(ctx.storage_uri, check=False)
    fs, sweep_path = resolve(writer.sweep_uri(ctx.storage_uri, ctx.sweep_id))
    bcfg = backbone_train_config(ctx.backbone)
    done_key = feature_key({"kind": "full-seed", "sweep": ctx.sweep_id, "trial": trial_id})
    resources = {"CPU": ctx.cpus_per_trial} | ({"GPU": 1.0} if bcfg.use_gpu else {})

    def stage2(features: Any, seed: int) -> SeedResult:  # LFM: the head-mode trainer
        return method.run(TrialInputs(features, None, ctx.thresholds), params, [seed])[0]

    def done(seed: int) -> SeedResult | None:
        if not store.has_json(done_key, f"seed{seed}"):
            return None
        return _seed_result_from_json(store.get_json(done_key, f"seed{seed}"))

    def save(result: SeedResult) -> None:
        store.put_json(done_key, f"seed{result.seed}", _seed_result_json(result))

    return run_full_seeds(
        params, ctx.seeds, load_images(ctx), store.read(ctx.feature_key), bcfg,
        FullModeConfig.from_mapping(ctx.full), ctx.thresholds,
        storage_path=f"{sweep_path}/train", run_prefix=f"full-{trial_id}",
        storage_filesystem=fs if is_s3(ctx.storage_uri) else None,
        max_failures=ctx.max_failures, resources_per_worker=resources,
        callbacks_for_seed=_epoch_callbacks, stage2=stage2 if full_method_kind(params) == "lfm" else None,
        done=done, save=save,
    )


def _epoch_callbacks(seed: int) -> list[Any]:
    """Forward every epoch to Tune when running inside a Tune trial (none otherwise)."""
    try:
        return [_EpochReport(seed)]
    except RuntimeError:  # not in a Tune session: a plain call of run_configuration
        return []


@functools.cache
def _epoch_report_class() -> type:
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):  # type: ignore[misc]
        """TuneReportCallback with the seed and the trial metrics' names added: Tune
        requires the searched metric in every report. Per epoch ``val_acc_overall`` is the
        loop's balanced-validation top-1 of this seed (for neighbor silencing over all
        L+K outputs); the trial's final report replaces it with the evaluated mean."""

        def __init__(self, seed: int) -> None:
            super().__init__()
            self.seed = seed

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            first = {name: float("nan") for name in summarize_rows([])} | dict(metrics[0])
            first.update(seed=self.seed, val_acc_overall=float(metrics[0].get("val_acc", float("nan"))))
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return EpochReport


def _EpochReport(seed: int) -> Any:  # noqa: N802 - a class built lazily (Ray import)
    return _epoch_report_class()(seed)


def _seed_result_json(result: SeedResult) -> dict[str, Any]:
    def clean(d: dict[str, float]) -> dict[str, float | None]:  # JSON has no NaN
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    return {"seed": result.seed, "best_epoch": result.best_epoch, "test": clean(result.test),
            "val": clean(result.val), "train_seconds": result.train_seconds}


def _seed_result_from_json(doc: dict[str, Any]) -> SeedResult:
    def restore(d: dict[str, Any]) -> dict[str, float]:
        return {k: float("nan") if v is None else float(v) for k, v in d.items()}

    return SeedResult(seed=int(doc["seed"]), best_epoch=int(doc["best_epoch"]), test=restore(doc["test"]),
                      val=restore(doc["val"]), train_seconds=float(doc["train_seconds"]))


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train

    started = time.perf_counter()
    rows = rows_of_trial(config["ctx"], config["knobs"], config["trial_id"])
    ray.train.report({**summarize_rows(rows), "trial_seconds": time.perf_counter() - started})
