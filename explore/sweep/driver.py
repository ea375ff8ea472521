"""The sweep driver: one sweep, start to end.

Order of work: validate the config → reach storage → (a resume: the stored config, checked)
→ connect to (or start) Ray → prepare features and the base model (cached) → the sweep
plan (checked space, counts) → the reference rows → the trials (Ray Tune + Optuna; each
trial's rows land as Parquet as it ends) → the summary and, last, ``results: <uri>``. With
``dry_run=true`` it stops after the checks that need no Ray and no training, and prints
the same plan (:mod:`explore.sweep.plan`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explore import __version__
from explore.config import SWITCHES, SweepConfig
from explore.recipes import get_recipe
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.sweep import phases, resume, scheduling
from explore.sweep.context import FullTrialContext, HeadTrialContext, TrialContext
from explore.sweep.plan import DataSummary, SweepPlan, check_mode, plan_sweep

if TYPE_CHECKING:
    from explore.pipeline import Prepared

__all__ = ["SweepFailedError", "close", "code_version", "run", "trial_context"]

log = logging.getLogger("explore")


class SweepFailedError(RuntimeError):
    """Every trial of the sweep failed."""


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def run(cfg: SweepConfig, raw: dict[str, Any], overrides: list[str] | None = None, *,
        sweep_id: str | None = None, row_columns: dict[str, Any] | None = None,
        summary: bool = True) -> str:
    """Run (or resume) a sweep, or with ``dry_run`` print its plan; returns the URI of its
    Parquet results. For a caller that runs sweeps as parts (a leaderboard): ``sweep_id``
    the id a new sweep takes, ``row_columns`` extra columns on every row, ``summary=False``
    no closing summary printed (the failure checks still run)."""
    from explore.pipeline import plan, prepare
    from explore.store import FeatureStore
    from explore.sweep.cluster import init_ray
    from explore.sweep.tuning import SweepInterruptedError, run_trials
    from explore.sweep.workers import WorkerPool, release_idle_workers

    overrides = list(overrides or [])
    raw = {k: v for k, v in raw.items() if k not in SWITCHES}  # not the sweep's
    layout, resuming = resume.locate(cfg, sweep_id)
    store = FeatureStore(layout.storage_uri)  # checks the storage is reachable, first
    stored: dict[str, Any] = {}
    if resuming:
        stored = resume.load_config(layout)
        cfg, raw = resume.resumed_config(cfg, layout, stored, overrides)
    recipe = get_recipe(cfg.method)
    if cfg.dry_run:
        found = plan(cfg, recipe, store)
        print(plan_sweep(cfg, recipe, layout, resuming, DataSummary(
            found.dataset_name, found.facts, found.has_val, found.reference, found.samples,
            tuple(found.steps))).render(), flush=True)
        return layout.results
    check_mode(cfg, recipe)  # before Ray starts
    on_workers = scheduling.runs_on_workers(cfg)
    with resume.locked(layout, resuming, force=cfg.resume_force_unlock), \
            contextlib.ExitStack() as cleanup:
        _prefetch_imports(SUMMARY_MODULES)
        init_ray(cfg.verbose, dashboard=not on_workers)  # Tune and Train runs need it
        pool = None
        if on_workers:
            # Workers start (import torch, the recipes) while the driver prepares the inputs.
            pool = WorkerPool.for_sweep(cfg, _trials_at_once(cfg))
            cleanup.callback(pool.close)
        elif os.environ.get("RAY_ADDRESS"):
            release_idle_workers()  # a Tune run uses none: their CPUs/GPUs are its to take
        phases.mark("ray")
        prepared = prepare(cfg, recipe, store)
        reference = prepared.reference
        sweep = plan_sweep(cfg, recipe, layout, resuming, DataSummary(
            prepared.dataset_name, prepared.facts, bool(reference.results[0].val), reference.name))
        inputs = {"feature_key": prepared.feature_key, "base_key": prepared.base_key,
                  "reference_keys": list(reference.keys)}
        if resuming:
            resume.check_same_inputs(layout, stored, inputs)
        else:
            resume.save_config(layout, {**raw, "space_name": cfg.space_name,
                                        "sweep_id": layout.sweep_id, "overrides": overrides,
                                        "inputs": inputs})
        log.info("sweep %s: %s, %d configurations × %d seeds", layout.sweep_id, cfg.space_name,
                 sweep.num_samples, cfg.repeats)
        prov = Provenance(
            sweep_id=layout.sweep_id, space=cfg.space_name, mode=cfg.mode,
            dataset=prepared.dataset_name, feature_key=prepared.feature_key,
            thresholds=cfg.splits, code_version=code_version(), base=reference.name,
            base_key=prepared.base_key, columns=tuple((row_columns or {}).items()),
        )
        ctx = trial_context(sweep, prov)
        _write_reference_rows(ctx, prepared)
        phases.mark("prepare")
        val = [r.val["acc_overall"] for r in reference.results if "acc_overall" in r.val]
        try:
            run_trials(sweep, ctx, float(sum(val) / len(val)) if val else None, pool)
            phases.mark("trials")
        except SweepInterruptedError:
            close(layout, incomplete=True, summary=summary)
            raise
    return close(layout, summary=summary)


SUMMARY_MODULES = ("explore.analyze", "explore.results.reader", "scipy.special")
"""What the closing summary imports (~0.5 s): imported in the background while the driver
waits on Ray (its start, the trials)."""


def _prefetch_imports(modules: tuple[str, ...]) -> None:
    """Import ``modules`` in a daemon thread. The driver mostly waits on Ray (``ray.init``,
    ``ray.wait``), which releases the GIL; Python's import locks make a later ``import``
    of the same module wait for this one rather than run twice."""
    def load() -> None:
        for name in modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)

    threading.Thread(target=load, name="explore-prefetch", daemon=True).start()


def _trials_at_once(cfg: SweepConfig) -> int:
    """Trials that may run at once: ``search.max_concurrent_trials``, and one for a space
    with every knob pinned (it is one configuration)."""
    pinned = all(knob.type == "fixed" for knob in cfg.space.values())
    return 1 if pinned else scheduling.max_concurrent(cfg)


def trial_context(sweep: SweepPlan, provenance: Provenance) -> TrialContext:
    """What every trial of the sweep shares, typed by mode."""
    cfg = sweep.cfg
    shared: dict[str, Any] = dict(
        layout=sweep.layout, provenance=provenance, method=cfg.method,
        method_settings=cfg.method_settings, head=cfg.head, seeds=tuple(cfg.seeds),
        cpus_per_trial=cfg.runner.cpus_per_trial, gpus_per_trial=cfg.runner.gpus_per_trial,
        max_failures=cfg.runner.max_failures, report_rungs=scheduling.rungs(cfg))
    if cfg.mode == "full":
        assert cfg.dataset is not None  # check_mode: full mode trains on a dataset's images
        return FullTrialContext(**shared, dataset=cfg.dataset, backbone=cfg.backbone,
                                gpus_per_worker=cfg.runner.worker_gpus(cfg.backbone.use_gpu))
    return HeadTrialContext(**shared)


def _write_reference_rows(ctx: TrialContext, prepared: Prepared) -> None:
    """The reference model's rows, one per seed, once per sweep (a resume keeps them).
    It is a head on the CE backbone's cached features, in either mode."""
    reference = prepared.reference
    name = SweepLayout.base_name(reference.name)
    if name in writer.existing_names(ctx.layout):
        return
    rows = []
    for result, key in zip(reference.results, reference.keys, strict=True):
        prov = dataclasses.replace(ctx.provenance, mode="head", base_key=key)
        rows.append(build_row(prov, trial_id=name, method=reference.name, role="reference",
                              result=result, knobs={}, training=ctx.head,
                              deterministic=reference.deterministic))
    writer.write_rows(ctx.layout, name, rows)


