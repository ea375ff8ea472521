"""The sweep's trials: on warm trial workers (:mod:`explore.sweep.workers`) or as one Ray
Tune run (the trainable and its resources, the scheduler), either way searched by Optuna
and with the same trial hooks (the recorder writes, the live view draws). On a resume,
only the configurations not finished yet run."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from explore.results import writer
from explore.store import StoragePermanentError
from explore.store import uri as storage
from explore.sweep import scheduling
from explore.sweep.context import HeadTrialContext, TrialContext
from explore.sweep.hooks import TrialHooks, as_tune_callback
from explore.sweep.plan import SweepPlan
from explore.sweep.study import StudyJournal, reconcile_study
from explore.sweep.workers import WorkerPool, run_on_workers

__all__ = ["SweepInterruptedError", "run_trials"]

log = logging.getLogger("explore")


class SweepInterruptedError(RuntimeError):
    """The sweep was stopped (Ctrl-C, SIGTERM) before its trials ended; what finished is
    kept and ``resume=`` runs the rest."""


def run_trials(plan: SweepPlan, ctx: TrialContext, reference_val_overall: float | None = None,
               pool: WorkerPool | None = None) -> None:
    """Run the sweep's remaining trials: on ``pool``'s warm workers when given
    (:mod:`explore.sweep.workers`), else as one Ray Tune run; either way searched by Optuna,
    each trial's end recorded by the same hooks."""
    from explore.sweep.progress import ProgressReporter
    from explore.sweep.recorder import RowRecorder

    cfg, layout = plan.cfg, ctx.layout
    journal = StudyJournal(layout)
    journal_path = journal.local_path(fetch=plan.resuming)
    log.info("live view: optuna-dashboard %s  (pip install 'explore[dashboard]')", journal.path)
    remaining = plan.num_samples
    if plan.resuming:
        # Resume from what is durable: finished trials' Parquet files and the Optuna
        # study. Finished trials are kept and never rerun; the rest run as new trials.
        from explore.sweep.search import journal_storage

        finished = writer.finished_trials(layout)
        reconcile_study(journal_storage(journal_path), layout.sweep_id, finished,
                        list(plan.space), cfg.search.metrics)
        remaining = plan.num_samples - len(finished)
        log.info("resume %s: %d finished trial(s) kept, %d to run", layout.sweep_id,
                 len(finished), max(remaining, 0))
        if cfg.search.scheduler == "asha" and remaining > 0:
            log.warning("resume with search.scheduler=asha: the scheduler starts without the "
                        "first run's rung history, so the %d trial(s) run now are compared "
                        "with each other only", remaining)
    if remaining <= 0:
        journal.upload()
        return
    recorder = RowRecorder(ctx, on_trial_end=journal.upload)
    progress = ProgressReporter(max(plan.to_run, 1), cfg.search.metric, mode=cfg.search.mode)
    searcher = _searcher(plan, layout.sweep_id, journal_path, reference_val_overall)
    try:
        if pool is not None:
            assert isinstance(ctx, HeadTrialContext)  # scheduling.runs_on_workers
            with _interrupts(stop_tune=False) as interrupts:
                run_on_workers(pool, plan, ctx, [recorder, progress], searcher, remaining,
                               lambda: interrupts.received is not None)
        else:
            tuner = _tuner(plan, ctx, remaining, searcher, [recorder, progress])
            with _tune_output(cfg.verbose), _interrupts(stop_tune=True) as interrupts:
                tuner.fit()
    finally:
        progress.close()
    journal.upload()
    if recorder.storage_errors:  # disk full, read-only, forbidden: say it once, exit 2
        raise StoragePermanentError(recorder.storage_errors[0])
    if interrupts.received:
        raise SweepInterruptedError(f"sweep {layout.sweep_id} was interrupted ({interrupts.received}) "
                                    f"after {recorder.ended} of {plan.to_run} trial(s)")


