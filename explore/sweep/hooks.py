"""Decisions at a trial's events, as hook classes with Ray Tune's callback signatures.

The recorder (:class:`~explore.sweep.recorder.RowRecorder`) and the live view
(:class:`~explore.sweep.progress.ProgressReporter`) are :class:`TrialHooks`. Both trial
runners call them: a Tune run through :func:`as_tune_callback`, the warm workers
(:mod:`explore.sweep.workers`) directly, with a :class:`TrialRun` in place of Tune's
``Trial``. Importing this module imports no part of Ray Tune.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrialHooks", "TrialRun", "as_tune_callback"]


@dataclass
class TrialRun:
    """What a hook reads of a trial (the fields it shares with Tune's ``Trial``)."""

    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    """PENDING, RUNNING, TERMINATED or ERROR, as Tune names them."""
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None
    """A file holding the trial's error (its last line is the message)."""


class TrialHooks:
    """Called at a trial's events; every method does nothing unless overridden."""

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Before each step of the runner's loop (``trials``: every trial, with status)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial starts running."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        """A trial reported ``result`` (per epoch, or its final report)."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial ended with its last report in ``trial.last_result``."""

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial failed for good (its retries used up)."""

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Every trial has ended, or the run was stopped."""


def as_tune_callback(hooks: TrialHooks) -> Any:
    """``hooks`` as a Ray Tune callback (imports Tune)."""
    from ray.tune import Callback

    class _TuneHooks(Callback):  # type: ignore[misc]
        def __init__(self, hooks: TrialHooks) -> None:
            self.hooks = hooks

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            self.hooks.on_step_begin(iteration, trials, **info)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.hooks.on_trial_start(iteration, trials, trial, **info)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            self.hooks.on_trial_result(iteration, trials, trial, result, **info)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.hooks.on_trial_complete(iteration, trials, trial, **info)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.hooks.on_trial_error(iteration, trials, trial, **info)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.hooks.on_experiment_end(trials, **info)

    return _TuneHooks(hooks)
