"""What each trial asks of the cluster and when Tune stops it: the trainable with its
resources (per ``mode`` and ``runner.head_placement``), how many trials run at once, and
the early-stopping scheduler with the rungs where head trials report."""

from __future__ import annotations

import logging
import os
from typing import Any

from explore.config import ConfigError, SweepConfig
from explore.recipes import get_recipe
from explore.sweep.context import TrialContext

__all__ = ["drives_train", "max_concurrent", "max_concurrent_guess", "placement_summary",
           "rungs", "runs_on_workers", "scheduler", "trial_function", "trials_that_fit"]

log = logging.getLogger("explore")


def drives_train(cfg: SweepConfig) -> bool:
    """Whether a trial drives Ray Train runs (and holds only ``trial_driver``)."""
    return cfg.mode == "full" or cfg.runner.head_placement == "ray_train"


def runs_on_workers(cfg: SweepConfig) -> bool:
    """Whether warm trial workers run the sweep (``runner.trial_runner``): head trials in
    their own process, trained to the end. Early stopping (ASHA), Train-driving trials
    (``mode=full``, ``head_placement=ray_train``) are Tune's."""
    needs_tune = [what for what, needed in (
        ("search.scheduler=asha", cfg.search.scheduler == "asha"),
        ("mode=full", cfg.mode == "full"),
        ("runner.head_placement=ray_train", cfg.runner.head_placement == "ray_train"))
        if needed]
    if cfg.runner.trial_runner == "workers" and needs_tune:
        raise ConfigError(f"runner.trial_runner=workers cannot run a sweep with "
                          f"{' and '.join(needs_tune)}: that needs a Tune run "
                          "(runner.trial_runner=tune or auto)")
    return cfg.runner.trial_runner != "tune" and not needs_tune


def trial_function(cfg: SweepConfig, ctx: TrialContext) -> Any:
    """The Tune trainable with its resources, per ``mode`` and ``runner.head_placement``."""
    import ray
    from ray import tune

    from explore.sweep.trial import train_job_trainable, trainable

    if drives_train(cfg) and not ray.cluster_resources().get("trial_driver"):
        what = "mode=full" if cfg.mode == "full" else "runner.head_placement=ray_train"
        raise ConfigError(f"{what} needs the custom resource 'trial_driver' on the cluster (see "
                          "cluster/*.yaml: resources: {trial_driver: N} on the head)")
    if cfg.mode == "full":
        # The trial drives Train runs and holds no CPU: the workers hold them
        # (docs/operations.md#the-trial_driver-resource).
        return tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"trial_driver": 1})
    if cfg.runner.head_placement == "in_trial":
        resources = {"cpu": cfg.runner.cpus_per_trial, "gpu": cfg.runner.gpus_per_trial}
        return tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources)
    return tune.with_resources(tune.with_parameters(train_job_trainable, ctx=ctx),
                               {"trial_driver": 1})


def max_concurrent(cfg: SweepConfig) -> int:
    """Full-mode trials each need ``backbone.num_workers`` workers' CPUs and GPUs at once;
    running more trials than the cluster can hold would leave their worker groups waiting.
    (Head trials hold their own CPU/GPU: Tune queues what does not fit.)"""
    if cfg.mode != "full":
        return cfg.search.max_concurrent_trials
    import ray

    return trials_that_fit(cfg, ray.cluster_resources())