def _searcher(plan: SweepPlan, study_name: str, journal_path: str,
              reference_val_overall: float | None) -> Any:
    """The Optuna searcher (a Tune searcher, imported only when the sweep searches); None
    with no swept knob: there is nothing to search (Optuna would have no distribution),
    so the one configuration runs by itself."""
    if not plan.searched:
        return None
    from explore.sweep.search import journal_storage
    from explore.sweep.tune_search import searcher

    return searcher(plan.cfg, plan.space, study_name, journal_storage(journal_path),
                    reference_val_overall)


def _tuner(plan: SweepPlan, ctx: TrialContext, remaining: int, searcher: Any,
           hooks: list[TrialHooks]) -> Any:
    """The sweep's trials as one Ray Tune run: the trainable with its resources, the
    searcher, the scheduler, and the hooks as Tune callbacks."""
    from ray import tune

    from explore.sweep import tune_search
    from explore.sweep.ray_env import keep_credentials_out_of_runtime_envs

    keep_credentials_out_of_runtime_envs()
    cfg, layout = plan.cfg, ctx.layout
    fs, sweep_path = storage.resolve(layout.root)
    run_name = f"tune-resume-{len(_tune_runs(fs, sweep_path))}" if plan.resuming else "tune"
    single_metric = len(cfg.search.metrics) == 1
    return tune.Tuner(
        scheduling.trial_function(cfg, ctx),
        param_space=tune_search.param_space(plan.space),
        tune_config=tune.TuneConfig(
            # Two objectives (pareto) live in the searcher only: Tune takes one metric.
            metric=cfg.search.metric if single_metric else None,
            mode=cfg.search.mode if single_metric else None,
            search_alg=searcher,
            num_samples=remaining,
            max_concurrent_trials=scheduling.max_concurrent(cfg),
            scheduler=scheduling.scheduler(cfg),
            # A stopped trial that drives Train runs must take its Train workers with
            # it: they die with the trial actor that owns them, not with a reused one.
            reuse_actors=not (cfg.search.scheduler == "asha" and scheduling.drives_train(cfg)),
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=sweep_path,
            storage_filesystem=None if isinstance(fs, pafs.LocalFileSystem) else fs,
            failure_config=tune.FailureConfig(max_failures=cfg.runner.max_failures),
            # record first: the view may show the row
            callbacks=[as_tune_callback(hook) for hook in hooks],
            verbose=1 if cfg.verbose else 0,
        ),
    )


class _Interrupts:
    """Which signal stopped the sweep (None: none did)."""

    received: str | None = None


@contextlib.contextmanager
def _interrupts(stop_tune: bool) -> Iterator[_Interrupts]:
    """Ctrl-C and SIGTERM (a pod evicted, ``kill``) stop the sweep: finished rows stay, and
    ``resume=`` continues. The warm workers' loop sees the flag; a Tune run is stopped as
    Tune stops (it ends its trials and saves its state): Tune's own SIGINT handler is
    turned off and its SIGUSR1 stop is used instead, so the driver knows the sweep was
    interrupted. A second signal stops at once."""
    seen = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield seen  # signals belong to the main thread
        return

    def stop(signum: int, frame: Any) -> None:
        first = seen.received is None
        seen.received = seen.received or signal.Signals(signum).name
        if not first:
            raise KeyboardInterrupt
        if stop_tune:
            if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
                raise KeyboardInterrupt  # Tune's loop is not running yet
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's stop: it ends the run and saves

    env_before = os.environ.get(_TUNE_SIGINT_ENV)
    os.environ[_TUNE_SIGINT_ENV] = "1"
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if env_before is None:
            os.environ.pop(_TUNE_SIGINT_ENV, None)
        else:
            os.environ[_TUNE_SIGINT_ENV] = env_before


_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


@contextlib.contextmanager
def _tune_output(verbose: bool) -> Iterator[None]:
    """Without ``verbose``, Tune's legacy output engine at verbose=0, which prints nothing:
    no experiment box, no TensorBoard hint at a temporary path (the new engine prints both
    at any verbosity). The variable is read when the run starts, and restored after."""
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


def _tune_runs(fs: pafs.FileSystem, sweep_path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(sweep_path, allow_not_found=True))
    return [i.base_name for i in infos if i.base_name.startswith("tune")]
