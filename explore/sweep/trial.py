"""One trial: a configuration's knobs → its recipe's params → every seed trained → rows,
reported to Tune (the driver's :class:`~explore.sweep.recorder.RowRecorder` writes them).

:func:`run_configuration` is a plain function (the unit tests and a one-off rerun of a row
call it directly); the Tune functions below are thin wrappers around it. Follow a trial:
``knobs`` → :func:`explore.recipes.get_recipe` → ``recipe.params`` → ``recipe.fit_head`` (or
``recipe.full_plan`` per seed through :func:`explore.training.full_trial.run_full_configuration`)
→ :func:`explore.results.rows.build_row` → :func:`explore.sweep.reports.final_report`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch

from explore.recipes import Recipe, RecipeError, get_recipe
from explore.results.layout import SweepLayout
from explore.results.rows import build_row
from explore.sweep.context import FullTrialContext, HeadTrialContext, TrialContext
from explore.sweep.reports import (
    STORAGE_ERROR,
    TRIAL_ERROR,
    EpochReports,
    current_placement,
    epoch_callbacks,
    final_report,
    summarize_rows,
    trial_device,
)
from explore.training.inputs import TrialInputs, splits_of
from explore.training.outcome import Fit

__all__ = ["final_result", "load_inputs", "rows_of_trial", "run_configuration",
           "train_job_trainable", "trainable"]

Report = Callable[[dict[str, Any]], None]

_INPUTS: OrderedDict[tuple[Any, ...], TrialInputs] = OrderedDict()
_MAX_CACHED = 2


def load_inputs(ctx: HeadTrialContext, device: torch.device | None = None) -> TrialInputs:
    """Features (and base logits, computed on ``device``) for this sweep, loaded once per
    worker process: with ``reuse_actors`` every later trial in the process skips the load."""
    prov = ctx.provenance
    posthoc = get_recipe(ctx.method).posthoc
    device = device or torch.device("cpu")
    key = (ctx.storage_uri, prov.feature_key, prov.base_key, prov.thresholds, ctx.head, posthoc,
           str(device))
    if key in _INPUTS:
        _INPUTS.move_to_end(key)
        return _INPUTS[key]
    from explore.store import FeatureStore
    from explore.training.posthoc import LinearClassifier, build_posthoc_inputs

    store = FeatureStore(ctx.storage_uri, check=False)
    fset = store.read(prov.feature_key)
    base_logits = None
    if posthoc:
        assert prov.base_key is not None
        arrays, _ = store.get_arrays(prov.base_key, "classifier")
        classifier = LinearClassifier(arrays["weight"], arrays["bias"])
        splits = {n: s for n, s in splits_of(fset).items() if len(s[1]) or n == "train"}
        base_logits = build_posthoc_inputs(splits, classifier, fset.num_classes, prov.thresholds,
                                           device)
    inputs = TrialInputs(fset, base_logits, prov.thresholds, ctx.head, device)
    _INPUTS[key] = inputs
    while len(_INPUTS) > _MAX_CACHED:
        _INPUTS.popitem(last=False)
    return inputs


def run_configuration(ctx: TrialContext, knobs: dict[str, Any], trial_id: str,
                      device: torch.device | None = None) -> list[dict[str, Any]]:
    """Train every seed of one configuration on ``device`` (default:
    :func:`trial_device`); one result row per seed, each recording the device."""
    recipe = get_recipe(ctx.method)
    params = recipe.params({**ctx.method_settings, **knobs})
    started = time.time()
    if isinstance(ctx, FullTrialContext):
        device = torch.device("cpu")  # the trial drives Train runs; stage 2 runs here
        fit = _fit_full(ctx, recipe, params, trial_id)
    else:
        assert isinstance(ctx, HeadTrialContext)
        device = device or trial_device()
        fit = recipe.fit_head(load_inputs(ctx, device), params, ctx.seeds)
    placement = {**current_placement(), "device": str(device), "started_at": started,
                 "finished_at": time.time()}
    return [build_row(ctx.provenance, trial_id=trial_id, method=recipe.name, role="configuration",
                      result=result, knobs=recipe.columns(params), params=params,
                      training=ctx.head, resolved=fit.resolved, placement=placement)
            for result in fit.results]


def _fit_full(ctx: FullTrialContext, recipe: Recipe[Any], params: Any, trial_id: str) -> Fit:
    from explore.store import FeatureStore
    from explore.training.full_trial import full_setup, run_full_configuration

    features = FeatureStore(ctx.storage_uri, check=False).read(ctx.provenance.feature_key)
    setup = full_setup(ctx.dataset, features, ctx.backbone, ctx.provenance.thresholds, ctx.head)
    resources = ({"CPU": ctx.cpus_per_trial}
                 | ({"GPU": ctx.gpus_per_worker} if ctx.gpus_per_worker > 0 else {}))
    return run_full_configuration(
        functools.partial(recipe.full_plan, params, setup), ctx.seeds, setup,
        train_uri=ctx.layout.train, record_uri=functools.partial(ctx.layout.seed_record, trial_id),
        run_prefix=f"full-{trial_id}", max_failures=ctx.max_failures,
        resources_per_worker=resources,
        callbacks_for_seed=functools.partial(epoch_callbacks, ctx.seeds, ctx.backbone.epochs))


def rows_of_trial(ctx: TrialContext, knobs: dict[str, Any], trial_id: str) -> list[dict[str, Any]]:
    """The trial's rows: trained now, or read back when a restarted trial's rows were
    recorded already."""
    from explore.results import writer

    name = SweepLayout.trial_name(trial_id)
    if name in writer.existing_names(ctx.layout):
        return list(writer.read_file(ctx.layout, name).to_dict("records"))
    return run_configuration(ctx, knobs, trial_id)


def _report(config: dict[str, Any], ctx: TrialContext, trial_id: str, report: Report) -> None:
    from explore.store import StoragePermanentError, redact
    from explore.training.full import FullModeError

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
    except (RecipeError, FullModeError) as exc:
        # The configuration cannot run on this data (a deterministic error): recorded as
        # error rows at once, not retried; a resume runs it again once the cause is fixed.
        report({**summarize_rows([]), TRIAL_ERROR: redact(_first_line(exc))})
        return
    report(final_report(rows, time.perf_counter() - started))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _epochs_reported(ctx: TrialContext, report: Report) -> Iterator[None]:
    """Head trials report at ``ctx.report_rungs`` (full mode reports every epoch through
    Train's callback, :func:`explore.sweep.reports.epoch_callbacks`)."""
    if not ctx.report_rungs or isinstance(ctx, FullTrialContext):
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

    _report(config, ctx, tune.get_context().get_trial_id(), tune.report)


def final_result(config: dict[str, Any], ctx: HeadTrialContext, trial_id: str) -> dict[str, Any]:
    """A head trial run outside Tune (a warm worker, :mod:`explore.sweep.workers`): its
    final report, what Tune's trainable reports last."""
    reports: list[dict[str, Any]] = []
    _report(config, ctx, trial_id, reports.append)
    return reports[-1]


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
        # One worker, no collectives: gloo, not the nccl Ray picks when GPUs are requested
        # (the worker's heads still train on its GPU, trial_device).
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
    ray.train.report(final_report(rows, time.perf_counter() - started))
