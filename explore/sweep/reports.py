"""What a trial reports to Tune: per-epoch reports at the scheduler's rungs, and its final
report (the means Tune and Optuna see, and the trial's rows, which the driver's
:class:`~explore.sweep.recorder.RowRecorder` writes)."""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["EPOCHS_TRAINED", "EPOCH_REPORT", "ROWS", "STORAGE_ERROR", "SUMMARY_METRICS",
           "TRIAL_ERROR",
           "EpochReports", "current_placement", "epoch_callbacks", "epoch_reports_from",
           "epochs_reached", "final_report", "rows_of", "summarize_rows", "trial_device"]

STORAGE_ERROR = "explore_storage_error"
"""The key of a trial's report that carries a permanent storage failure."""

TRIAL_ERROR = "explore_trial_error"
"""The key of a trial's report that carries a deterministic failure (the configuration
cannot run: a retry would fail the same way), recorded once instead of retried."""

ROWS = "explore_rows"
"""The key of a trial's final report that carries its rows (JSON)."""

EPOCH_REPORT = "explore_epoch_report"
"""Marks a trial's per-epoch report (its last result, if the scheduler stopped it)."""

EPOCHS_TRAINED = "explore_epochs"
"""A per-epoch report's count of epochs trained so far over the trial's seeds: the
scheduler's time attribute. The seeds train one after another, or stacked (epoch by epoch
over all seeds, ``head.seeds_stacked``), in the same order in every trial of a sweep, so
trials compared at a rung have trained the same seeds as long."""

SUMMARY_METRICS = ("val_acc_overall", "val_acc_many", "val_acc_medium", "val_acc_few",
                   "acc_overall", "acc_many", "acc_medium", "acc_few", "top5_overall",
                   "train_seconds")


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means over seeds of the metrics: what Tune and Optuna see of a trial (NaN when no
    seed has the metric)."""
    out: dict[str, float] = {"num_seeds": float(len(rows))}
    for name in SUMMARY_METRICS:
        values = [float(r[name]) for r in rows
                  if r.get(name) is not None and not math.isnan(float(r[name]))]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def final_report(rows: Sequence[dict[str, Any]], trial_seconds: float) -> dict[str, Any]:
    """A finished trial's report: the means, its own work time (so that the sweep's
    overhead can be measured around it) and its rows."""
    return {**summarize_rows(rows), "trial_seconds": trial_seconds,
            ROWS: json.dumps(list(rows), default=_plain_value)}


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows a final report carries (None: not a final report)."""
    text = result.get(ROWS)
    return None if text is None else list(json.loads(text))


def _plain_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def current_placement() -> dict[str, Any]:
    """The Ray node this process runs on, the GPUs Ray assigned to it (None outside Ray: a
    plain call of the trial's training) and the device its heads train on."""
    import ray

    device = str(trial_device())
    if not ray.is_initialized():
        return {"node_id": None, "node_ip": None, "gpu_ids": None, "device": device}
    return {"node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()), "device": device}


def trial_device() -> torch.device:
    """Where this process's head trials train: the first GPU Ray assigned it (Ray sets
    ``CUDA_VISIBLE_DEVICES`` to the assigned GPUs, so that is ``cuda:0`` here), else the
    CPU: outside Ray, with no GPU assigned, or without CUDA in this process."""
    import ray
    import torch

    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class EpochReports:
    """A trial's per-epoch reports: each carries the seed, its epoch, the epochs trained so
    far (:data:`EPOCHS_TRAINED`) and every seed's epochs (the rows of a stopped trial say
    how far each seed got). As a head-loop hook it reports only when a rung is reached:
    each report waits for the driver, and the scheduler reads no other epoch."""

    def __init__(self, seeds: Sequence[int], report: Callable[[dict[str, Any]], None] | None,
                 rungs: Sequence[float] = ()) -> None:
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
        if self._report is None or not self._rungs or self.trained < self._rungs[0]:
            return
        self._rungs = [rung for rung in self._rungs if rung > self.trained]
        self._report(self._report_of(seed, epoch, val_top1))


def epochs_reached(result: dict[str, Any]) -> dict[int, int] | None:
    """Seed → epochs trained, from a trial's last result when it was a per-epoch report
    (None: the trial reported its end)."""
    if not result.get(EPOCH_REPORT):
        return None
    return {int(seed): int(epochs) for seed, epochs in json.loads(result["epochs_by_seed"]).items()}


def epoch_reports_from(seeds: Sequence[int], epochs_per_seed: int,
                       seed: int) -> tuple[EpochReports, int]:
    """The reports of ``seed``'s run, with every earlier seed at ``epochs_per_seed``, and
    the epochs the trial trained before it."""
    before = list(seeds)[: list(seeds).index(seed)]
    epochs = EpochReports(seeds, None)
    epochs.epochs.update({s: epochs_per_seed for s in before})
    return epochs, len(before) * epochs_per_seed


def epoch_callbacks(seeds: Sequence[int], epochs_per_seed: int, seed: int) -> list[Any]:
    """Full mode: Train callbacks that forward every epoch of ``seed``'s run to Tune when
    running inside a Tune trial (none otherwise). The seeds before ``seed`` have trained
    all their epochs (they run in order); the callback is pickled into Train's controller,
    so it starts from that count."""
    try:
        return [_epoch_report_class()(seed, *epoch_reports_from(seeds, epochs_per_seed, seed))]
    except RuntimeError:  # not in a Tune session: a plain call of the trial's training
        return []


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