def trials_that_fit(cfg: SweepConfig, resources: dict[str, float]) -> int:
    """How many full-mode trials' worker groups fit in ``resources`` at once (at least 1,
    at most ``search.max_concurrent_trials``): the smaller of the CPU and the GPU count."""
    workers = cfg.backbone.num_workers
    fits = int(resources.get("CPU", 1) // max(workers * cfg.runner.cpus_per_trial, 1e-9))
    gpus = cfg.runner.worker_gpus(cfg.backbone.use_gpu)
    if gpus > 0:
        # a small epsilon: 4 workers × 0.25 GPU fit in 1 GPU despite float rounding
        fits = min(fits, int(resources.get("GPU", 0) / (workers * gpus) + 1e-9))
    return max(1, min(cfg.search.max_concurrent_trials, fits))


def max_concurrent_guess(cfg: SweepConfig) -> int:
    """:func:`max_concurrent` without asking Ray (full mode: this machine's CPUs, and its
    CUDA devices when the workers request GPUs)."""
    if cfg.mode != "full":
        return cfg.search.max_concurrent_trials
    gpus = 0.0
    if cfg.runner.worker_gpus(cfg.backbone.use_gpu) > 0:
        import torch

        gpus = float(torch.cuda.device_count())
    return trials_that_fit(cfg, {"CPU": float(os.cpu_count() or 1), "GPU": gpus})


def placement_summary(cfg: SweepConfig) -> str:
    address = os.environ.get("RAY_ADDRESS")
    cluster = (f"the running Ray cluster at {address}" if address else
               f"a local Ray cluster started by this command ({os.cpu_count()} CPUs here)")
    if cfg.mode == "full":
        where = (f"each trial trains the backbone with the method as a Ray Train job, "
                 f"{cfg.backbone.num_workers} worker(s) per seed, each {cfg.runner.cpus_per_trial:g}"
                 f" CPU, {cfg.runner.worker_gpus(cfg.backbone.use_gpu):g} GPU (the trial holds "
                 "'trial_driver')")
    elif cfg.runner.head_placement == "ray_train":
        where = "each trial runs a one-worker Ray Train job (the trial holds 'trial_driver')"
    elif runs_on_workers(cfg):
        kept = (f"kept warm {cfg.runner.worker_idle_s:g} s after the sweep for the next one"
                if address and cfg.runner.worker_idle_s > 0 else "ended with the sweep")
        where = (f"each trial trains its seeds on a warm trial worker ({cfg.runner.cpus_per_trial:g}"
                 f" CPU, {cfg.runner.gpus_per_trial:g} GPU; {kept})")
    else:
        where = (f"each trial trains its seeds inside its Tune trial ({cfg.runner.cpus_per_trial:g}"
                 f" CPU, {cfg.runner.gpus_per_trial:g} GPU)")
    return (f"{cluster};\n             {where}; at most {max_concurrent_guess(cfg)} trial(s) "
            "at a time")


_MAX_T = 2**31
"""ASHA's max_t, out of reach: trials end by themselves (at max_t ASHA would stop a trial
before its final report)."""


def rungs(cfg: SweepConfig) -> tuple[float, ...]:
    """ASHA's rungs a trial can reach (epochs over its seeds), where head trials report;
    none without ASHA."""
    if cfg.search.scheduler != "asha":
        return ()
    epochs = (cfg.backbone.epochs if cfg.mode == "full" else cfg.head.epochs) * len(cfg.seeds)
    rungs, k = [], 0
    while cfg.search.grace_period * cfg.search.reduction_factor ** k < epochs:
        rungs.append(cfg.search.grace_period * cfg.search.reduction_factor ** k)
        k += 1
    return tuple(rungs)


def scheduler(cfg: SweepConfig) -> Any:
    """FIFO (Tune's default) or ASHA on the per-epoch validation top-1, its time the epochs
    a trial has trained over its seeds (the trial's final report has no such count, so
    the scheduler never compares it with an epoch's)."""
    if cfg.search.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    from explore.sweep.reports import EPOCHS_TRAINED

    if get_recipe(cfg.method).posthoc:
        log.warning("search.scheduler=asha: %s trials report once, at their end, so none is "
                    "stopped early", cfg.method)
    return ASHAScheduler(time_attr=EPOCHS_TRAINED, max_t=_MAX_T,
                         grace_period=cfg.search.grace_period,
                         reduction_factor=cfg.search.reduction_factor)
