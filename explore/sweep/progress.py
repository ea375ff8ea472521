"""What the driver shows and records as trials end (a Tune callback)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune import Callback

from explore.results import writer
from explore.results.layout import SweepLayout
from explore.store.uri import StorageError, redact

log = logging.getLogger("explore")


class ProgressReporter(Callback):
    """One line per finished trial; status=error rows for a trial that failed for good
    (after its retries), so the results say what was attempted; a stale error file
    is removed when a resumed trial later succeeds."""

    def __init__(self, total: int, metric: str, ctx: Any, on_trial_end: Any = None) -> None:
        self.total, self.metric, self.ctx = total, metric, ctx
        self.on_trial_end = on_trial_end or (lambda: None)
        self.finished = 0
        self.start = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        result = trial.last_result or {}
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(trial.config.items()))
        print(
            f"[{self.finished}/{self.total}] {knobs}: {self.metric} {result.get(self.metric, float('nan')):.4f}"
            f"  few {result.get('acc_few', float('nan')):.4f}  overall {result.get('acc_overall', float('nan')):.4f}"
            f"  ({int(result.get('num_seeds', 0))} seeds in {result.get('trial_seconds', float('nan')):.1f} s,"
            f" {time.monotonic() - self.start:.1f} s elapsed)",
            flush=True,
        )
        writer.delete_rows(self.ctx.layout, SweepLayout.error_name(dict(trial.config)))
        self.on_trial_end()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from explore.sweep.trial import error_rows

        self.finished += 1
        message = _error_line(trial)
        print(f"[{self.finished}/{self.total}] trial {trial.trial_id} failed: {message}", flush=True)
        if SweepLayout.trial_name(trial.trial_id) in writer.existing_names(self.ctx.layout):
            return  # its rows were written before the failure (e.g. lost while reporting)
        rows = error_rows(self.ctx, dict(trial.config), trial.trial_id, message)
        try:
            writer.write_rows(self.ctx.layout, SweepLayout.error_name(dict(trial.config)), rows)
        except StorageError as exc:  # the store itself is failing: say so, keep the driver up
            log.error("could not record the failure of trial %s: %s", trial.trial_id, exc)
        self.on_trial_end()


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
