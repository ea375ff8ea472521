"""The sweep's live view: its bar and one line per finished trial (trial hooks).

Drawing only; what a trial's end writes is :class:`explore.sweep.recorder.RowRecorder`'s.
"""

from __future__ import annotations

import math
import time
from typing import Any

from explore.console import Progress, fmt_knobs, fmt_seconds
from explore.sweep.hooks import TrialHooks
from explore.sweep.recorder import error_line
from explore.sweep.reports import STORAGE_ERROR, TRIAL_ERROR, epochs_reached

__all__ = ["ProgressReporter"]


class ProgressReporter(TrialHooks):
    """The sweep's bar (trials done/total, running, best so far on the search metric, time
    left) and one line per finished, failed or stopped trial. Draws only: what a trial's
    end writes is :class:`~explore.sweep.recorder.RowRecorder`'s."""

    def __init__(self, total: int, metric: str, mode: str = "max") -> None:
        self.total, self.metric, self.mode = total, metric, mode
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
        result = trial.last_result or {}
        failure = result.get(STORAGE_ERROR) or result.get(TRIAL_ERROR)
        if failure:
            self._ended(f"trial {trial.trial_id} ({fmt_knobs(trial.config)}) failed: {failure}",
                        important=True)
            return
        epochs = epochs_reached(result)
        if epochs is not None:
            self._ended(f"{fmt_knobs(trial.config)}: stopped early after "
                        f"{sum(epochs.values())} epoch(s) (val top-1 "
                        f"{float(result.get(self.metric, math.nan)):.4f})", important=False)
            return
        value = float(result.get(self.metric, math.nan))
        better = not math.isnan(value) and (
            self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0]))
        if better:
            self.best = (value, dict(trial.config))
        self._count()
        left = self.bar.remaining()
        self._trial_line(
            f"[{self.finished}/{self.total}] {fmt_knobs(trial.config)}: {self.metric} {value:.4f}"
            f"  few {result.get('acc_few', math.nan):.4f}"
            f"  overall {result.get('acc_overall', math.nan):.4f}"
            f"  ({int(result.get('num_seeds', 0))} seeds in "
            f"{result.get('trial_seconds', math.nan):.1f} s, "
            f"{fmt_seconds(time.monotonic() - self.start)} elapsed"
            + (f", ~{fmt_seconds(left)} left" if self.finished < self.total
               and math.isfinite(left) else "") + ")" + ("  best so far" if better else ""),
            important=better)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(f"trial {trial.trial_id} ({fmt_knobs(trial.config)}) failed: "
                    f"{error_line(trial)}", important=True)

    def _ended(self, what: str, *, important: bool) -> None:
        """A trial that ended without results (failed or stopped)."""
        self._count()
        self._trial_line(f"[{self.finished}/{self.total}] {what}", important=important)

    def _count(self) -> None:
        self.finished += 1
        self.running = max(self.running - 1, 0)
        self._note()
        self.bar.set(self.finished)  # plain output: the trial line says it

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._note()
            self._bar.close()
