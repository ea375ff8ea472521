"""Warm trial workers: a sweep's head trials without a Tune run.

A worker is a Ray actor that runs one trial at a time and keeps what it loaded (features,
base logits: :func:`explore.sweep.trial.load_inputs`) for the next trial. The driver
feeds the workers from the Optuna searcher — the one a Tune run uses
(:func:`explore.sweep.tune_search.searcher`), through Tune's searcher interface — and calls the
same trial hooks (:mod:`explore.sweep.hooks`) at each trial's event: the recorder writes,
the view draws. A failed trial is retried ``runner.max_failures`` times, on a new worker
if its worker was lost, as Tune would.

On a running cluster (``RAY_ADDRESS``: ``ray job submit``, a ``ray start`` cluster) the
workers are detached and named, so the next sweep finds them warm: it starts no process
and loads nothing it loaded before. A name holds what makes a worker's results right —
a fingerprint of the code it runs and the packages it trains with — and the resources it
holds; a worker ends itself after ``runner.worker_idle_s`` without a trial, and each
sweep ends the idle workers it cannot use (other code, other resources) so that they
never hold the CPUs/GPUs it needs. A sweep that starts its own cluster uses unnamed
workers, which end with it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import explore
from explore.config import SweepConfig
from explore.sweep.context import HeadTrialContext
from explore.sweep.hooks import TrialHooks, TrialRun
from explore.sweep.plan import SweepPlan

__all__ = ["NAMESPACE", "TrialWorker", "WorkerPool", "code_fingerprint", "release_idle_workers",
           "run_on_workers"]

log = logging.getLogger("explore")

NAMESPACE = "explore-trial-workers"
"""The Ray namespace of detached workers (``ray list actors`` shows them there)."""

_PACKAGES = ("ray", "torch", "numpy", "pyarrow", "pandas", "optuna")


@functools.cache
def code_fingerprint() -> str:
    """A digest of explore's sources, the Python and the packages a trial computes with:
    a worker of other code never serves a sweep."""
    digest = hashlib.sha256(sys.version.encode())
    root = Path(explore.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    for package in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
    return digest.hexdigest()[:12]


class TrialWorker:
    """One warm worker (a threaded Ray actor: one trial at a time, and an idle check that
    can answer while a trial runs)."""

    def __init__(self, idle_s: float) -> None:
        import explore.sweep.trial  # noqa: F401  torch and the recipes, while the driver prepares

        self._trial = threading.Lock()
        self._last_trial = time.monotonic()  # the idle clock starts once the imports are done
        if idle_s > 0:
            threading.Thread(target=self._end_when_idle, args=(idle_s,), daemon=True).start()

    def ready(self) -> str:
        """Answers once the worker has started (its node, for the logs)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def run(self, config: dict[str, Any], ctx: HeadTrialContext, trial_id: str) -> dict[str, Any]:
        """One trial: its final report, as a Tune trial would report it."""
        from explore.sweep.trial import final_result

        with self._trial:
            try:
                return final_result(config, ctx, trial_id)
            finally:
                self._last_trial = time.monotonic()

    def release_if_idle(self) -> None:
        """Ends the worker unless a trial (another sweep's) is running on it."""
        if self._trial.acquire(blocking=False):
            self._end()

    def _end_when_idle(self, idle_s: float) -> None:
        while True:
            time.sleep(min(idle_s, 5.0))
            idle = time.monotonic() - self._last_trial >= idle_s
            if idle and self._trial.acquire(blocking=False):
                self._end()

    @staticmethod
    def _end() -> None:
        import ray

        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


