"""The sweep's live view: its bar and one line per finished trial (a Tune callback).

Drawing only; what a trial's end writes is :class:`explore.sweep.recorder.RowRecorder`'s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from explore.console import Progress, fmt_knobs, fmt_seconds
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.store.uri import StorageError, redact

__all__ = ["ProgressReporter"]

log = logging.getLogger("explore")


class ProgressReporter(Callback):
    """The sweep's bar (trials done/total, running, best so far on the search metric, time
    left) and one line per finished trial; status=error rows for a trial that failed for
    good (after its retries), so the results say what was attempted; a stale error file
    is removed when a resumed trial later succeeds."""

    def __init__(self, total: int, metric: str, ctx: Any, on_trial_end: Any = None,
                 mode: str = "max") -> None:
        self.storage_errors: list[str] = []
        """Permanent storage failures trials reported (the driver ends the sweep with one)."""
        self.total, self.metric, self.ctx, self.mode = total, metric, ctx, mode
        self.on_trial_end: Callable[[], None] = on_trial_end or (lambda: None)
        self.finished = 0
        self.running = 0
        self.best: tuple[float, dict[str, Any]] | None = None
        self.start = time.monotonic()
        self._bar: Progress | None = None
        self._last_trial_line = -math.inf

    @property
    def bar(self) -> Progress:
        """Made on first use: Tune pickles its callbacks with the experiment state first."""
        if self._bar is None:
            self.start = time.monotonic()
            self._bar = Progress("sweep", self.total, "trial", tick=True)
            self._note()
        return self._bar

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bar": None}  # a bar (a thread, a lock) stays here

    def _note(self, important: bool = False) -> None:
        parts = [f"{self.running} running"]
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4f} ({fmt_knobs(self.best[1])})")
        self.bar.note(" · ".join(parts), important=important)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        running = sum(1 for t in trials if t.status == "RUNNING")
        if running != self.running:
            self.running = running
            self._note()

    def _trial_line(self, line: str, *, important: bool) -> None:
        """Every trial's line in a terminal; elsewhere at most one a second, except the
        ones that matter (a new best, a failure, the last trial)."""
        now = time.monotonic()
        last = self.finished >= self.total
        if self.bar.terminal or important or last or now - self._last_trial_line >= 1:
            self._last_trial_line = now
            self.bar.write(line)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from explore.sweep.trial import STORAGE_ERROR, epochs_reached

        result = trial.last_result or {}
        if result.get(STORAGE_ERROR):  # a permanent storage failure the trial did not retry
            self.storage_errors.append(str(result[STORAGE_ERROR]))
            self._failed(trial, str(result[STORAGE_ERROR]))
            return
        epochs = epochs_reached(result)
        if epochs is not None and not self._has_rows(trial):
            self._stopped(trial, result, epochs)
            return
        self.finished += 1
        self.running = max(self.running - 1, 0)
        value = float(result.get(self.metric, math.nan))
        better = not math.isnan(value) and (
            self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0]))
        if better:
            self.best = (value, dict(trial.config))
        knobs = fmt_knobs(trial.config)
        self._advance()
        left = self.bar.remaining()
        self._trial_line(
            f"[{self.finished}/{self.total}] {knobs}: {self.metric} {value:.4f}"
            f"  few {result.get('acc_few', math.nan):.4f}"
            f"  overall {result.get('acc_overall', math.nan):.4f}"
            f"  ({int(result.get('num_seeds', 0))} seeds in "
            f"{result.get('trial_seconds', math.nan):.1f} s, "
            f"{fmt_seconds(time.monotonic() - self.start)} elapsed"
            + (f", ~{fmt_seconds(left)} left" if self.finished < self.total
               and math.isfinite(left) else "") + ")" + ("  best so far" if better else ""),
            important=better)
        writer.delete_rows(self.ctx.layout, SweepLayout.error_name(dict(trial.config)))
        self.on_trial_end()

    def _has_rows(self, trial: Any) -> bool:
        return SweepLayout.trial_name(trial.trial_id) in writer.existing_names(self.ctx.layout)

    def _stopped(self, trial: Any, result: dict[str, Any], epochs: dict[int, int]) -> None:
        """A trial the scheduler stopped: its line, and status=stopped rows with the epochs
        each seed reached (never results: the analysis leaves them out)."""
        from explore.sweep.trial import stopped_rows

        self._ended_without_results(
            trial, f"{fmt_knobs(trial.config)}: stopped early after "
                   f"{sum(epochs.values())} epoch(s) "
                   f"(val top-1 {float(result.get(self.metric, math.nan)):.4f})",
            important=False, name=SweepLayout.trial_name(trial.trial_id),
            rows=lambda: stopped_rows(self.ctx, dict(trial.config), trial.trial_id, result))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, _error_line(trial))

    def _failed(self, trial: Any, message: str) -> None:
        """A trial that failed for good: its line, and status=error rows (if the store takes
        them)."""
        from explore.sweep.trial import error_rows

        self._ended_without_results(
            trial, f"trial {trial.trial_id} ({fmt_knobs(trial.config)}) failed: {message}",
            important=True, name=SweepLayout.error_name(dict(trial.config)),
            # rows written before the failure (e.g. lost while reporting) are kept
            rows=lambda: [] if self._has_rows(trial) else error_rows(
                self.ctx, dict(trial.config), trial.trial_id, message))

    def _ended_without_results(self, trial: Any, what: str, *, important: bool, name: str,
                               rows: Callable[[], list[dict[str, Any]]]) -> None:
        """Count a trial that ended without results, print its line, write its ``rows``
        (none: nothing to write) as ``name`` — the store failing is logged, the driver
        stays up."""
        self.finished += 1
        self.running = max(self.running - 1, 0)
        self._advance()
        self._trial_line(f"[{self.finished}/{self.total}] {what}", important=important)
        try:
            built = rows()
            if built:
                writer.write_rows(self.ctx.layout, name, built)
        except StorageError as exc:
            log.error("could not record trial %s: %s", trial.trial_id, exc)
        self.on_trial_end()

    def _advance(self) -> None:
        self._note()
        self.bar.set(self.finished)  # plain output: the trial line already says it

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._note()
            self._bar.close()


def _error_line(trial: Any) -> str:
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
