"""One trial: a configuration's knobs → its recipe's params → every seed trained → rows.

:func:`run_configuration` is a plain function (the unit tests and a one-off rerun of a row
call it directly); the Tune functions below are thin wrappers around it. Follow a trial:
``knobs`` → :func:`explore.recipes.get_recipe` → ``recipe.params`` → ``recipe.fit_head`` (or
``recipe.full_plan`` per seed through :func:`explore.training.full.run_full_seeds`) →
:func:`explore.results.rows.build_row` → :func:`explore.results.writer.write_rows`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explore.recipes import get_recipe
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.training.head import HeadTrainConfig
from explore.training.inputs import TrialInputs, splits_of
from explore.training.outcome import Fit, SeedResult

__all__ = ["EPOCHS_TRAINED", "STORAGE_ERROR", "SUMMARY_METRICS", "TrialContext",
           "current_placement", "load_inputs", "rows_of_trial", "run_configuration",
           "summarize_rows", "train_job_trainable", "trainable"]

STORAGE_ERROR = "explore_storage_error"
"""The key of a trial's report that carries a permanent storage failure."""

SUMMARY_METRICS = ("val_acc_overall", "val_acc_many", "val_acc_medium", "val_acc_few",
                   "acc_overall", "acc_many", "acc_medium", "acc_few", "top5_overall",
                   "train_seconds")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (pickled once into the Tune trainable)."""

    layout: SweepLayout
    provenance: Provenance
    method: str
    method_settings: dict[str, Any]
    """The ``method`` group's settings; a trial's knobs override them."""
    head: HeadTrainConfig
    seeds: tuple[int, ...]
    mode: str = "head"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    gpus_per_worker: float = 0.0
    """mode=full: GPUs each Ray Train worker requests (``runner.gpus_per_worker`` resolved)."""
    dataset: Any = None
    """mode=full: the typed ``dataset`` group (full-mode trials load the images)."""
    backbone: Any = None
    """mode=full: the typed ``backbone`` group (architecture, epochs, workers, GPU, AMP)."""
    report_rungs: tuple[float, ...] = ()
    """Epoch counts (over the trial's seeds) at which a head trial reports its validation
    top-1 to Tune: the early-stopping scheduler's rungs. Empty: a head trial reports once,
    at its end. (Full mode reports every epoch through Train.)"""

    @property
    def storage_uri(self) -> str:
        return self.layout.storage_uri


_INPUTS: OrderedDict[tuple[Any, ...], TrialInputs] = OrderedDict()
_MAX_CACHED = 2


def load_inputs(ctx: TrialContext) -> TrialInputs:
    """Features (and base logits) for this sweep, loaded once per worker process: with
    ``reuse_actors`` every later trial in the process skips the load."""
    prov = ctx.provenance
    key = (ctx.storage_uri, prov.feature_key, prov.base_key, prov.thresholds, ctx.head,
           get_recipe(ctx.method).posthoc)
    if key in _INPUTS:
        _INPUTS.move_to_end(key)
        return _INPUTS[key]
    from explore.store import FeatureStore
    from explore.training.posthoc import LinearClassifier, build_posthoc_inputs

    store = FeatureStore(ctx.storage_uri, check=False)
    fset = store.read(prov.feature_key)
    posthoc = None
    if get_recipe(ctx.method).posthoc:
        assert prov.base_key is not None
        arrays, _ = store.get_arrays(prov.base_key, "classifier")
        classifier = LinearClassifier(arrays["weight"], arrays["bias"])
        splits = {n: s for n, s in splits_of(fset).items() if len(s[1]) or n == "train"}
        posthoc = build_posthoc_inputs(splits, classifier, fset.num_classes, prov.thresholds)
    inputs = TrialInputs(fset, posthoc, prov.thresholds, ctx.head)
    _INPUTS[key] = inputs
    while len(_INPUTS) > _MAX_CACHED:
        _INPUTS.popitem(last=False)
    return inputs


def run_configuration(ctx: TrialContext, knobs: dict[str, Any],
                      trial_id: str) -> list[dict[str, Any]]:
    """Train every seed of one configuration; one result row per seed."""
    recipe = get_recipe(ctx.method)
    params = recipe.params({**ctx.method_settings, **knobs})
    started = time.time()
    if ctx.mode == "full":
        fit = _run_full(ctx, recipe, params, trial_id)
    else:
        fit = recipe.fit_head(load_inputs(ctx), params, ctx.seeds)
    placement = {**current_placement(), "started_at": started, "finished_at": time.time()}
    return [build_row(ctx.provenance, trial_id=trial_id, method=recipe.name, role="configuration",
                      result=result, knobs=recipe.columns(params), params=params,
                      training=ctx.head, resolved=fit.resolved, placement=placement)
            for result in fit.results]


def current_placement() -> dict[str, Any]:
    """The Ray node this process runs on and the GPUs Ray assigned to it (all None
    outside Ray: a plain call of :func:`run_configuration`)."""
    import ray

    if not ray.is_initialized():
        return {"node_id": None, "node_ip": None, "gpu_ids": None}
    return {"node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids())}


def error_rows(ctx: TrialContext, knobs: dict[str, Any], trial_id: str,
               message: str) -> list[dict[str, Any]]:
    """``status=error`` rows of a trial that failed for good, one per seed."""
    return _rows_without_results(ctx, knobs, trial_id, "error", error=message)


def _rows_without_results(ctx: TrialContext, knobs: dict[str, Any], trial_id: str, status: str,
                          **row: Any) -> list[dict[str, Any]]:
    """One row per seed of a trial that has no results (failed or stopped): its knobs and
    params (only the knobs when they do not make valid params), no metric; ``row``: the
    rest of :func:`build_row`'s keywords."""
    recipe = get_recipe(ctx.method)
    try:
        params = recipe.params({**ctx.method_settings, **knobs})
        columns = recipe.columns(params)
    except ValueError:
        params, columns = None, {k: v for k, v in knobs.items() if k in recipe.knobs}
    stopped_epochs = row.pop("stopped_epochs", {})
    return [build_row(ctx.provenance, trial_id=trial_id, method=recipe.name, role="configuration",
                      result=SeedResult(seed=s, best_epoch=0, test={}, val={}), knobs=columns,
                      params=params, status=status,
                      stopped_epoch=stopped_epochs.get(s, 0) if status == "stopped" else None,
                      **row)
            for s in ctx.seeds]


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means over seeds of the metrics: what Tune and Optuna see of a trial (NaN when no
    seed has the metric)."""
    out: dict[str, float] = {"num_seeds": float(len(rows))}
    for name in SUMMARY_METRICS:
        values = [float(r[name]) for r in rows
                  if r.get(name) is not None and not math.isnan(float(r[name]))]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def rows_of_trial(ctx: TrialContext, knobs: dict[str, Any], trial_id: str) -> list[dict[str, Any]]:
    """Rows are written (atomically) before the trial reports, so a finished trial is never
    lost; a restarted or resumed trial whose rows exist reuses them."""
    from explore.results import writer

    name = SweepLayout.trial_name(trial_id)
    if name in writer.existing_names(ctx.layout):
        return list(writer.read_file(ctx.layout, name).to_dict("records"))
    rows = run_configuration(ctx, knobs, trial_id)
    writer.write_rows(ctx.layout, name, rows)
    return rows


EPOCH_REPORT = "explore_epoch_report"
"""Marks a trial's per-epoch report (its last result, if the scheduler stopped it)."""


EPOCHS_TRAINED = "explore_epochs"
"""A per-epoch report's count of epochs trained so far over the trial's seeds: the
scheduler's time attribute. The seeds train one after another, in the same order in every
trial, so trials compared at a rung have trained the same seeds as long."""


class EpochReports:
    """A trial's per-epoch reports: each carries the seed, its epoch, the epochs trained so
    far (:data:`EPOCHS_TRAINED`) and every seed's epochs (the rows of a stopped trial say
    how far each seed got). As a head-loop hook it reports only when a rung is reached:
    each report waits for the driver, and the scheduler reads no other epoch."""

    def __init__(self, seeds: Sequence[int], report: Any, rungs: Sequence[float] = ()) -> None:
        self.epochs = {seed: 0 for seed in seeds}
        self.trained = 0
        self._rungs = sorted(rungs)
        self._report = report
        self._placement: dict[str, Any] | None = None
        self._started = time.time()

    def metrics(self, seed: int, epoch: int, val_top1: float,
                trained: int | None = None) -> dict[str, Any]:
        """Counts one more epoch of ``seed`` (or sets the count to ``trained``) and returns
        its report."""
        self._count(seed, epoch, trained)
        return self._report_of(seed, epoch, val_top1)

    def _count(self, seed: int, epoch: int, trained: int | None) -> None:
        self.epochs[seed] = epoch
        self.trained = self.trained + 1 if trained is None else trained

    def _report_of(self, seed: int, epoch: int, val_top1: float) -> dict[str, Any]:
        if self._placement is None:  # on first use: built on the trial driver, used there
            self._placement = current_placement()
        placement = {**self._placement, "started_at": self._started, "finished_at": time.time()}
        return {**summarize_rows([]), "val_acc_overall": val_top1, "seed": seed, "epoch": epoch,
                EPOCH_REPORT: True, EPOCHS_TRAINED: self.trained,
                "epochs_by_seed": json.dumps(self.epochs), "placement": json.dumps(placement)}

    def __call__(self, seed: int, epoch: int, val_top1: float) -> None:
        self._count(seed, epoch, None)
        if not self._rungs or self.trained < self._rungs[0]:
            return
        self._rungs = [rung for rung in self._rungs if rung > self.trained]
        self._report(self._report_of(seed, epoch, val_top1))


def epochs_reached(result: dict[str, Any]) -> dict[int, int] | None:
    """Seed → epochs trained, from a trial's last result when it was a per-epoch report
    (None: the trial reported its end)."""
    if not result.get(EPOCH_REPORT):
        return None
    return {int(seed): int(epochs) for seed, epochs in json.loads(result["epochs_by_seed"]).items()}


def stopped_rows(ctx: TrialContext, knobs: dict[str, Any], trial_id: str,
                 last_report: dict[str, Any]) -> list[dict[str, Any]]:
    """``status=stopped`` rows of a trial the scheduler ended after ``last_report`` (a
    per-epoch report): one per seed, with the epochs it reached, where and how long the
    trial ran, and no metrics (a stopped trial is never a finished result)."""
    return _rows_without_results(ctx, knobs, trial_id, "stopped", training=ctx.head,
                                 stopped_epochs=epochs_reached(last_report) or {},
                                 placement=json.loads(last_report.get("placement") or "{}"))


def _report(config: dict[str, Any], ctx: TrialContext, report: Any) -> None:
    from ray import tune

    from explore.store import StoragePermanentError

    trial_id = tune.get_context().get_trial_id()
    started = time.perf_counter()
    try:
        with _epochs_reported(ctx, report):
            rows = rows_of_trial(ctx, dict(config), trial_id)
    except StoragePermanentError as exc:
        # Disk full, read-only, forbidden: a retry would fail the same way, so the trial
        # reports the error (the driver records it and ends the sweep with one line)
        # instead of raising into Tune's retries.
        report({**summarize_rows([]), STORAGE_ERROR: str(exc)})
        return
    # trial_seconds: the work itself, so that the sweep's overhead can be measured around it.
    report({**summarize_rows(rows), "trial_seconds": time.perf_counter() - started})


@contextlib.contextmanager
def _epochs_reported(ctx: TrialContext, report: Any) -> Iterator[None]:
    """Head trials report at ``ctx.report_rungs`` (full mode reports every epoch through
    Train's callback, :func:`_epoch_callbacks`)."""
    if not ctx.report_rungs or ctx.mode == "full":
        yield
        return
    from explore.training.head import reporting_epochs

    with reporting_epochs(EpochReports(ctx.seeds, report, ctx.report_rungs)):
        yield


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function for ``runner.head_placement=in_trial`` and ``mode=full``: the trial
    trains (head) or drives one Ray Train run per seed (full; it holds only
    ``trial_driver``, docs/operations.md#the-trial_driver-resource)."""
    from ray import tune

    _report(config, ctx, tune.report)



def train_job_trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function for ``runner.head_placement=ray_train``: the trial drives a one-worker
    Ray Train job (the trial holds only ``trial_driver``; the worker holds the CPU/GPU).
    Costs Train's start-up per trial, buys Train's worker fault tolerance."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from explore.store.uri import is_s3, resolve

    trial_id = tune.get_context().get_trial_id()
    fs, train_path = resolve(ctx.layout.train)
    resources = {"CPU": ctx.cpus_per_trial}
    if ctx.gpus_per_trial:
        resources["GPU"] = ctx.gpus_per_trial
    TorchTrainer(
        _train_worker,
        train_loop_config={"ctx": ctx, "knobs": dict(config), "trial_id": trial_id},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=ctx.gpus_per_trial > 0,
                                               resources_per_worker=resources),
        # Heads train on the CPU: gloo, not the nccl Ray picks when GPUs are requested.
        torch_config=TorchConfig(backend="gloo"),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",  # stable per trial: a restarted trial resumes its run
            storage_path=train_path,
            storage_filesystem=fs if is_s3(ctx.storage_uri) else None,
            failure_config=ray.train.FailureConfig(max_failures=ctx.max_failures),
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
        ),
    ).fit()


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train

    started = time.perf_counter()
    with _epochs_reported(config["ctx"], ray.train.report):
        rows = rows_of_trial(config["ctx"], config["knobs"], config["trial_id"])
    ray.train.report({**summarize_rows(rows), "trial_seconds": time.perf_counter() - started})