class WorkerPool:
    """The sweep's workers: one per trial that may run at once, each holding a trial's
    CPUs and GPUs. Made right after Ray is reached, so that new workers start (importing
    torch and the recipes) while the driver prepares the features."""

    def __init__(self, cfg: SweepConfig, size: int, *, detached: bool) -> None:
        import ray

        runner = cfg.runner
        self.detached = detached
        self.size = max(1, size)
        self.resources = (runner.cpus_per_trial, runner.gpus_per_trial)
        self._actor = ray.remote(TrialWorker)
        self._options: dict[str, Any] = {"num_cpus": runner.cpus_per_trial,
                                         "num_gpus": runner.gpus_per_trial,
                                         "max_concurrency": 2, "max_restarts": 0}
        self._idle_s = 0.0
        self._prefix = ""
        if detached:
            self._idle_s = runner.worker_idle_s
            self._prefix = (f"trial-worker-{code_fingerprint()}-{runner.cpus_per_trial:g}cpu-"
                            f"{runner.gpus_per_trial:g}gpu-")
            self._options |= {"namespace": NAMESPACE, "lifetime": "detached",
                              "get_if_exists": True}
            release_idle_workers(keep_prefix=self._prefix)
        self.workers = [self._start(slot) for slot in range(self.size)]

    @classmethod
    def for_sweep(cls, cfg: SweepConfig, size: int) -> WorkerPool:
        """Detached workers on a running cluster (``RAY_ADDRESS``, ``worker_idle_s`` > 0),
        else workers that end with this driver."""
        detached = bool(os.environ.get("RAY_ADDRESS")) and cfg.runner.worker_idle_s > 0
        return cls(cfg, size, detached=detached)

    def _start(self, slot: int) -> Any:
        options = dict(self._options)
        if self.detached:
            options["name"] = f"{self._prefix}{slot}"
        return self._actor.options(**options).remote(self._idle_s)

    def replace(self, slot: int) -> None:
        """A new worker in place of a lost one."""
        self.workers[slot] = self._start(slot)

    def close(self) -> None:
        """End the workers that end with the sweep (a detached pool stays warm). Not left
        to Ray's reference counting: a driver that runs several sweeps (a leaderboard, the
        tests) must not hold one sweep's CPUs while the next waits for them."""
        if not self.detached:
            self.stop(range(self.size))

    def stop(self, slots: Iterable[int]) -> None:
        """Kill these workers (their trials are abandoned: an interrupted sweep)."""
        import ray

        for slot in slots:
            with contextlib.suppress(Exception):
                ray.kill(self.workers[slot], no_restart=True)


def release_idle_workers(keep_prefix: str | None = None) -> None:
    """Ask every detached worker whose name does not start with ``keep_prefix`` (other
    code, other resources; None: every worker, for a sweep that runs on none, a Tune run)
    to end if it is idle: a worker busy with another sweep's trial is left alone."""
    import ray
    from ray.util import list_named_actors

    for entry in list_named_actors(all_namespaces=True):
        if entry.get("namespace") != NAMESPACE or (
                keep_prefix is not None and entry["name"].startswith(keep_prefix)):
            continue
        with contextlib.suppress(ValueError):  # ended meanwhile
            ray.get_actor(entry["name"], namespace=NAMESPACE).release_if_idle.remote()


def run_on_workers(pool: WorkerPool, plan: SweepPlan, ctx: HeadTrialContext,
                   hooks: Sequence[TrialHooks], searcher: Any, count: int,
                   interrupted: Callable[[], bool]) -> None:
    """Run ``count`` trials (fewer when a finite space is exhausted): configurations from
    ``searcher`` (a Tune searcher; None: the space's one configuration), trained on the
    pool's workers, each trial's events sent to ``hooks``. Once ``interrupted()``, it
    launches nothing more and abandons the trials running."""
    _WorkerRun(pool, plan, ctx, hooks, searcher, count, interrupted).run()


