"""Every write at a trial's end, as trial hooks (:mod:`explore.sweep.hooks`): the trial's
rows when it finishes, ``status=error`` rows when it fails for good, ``status=stopped``
rows when the scheduler ends it early, the removal of a configuration's stale error rows
once it succeeds, and the study journal's upload. The live view (:mod:`explore.sweep.progress`) only draws.

Results are written by the driver (one writer, the store's atomic single-step writes), so
a trial that finished is recorded exactly once, and a failed trial never loses the rows of
finished ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from explore.recipes import get_recipe
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import build_row
from explore.store import StorageError, StoragePermanentError, redact
from explore.sweep.context import TrialContext
from explore.sweep.hooks import TrialHooks
from explore.sweep.reports import STORAGE_ERROR, TRIAL_ERROR, epochs_reached, rows_of
from explore.training.outcome import SeedResult

__all__ = ["RowRecorder", "error_line", "error_rows", "stopped_rows"]

log = logging.getLogger("explore")


class RowRecorder(TrialHooks):
    """Records each trial's end in the sweep's results (see the module docstring).

    ``on_trial_end`` runs after each trial's end is recorded (the journal upload).
    ``storage_errors``: permanent storage failures (disk full, read-only, forbidden) seen by
    trials or by the recorder itself; the driver ends the sweep with the first.
    """

    def __init__(self, ctx: TrialContext, on_trial_end: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.on_trial_end = on_trial_end or (lambda: None)
        self.storage_errors: list[str] = []
        self.ended = 0
        """Trials whose end was recorded (finished, failed or stopped)."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        rows = rows_of(result)
        if rows is None:
            return
        name = SweepLayout.trial_name(trial.trial_id)
        if self._write(trial, name, rows):
            writer.delete_rows(self.ctx.layout, SweepLayout.error_name(dict(trial.config)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get(STORAGE_ERROR):  # a permanent storage failure the trial did not retry
            self.storage_errors.append(str(result[STORAGE_ERROR]))
            self._failed(trial, str(result[STORAGE_ERROR]))
        elif result.get(TRIAL_ERROR):  # a configuration that cannot run: not retried
            self._failed(trial, str(result[TRIAL_ERROR]))
        elif epochs_reached(result) is not None:  # the scheduler stopped it at an epoch
            self._write(trial, SweepLayout.trial_name(trial.trial_id),
                        stopped_rows(self.ctx, dict(trial.config), trial.trial_id, result))
        self._ended()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, error_line(trial))
        self._ended()

    def _failed(self, trial: Any, message: str) -> None:
        """Rows written before the failure (e.g. lost while reporting) are kept."""
        if SweepLayout.trial_name(trial.trial_id) in writer.existing_names(self.ctx.layout):
            return
        self._write(trial, SweepLayout.error_name(dict(trial.config)),
                    error_rows(self.ctx, dict(trial.config), trial.trial_id, message))

    def _write(self, trial: Any, name: str, rows: list[dict[str, Any]]) -> bool:
        """The store failing is logged (permanently: the sweep ends), the driver stays up."""
        try:
            writer.write_rows(self.ctx.layout, name, rows)
            return True
        except StoragePermanentError as exc:
            self.storage_errors.append(str(exc))
        except StorageError as exc:
            log.error("could not record trial %s (%s): %s; a resume runs it again",
                      trial.trial_id, name, exc)
        return False

    def _ended(self) -> None:
        self.ended += 1
        self.on_trial_end()


def error_rows(ctx: TrialContext, knobs: dict[str, Any], trial_id: str,
               message: str) -> list[dict[str, Any]]:
    """``status=error`` rows of a trial that failed for good, one per seed."""
    return _rows_without_results(ctx, knobs, trial_id, "error", error=message)


def stopped_rows(ctx: TrialContext, knobs: dict[str, Any], trial_id: str,
                 last_report: dict[str, Any]) -> list[dict[str, Any]]:
    """``status=stopped`` rows of a trial the scheduler ended after ``last_report`` (a
    per-epoch report): one per seed, with the epochs it reached, where and how long the
    trial ran, and no metrics (a stopped trial is never a finished result)."""
    return _rows_without_results(ctx, knobs, trial_id, "stopped", training=ctx.head,
                                 stopped_epochs=epochs_reached(last_report) or {},
                                 placement=json.loads(last_report.get("placement") or "{}"))


def _rows_without_results(ctx: TrialContext, knobs: dict[str, Any], trial_id: str, status: str,
                          *, stopped_epochs: dict[int, int] | None = None,
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
    epochs = stopped_epochs or {}
    return [build_row(ctx.provenance, trial_id=trial_id, method=recipe.name, role="configuration",
                      result=SeedResult(seed=s, best_epoch=0, test={}, val={}), knobs=columns,
                      params=params, status=status,
                      stopped_epoch=epochs.get(s, 0) if status == "stopped" else None, **row)
            for s in ctx.seeds]


def error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception message), redacted."""
    text = ""
    path = getattr(trial, "error_file", None) or ""
    try:
        if path:
            with open(path) as f:
                text = f.read()
    except OSError:
        pass
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return redact(lines[-1].strip())[:500] if lines else "unknown error (see the Ray logs)"