_DATASETS: OrderedDict[str, Any] = OrderedDict()


def load_images(ctx: TrialContext) -> Any:
    """The sweep's image dataset, loaded once per trial process (full mode)."""
    from explore.data.registry import load_dataset

    key = repr(ctx.dataset)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(ctx.dataset)
        while len(_DATASETS) > 1:
            _DATASETS.popitem(last=False)
    return _DATASETS[key]


def _run_full(ctx: TrialContext, recipe: Any, params: Any, trial_id: str) -> Fit:
    """Every seed of one full-mode configuration, with this sweep's storage: Train runs
    under ``<sweep>/train``, finished seeds' results as JSON records (a retried trial
    skips them)."""
    from explore.store import FeatureStore
    from explore.store.uri import is_s3, resolve
    from explore.training.full import FullSetup, run_full_seeds

    store = FeatureStore(ctx.storage_uri, check=False)
    fs, train_path = resolve(ctx.layout.train)
    dataset = load_images(ctx)
    images = dataset.train.images
    setup = FullSetup(dataset=dataset, features=store.read(ctx.provenance.feature_key),
                      backbone=ctx.backbone, thresholds=ctx.provenance.thresholds, head=ctx.head,
                      in_channels=1 if images is not None and images.ndim == 3 else 3)
    resources = ({"CPU": ctx.cpus_per_trial}
                 | ({"GPU": ctx.gpus_per_worker} if ctx.gpus_per_worker > 0 else {}))

    def done(seed: int) -> SeedResult | None:
        record_fs, path = resolve(ctx.layout.seed_record(trial_id, seed))
        try:
            with record_fs.open_input_file(path) as f:
                return _seed_result_from_json(json.loads(f.read_buffer(f.size()).to_pybytes()))
        except FileNotFoundError:
            return None

    def save(result: SeedResult) -> None:
        record_fs, path = resolve(ctx.layout.seed_record(trial_id, result.seed))
        record_fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with record_fs.open_output_stream(path) as f:
            f.write(json.dumps(_seed_result_json(result), default=str).encode())

    results = run_full_seeds(
        functools.partial(recipe.full_plan, params, setup), ctx.seeds, setup,
        storage_path=train_path, run_prefix=f"full-{trial_id}",
        storage_filesystem=fs if is_s3(ctx.storage_uri) else None,
        max_failures=ctx.max_failures, resources_per_worker=resources,
        callbacks_for_seed=functools.partial(_epoch_callbacks, ctx.seeds, ctx.backbone.epochs),
        done=done, save=save,
    )
    return Fit(results)