class _WorkerRun:
    """The loop of :func:`run_on_workers`: idle workers take the next trial (a retry
    first); a worker's answer is a trial's end."""

    POLL_S = 0.5
    """How often the loop looks at the interrupt flag while trials run."""
    START_FAILURES = 3
    """Workers that may fail to start, per slot, before the sweep gives up."""
    START_WARNING_S = 60.0
    """A sweep whose workers have not started after this long says why it waits."""

    def __init__(self, pool: WorkerPool, plan: SweepPlan, ctx: HeadTrialContext,
                 hooks: Sequence[TrialHooks], searcher: Any, count: int,
                 interrupted: Callable[[], bool]) -> None:
        self.pool, self.ctx, self.hooks, self.searcher = pool, ctx, list(hooks), searcher
        self.count, self.interrupted = count, interrupted
        self.fixed = {name: knob.value for name, knob in plan.space.items() if knob.type == "fixed"}
        if searcher is not None:  # what a Tune run tells it at its start
            from explore.sweep.tune_search import param_space

            searcher.set_search_properties(None, None, param_space(plan.space))
        self.max_failures = plan.cfg.runner.max_failures
        self.trials: list[TrialRun] = []
        self.retries: collections.deque[TrialRun] = collections.deque()
        self.failures: dict[str, int] = {}
        self.exhausted = False
        self.prefix = uuid.uuid4().hex[:5]
        self.errors = Path(tempfile.mkdtemp(prefix="explore-trial-errors-"))
        self.iteration = 0
        self.start_failures = 0
        self.started_at = time.monotonic()
        self.waiting_warned = False

    def run(self) -> None:
        import ray

        starting = {w.ready.remote(): slot for slot, w in enumerate(self.pool.workers)}
        running: dict[Any, tuple[int, TrialRun]] = {}
        idle: list[int] = []
        try:
            while True:
                while idle and not self.interrupted():
                    trial = self._next_trial()
                    if trial is None:
                        break
                    slot = idle.pop()
                    running[self.pool.workers[slot].run.remote(trial.config, self.ctx,
                                                               trial.trial_id)] = (slot, trial)
                    trial.status = "RUNNING"
                    self._call("on_trial_start", trial=trial)
                if self.interrupted():
                    self.pool.stop([slot for slot, _ in running.values()])
                    return
                if not running and not self.retries and (self.exhausted or
                                                         not starting and not idle):
                    return
                if not running and idle and not self.retries:
                    log.warning("the searcher proposed no configuration while no trial "
                                "runs; the sweep ends with %d trial(s)", len(self.trials))
                    return
                self._call("on_step_begin")
                self._warn_if_waiting(started=bool(running or idle))
                done, _ = ray.wait([*running, *starting], num_returns=1, timeout=self.POLL_S)
                for ref in done:
                    if ref in starting:
                        slot = starting.pop(ref)
                        if self._started(ref, slot):
                            idle.append(slot)
                        else:
                            starting[self.pool.workers[slot].ready.remote()] = slot
                        continue
                    slot, trial = running.pop(ref)
                    lost = self._ended(ref, trial)
                    if lost:
                        self.pool.replace(slot)
                        starting[self.pool.workers[slot].ready.remote()] = slot
                    else:
                        idle.append(slot)
        finally:
            self._call_end()
            for path in self.errors.iterdir():
                path.unlink()
            self.errors.rmdir()

    def _next_trial(self) -> TrialRun | None:
        if self.retries:
            return self.retries.popleft()
        if self.exhausted or len(self.trials) >= self.count:
            self.exhausted = True
            return None
        trial_id = f"{self.prefix}_{len(self.trials):05d}"
        config = dict(self.fixed)
        if self.searcher is not None:
            suggested = self.searcher.suggest(trial_id)
            if suggested == "FINISHED":  # Searcher.FINISHED: a finite space is exhausted
                self.exhausted = True
                return None
            if suggested is None:
                return None
            config.update(suggested)
        trial = TrialRun(trial_id, config)
        self.trials.append(trial)
        return trial

    def _started(self, ref: Any, slot: int) -> bool:
        import ray

        try:
            ray.get(ref)
            return True
        except ray.exceptions.RayActorError as exc:
            self.start_failures += 1
            first_line = str(exc).strip().splitlines()[0]
            if self.start_failures > self.START_FAILURES * self.pool.size:
                raise RuntimeError(f"trial workers keep failing to start: {first_line}") from exc
            log.warning("trial worker %d could not start (%s); starting another", slot,
                        first_line)
            self.pool.replace(slot)
            return False

    def _warn_if_waiting(self, started: bool) -> None:
        waited = time.monotonic() - self.started_at
        if started or self.waiting_warned or waited < self.START_WARNING_S:
            return
        self.waiting_warned = True
        cpus, gpus = self.pool.resources
        log.warning("no trial worker has started after %.0f s: each needs %g CPU and %g GPU "
                    "free on one node (runner.cpus_per_trial, runner.gpus_per_trial); "
                    "`ray status` shows what the cluster has", waited, cpus, gpus)

    def _ended(self, ref: Any, trial: TrialRun) -> bool:
        """Records the trial's end (or queues its retry); True if its worker was lost."""
        import ray

        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._failed(trial, exc)
            return True
        except ray.exceptions.RayTaskError as exc:
            self._failed(trial, exc)
            return False
        trial.last_result = result
        self._call("on_trial_result", trial=trial, result=result)
        trial.status = "TERMINATED"
        if self.searcher is not None:
            self.searcher.on_trial_complete(trial.trial_id, result=result)
        self._call("on_trial_complete", trial=trial)
        return False

    def _failed(self, trial: TrialRun, exc: BaseException) -> None:
        failures = self.failures[trial.trial_id] = self.failures.get(trial.trial_id, 0) + 1
        if self.max_failures < 0 or failures <= self.max_failures:
            log.warning("trial %s failed (%s); retrying (%d of %s)", trial.trial_id,
                        type(exc).__name__, failures,
                        "∞" if self.max_failures < 0 else self.max_failures)
            self.retries.append(trial)
            return
        trial.error_file = str(self.errors / f"{trial.trial_id}.txt")
        Path(trial.error_file).write_text(str(exc))
        trial.status = "ERROR"
        if self.searcher is not None:
            self.searcher.on_trial_complete(trial.trial_id, error=True)
        self._call("on_trial_error", trial=trial)

    def _call(self, event: str, **kwargs: Any) -> None:
        self.iteration += 1
        for hooks in self.hooks:
            method: Callable[..., None] = getattr(hooks, event)
            method(self.iteration, self.trials, **kwargs)

    def _call_end(self) -> None:
        for hooks in self.hooks:
            hooks.on_experiment_end(self.trials)