def close(layout: SweepLayout, *, incomplete: bool = False, summary: bool = True) -> str:
    """Print the closing summary (the analysis code's; not with ``summary=False``); a sweep
    with no successful trial is an error. ``incomplete``: the sweep was interrupted, and
    the summary says so."""
    from explore.analyze import sweep_summary
    from explore.results.reader import read_rows

    read = read_rows([layout.results])
    rows = read.rows
    for problem in read.problems:
        log.warning("%s", problem)
    configurations = rows[rows["role"] == "configuration"] if "role" in rows else rows.iloc[0:0]
    failed = int((configurations["status"] == "error").sum())
    stopped = configurations.loc[configurations["status"] == "stopped", "trial_id"].nunique()
    if summary:
        print()
        if incomplete:
            print(f"INCOMPLETE: sweep {layout.sweep_id} was interrupted; what finished is "
                  f"below, and `resume={layout.sweep_id}` runs the rest\n")
        print(sweep_summary(rows))
    if summary and failed:
        print(f"\n{failed} row(s) of failed trials are recorded with status=error")
    if summary and stopped:
        print(f"\n{stopped} trial(s) stopped early by the scheduler are recorded with "
              "status=stopped (left out of the comparison)")
    if not incomplete and len(configurations) and not (configurations["status"] == "ok").any():
        raise SweepFailedError(f"no trial of sweep {layout.sweep_id} succeeded ({failed} error "
                               f"rows); see the error column of {layout.results}")
    return layout.results