def _epoch_callbacks(seeds: Sequence[int], epochs_per_seed: int, seed: int) -> list[Any]:
    """Forward every epoch to Tune when running inside a Tune trial (none otherwise). The
    seeds before ``seed`` have trained all their epochs (they run in order); the callback
    is pickled into Train's controller, so it starts from that count."""
    try:
        return [_epoch_report_class()(seed, *epoch_reports_from(seeds, epochs_per_seed, seed))]
    except RuntimeError:  # not in a Tune session: a plain call of run_configuration
        return []


def epoch_reports_from(seeds: Sequence[int], epochs_per_seed: int,
                       seed: int) -> tuple[EpochReports, int]:
    """The reports of ``seed``'s run, with every earlier seed at ``epochs_per_seed``, and
    the epochs the trial trained before it."""
    before = list(seeds)[: list(seeds).index(seed)]
    epochs = EpochReports(seeds, None)
    epochs.epochs.update({s: epochs_per_seed for s in before})
    return epochs, len(before) * epochs_per_seed


@functools.cache
def _epoch_report_class() -> type:
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):  # type: ignore[misc]
        """TuneReportCallback with the seed and the trial metrics' names added: Tune
        requires the searched metric in every report. Per epoch ``val_acc_overall`` is the
        loop's balanced-validation top-1 of this seed; the trial's final report replaces it
        with the evaluated mean."""

        def __init__(self, seed: int, epochs: EpochReports, trained_before: int) -> None:
            super().__init__()
            self.seed, self.epochs, self.trained_before = seed, epochs, trained_before

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                         checkpoint: Any) -> None:
            epoch = int(metrics[0].get("epoch", 0)) + 1  # the loop counts from 0
            # from the epoch itself, not a count: a resumed run starts past epoch 1
            first = dict(metrics[0]) | self.epochs.metrics(
                self.seed, epoch, float(metrics[0].get("val_acc", float("nan"))),
                trained=self.trained_before + epoch)
            first.pop("plugin_records", None)
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return EpochReport


def _seed_result_json(result: SeedResult) -> dict[str, Any]:
    def clean(d: dict[str, float]) -> dict[str, float | None]:  # JSON has no NaN
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    return {"seed": result.seed, "best_epoch": result.best_epoch, "test": clean(result.test),
            "val": clean(result.val), "train_seconds": result.train_seconds,
            "records": result.records}


def _seed_result_from_json(doc: dict[str, Any]) -> SeedResult:
    def restore(d: dict[str, Any]) -> dict[str, float]:
        return {k: float("nan") if v is None else float(v) for k, v in d.items()}

    return SeedResult(seed=int(doc["seed"]), best_epoch=int(doc["best_epoch"]),
                      test=restore(doc["test"]), val=restore(doc["val"]),
                      train_seconds=float(doc["train_seconds"]), records=doc.get("records", {}))
