"""The sweep's Optuna study: persisted, mirrored beside the results, reconciled on resume.

The study lives in an Optuna journal file (a journal needs a local file). On local
storage it sits in the sweep directory; on S3 it is kept under ~/.cache/explore and
copied to ``<sweep>/optuna.journal`` after every trial, so a resume from another
machine continues the same study (and ``optuna-dashboard <journal>`` can open it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from explore.results.layout import SweepLayout
from explore.store import uri as storage
from explore.store.documents import read_bytes, write_bytes

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("explore")


class SweepLock:
    """One resume at a time: ``<sweep>/resume.lock`` (local O_EXCL file or S3 conditional
    PUT), a lease its owner renews every 10 s. It is broken when its owner is a dead
    process on this host, or when it has not been renewed for 2 minutes, wherever its owner
    ran (a lost node, an evicted pod, a reboot); ``resume_force_unlock=true`` breaks it
    whatever its state."""

    FORCE = "resume_force_unlock=true"
    """The override that breaks a lock the user knows to be stale."""

    def __init__(self, layout: SweepLayout) -> None:
        self.layout = layout
        self._held: Any = None

    @property
    def relative_path(self) -> str:
        return f"sweeps/{self.layout.sweep_id}/resume.lock"

    def acquire(self, force: bool = False) -> None:
        from explore.config import ConfigError
        from explore.store import LockHeldError, take_exclusive

        try:
            self._held = take_exclusive(self.layout.storage_uri, self.relative_path,
                                        f"sweep {self.layout.sweep_id}", force=force)
        except LockHeldError as exc:
            where = storage.join(self.layout.root, "resume.lock")
            raise ConfigError(
                f"resume: {exc}; wait for that run to end (or stop it), or, if it no longer "
                f"runs, add {self.FORCE} to break {where}") from None

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None


class StudyJournal:
    def __init__(self, layout: SweepLayout) -> None:
        self.layout = layout
        self.remote = storage.is_s3(layout.storage_uri)
        if self.remote:
            self.path = Path.home() / ".cache" / "explore" / "optuna" / f"{layout.sweep_id}.journal"
        else:
            self.path = Path(storage.resolve(layout.journal)[1])

    def local_path(self, fetch: bool = False) -> str:
        """The journal's local file; on a resume from S3 the mirrored copy is fetched first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.remote and fetch and not self.path.exists():
            try:
                self.path.write_bytes(read_bytes(self.layout.journal, "fetching the study journal"))
            except FileNotFoundError:
                log.warning("resume: no Optuna journal under the sweep; the study restarts empty")
        return str(self.path)

    def upload(self) -> None:
        if not self.remote or not self.path.exists():
            return
        write_bytes(self.layout.journal, self.path.read_bytes(), "uploading the study journal")


def reconcile_study(
    study_storage: optuna.storages.BaseStorage,
    study_name: str,
    finished: pd.DataFrame,
    knobs: list[str],
    metrics: str | list[str],
) -> None:
    """Make the study agree with the results after a hard kill. A trial left RUNNING
    whose configuration has finished rows is told COMPLETE with their mean metric; any
    other RUNNING trial was interrupted: it is marked FAIL and its configuration is
    enqueued, so the resumed sweep runs it first (a grid sampler would otherwise count
    a FAILed configuration as visited and never run it). ``metrics``: the study's
    objectives (two for a Pareto search)."""
    import optuna

    names = [metrics] if isinstance(metrics, str) else list(metrics)
    try:
        study = optuna.load_study(study_name=study_name, storage=study_storage)
    except KeyError:
        return
    unmatched = finished.copy()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        match = unmatched
        for name in knobs:
            if name in trial.params and name in match:
                match = match[match[name].astype(object) == trial.params[name]]
        values = [float(match.iloc[0][n]) if len(match) else math.nan for n in names]
        if len(match):
            unmatched = unmatched[unmatched.trial_id != match.iloc[0].trial_id]
        if any(math.isnan(v) for v in values):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            if not len(match) and trial.params:
                study.enqueue_trial(dict(trial.params))
        else:
            study.tell(trial.number, values if len(values) > 1 else values[0])
    _requeue_failed(study, finished, knobs)


def _requeue_failed(study: optuna.Study, finished: pd.DataFrame, knobs: list[str]) -> None:
    """A configuration whose trial failed for good (status=error rows) runs again on a
    resume — after the user fixed the cause. A grid sampler would otherwise count it as
    visited and never propose it again."""
    import optuna

    def key(params: dict) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in params.items()))

    done = {key({k: row[k] for k in knobs if k in row}) for _, row in finished.iterrows()}
    states = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.COMPLETE)
    done |= {key(t.system_attrs.get("fixed_params") or t.params)
             for t in study.get_trials(deepcopy=False, states=states)}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if trial.user_attrs.get("explore_repeat") or not trial.params:
            continue
        if key(trial.params) not in done:
            study.enqueue_trial(dict(trial.params))
            done.add(key(trial.params))
