"""The sweep driver: prepare cached inputs, run Ray Tune + Optuna, report.

Order of work: validate the config and every knob's range → reach storage → connect
to (or start) Ray → prepare features and the base model (cached) → run the Tuner
(trial rows land as Parquet as trials finish) → record failed trials → print the
summary and, last, ``results: <uri>``. With ``dry_run=true`` it stops after the checks
that need no Ray and no training, and prints what would run (:func:`dry_run`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from omegaconf import OmegaConf

from explore import __version__
from explore.config import SWITCHES, ConfigError, KnobSpace, SweepConfig, sweep_config
from explore.recipes import Recipe, RecipeError, get_recipe
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.store import StoragePermanentError
from explore.store import uri as storage
from explore.sweep import scheduling
from explore.sweep.study import StudyJournal, reconcile_study

log = logging.getLogger("explore")


def new_sweep_id(space_name: str) -> str:
    return f"{space_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


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


def checked_space(cfg: SweepConfig, recipe: Recipe, facts: Any) -> dict[str, KnobSpace]:
    """Every knob must be a parameter of the method and valid at both ends of its range,
    before any trial runs. A range reaching past a data-dependent limit (k above the number
    of base classes, W above the number of classes) is capped, with a note; a fixed value
    past it is an error."""
    params0 = recipe.params(cfg.method_settings)
    limits = recipe.limits(facts)
    fields = {f.name for f in dataclasses.fields(params0)}  # type: ignore[arg-type]
    out = {}
    for name, knob in cfg.space.items():
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f" (did you mean space.{close[0]}?)" if close else ""
            raise ConfigError(f"space.{name} is not a parameter of method {recipe.name}{hint}")
        if knob.type == "int" and name in limits and knob.range()[1] > limits[name] >= knob.range()[0]:
            log.warning("space.%s: range %g..%g capped at %d for this dataset", name, knob.low,
                        knob.high, limits[name])
            knob = dataclasses.replace(knob, high=limits[name])
        for value in knob.bounds():
            try:
                recipe.check(recipe.params({**cfg.method_settings, name: value}), facts)
            except ValueError as exc:
                raise ConfigError(f"space.{name}={value!r}: {exc}") from None
        out[name] = knob
    try:
        recipe.check(params0, facts)
    except RecipeError as exc:
        raise ConfigError(str(exc)) from None
    return out


def _init_ray(verbose: bool = False) -> None:
    """Connect to ``RAY_ADDRESS`` when it is set (a Ray job sets it); otherwise start a
    local cluster of our own, whatever address file an earlier ``ray start`` left behind.
    Workers' logs reach the terminal only with ``verbose`` (progress comes through
    explore's own channels)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    with _start_up_chatter_kept(verbose):
        if address:
            log.info("ray: connecting to the running cluster at %s", address)
            ray.init(address=address, log_to_driver=verbose)
        else:
            log.info("ray: starting a local cluster")
            # trial_driver: the resource Train-in-Tune trial drivers hold instead of a CPU.
            context = ray.init(address="local", resources={"trial_driver": 2},
                               log_to_driver=verbose)
            if context.dashboard_url:
                log.info("ray: dashboard at http://%s", context.dashboard_url)


@contextlib.contextmanager
def _start_up_chatter_kept(verbose: bool) -> Iterator[None]:
    """Ray's core writes start-up notes straight to file descriptor 2 (e.g. that it could
    not reach 8.8.8.8 to find its own address); without ``verbose`` they are kept back and
    shown only when the start fails."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                kept.seek(0)
                sys.stderr.write(kept.read().decode(errors="replace"))
                sys.stderr.flush()


def _sweep_location(cfg: SweepConfig) -> tuple[SweepLayout, bool]:
    """(the sweep's layout, resuming)."""
    if not cfg.resume:
        return SweepLayout(cfg.storage_uri, new_sweep_id(cfg.space_name)), False
    ref = cfg.resume.rstrip("/")
    if "/sweeps/" in ref:
        root, sweep_id = ref.rsplit("/sweeps/", 1)
        return SweepLayout(root, sweep_id), True
    return SweepLayout(cfg.storage_uri, ref), True


def _save_config(layout: SweepLayout, raw: dict[str, Any]) -> None:
    fs, path = storage.resolve(layout.config)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(json.dumps(raw, indent=2, sort_keys=True, default=str).encode())
    except OSError as exc:
        raise storage.describe_failure(exc, layout.config, "writing the sweep config") from None


def _load_config(layout: SweepLayout) -> dict[str, Any]:
    fs, path = storage.resolve(layout.config)
    try:
        with fs.open_input_file(path) as f:
            return dict(json.loads(f.read_buffer(f.size()).to_pybytes()))
    except FileNotFoundError:
        raise ConfigError(f"resume: no sweep {layout.sweep_id!r} under {layout.storage_uri} (no "
                          "sweep.json); check the id and storage_uri") from None
    except OSError as exc:
        raise storage.describe_failure(exc, layout.config, "reading the sweep config") from None


_RESUME_MAY_CHANGE = ("num_samples", "resume", "storage_uri", *SWITCHES)


def _resumed_config(cfg: SweepConfig, layout: SweepLayout, stored: dict[str, Any],
                    overrides: list[str]) -> tuple[SweepConfig, dict[str, Any]]:
    """The stored config of the sweep being resumed, checked against this command: the
    space must be the same, ``num_samples`` may grow (the sweep is extended), and any other
    override that differs from the stored value is an error naming it."""
    stored_space = str(stored.get("space_name"))
    if stored_space != cfg.space_name:
        raise ConfigError(f"resume: sweep {layout.sweep_id} is a {stored_space} sweep, not "
                          f"{cfg.space_name}; run `python -m explore.sweep {stored_space} "
                          f"resume={layout.sweep_id}`")
    raw = dict(stored)
    for override in overrides:
        key, _, _ = override.lstrip("+~").partition("=")
        if key.split(".")[0] in _RESUME_MAY_CHANGE:
            continue
        now = OmegaConf.select(OmegaConf.create(_plain(cfg)), key)
        before = OmegaConf.select(OmegaConf.create(stored), key)
        if now != before:
            raise ConfigError(f"resume: {key}={now!r} differs from the sweep's {key}={before!r}; "
                              "a resumed sweep keeps its configuration (only num_samples may grow)")
    if cfg.num_samples != stored.get("num_samples"):
        if cfg.num_samples < int(stored.get("num_samples", 0)):
            raise ConfigError(f"resume: num_samples={cfg.num_samples} is below the sweep's "
                              f"{stored.get('num_samples')}; a resume can only extend a sweep")
        if any(o.partition("=")[0] == "num_samples" for o in overrides):
            log.info("resume: extending %s from %s to %d configurations", layout.sweep_id,
                     stored.get("num_samples"), cfg.num_samples)
            raw["num_samples"] = cfg.num_samples
    raw["storage_uri"] = layout.storage_uri
    raw.pop("resume", None)
    resumed = sweep_config(OmegaConf.create({k: v for k, v in raw.items()
                                             if k not in ("space_name", "sweep_id", "overrides")}),
                           stored_space)
    # This command's switches, not the stored run's.
    resumed = dataclasses.replace(resumed, dry_run=cfg.dry_run, verbose=cfg.verbose,
                                  resume_force_unlock=cfg.resume_force_unlock)
    return resumed, raw


def _plain(cfg: SweepConfig) -> dict[str, Any]:
    """The typed config as plain values (for comparing overrides with a stored config)."""
    out = dataclasses.asdict(cfg)
    out["method"] = {"name": cfg.method, **cfg.method_settings}
    out["base"] = {"name": cfg.base.name, **dataclasses.asdict(cfg.base.settings)}
    return out


def run(cfg: SweepConfig, raw: dict[str, Any], overrides: list[str] | None = None) -> str:
    """Run (or resume) a sweep; returns the URI of its Parquet results."""
    from explore.pipeline import prepare
    from explore.store import FeatureStore
    from explore.sweep.trial import TrialContext

    overrides = list(overrides or [])
    raw = {k: v for k, v in raw.items() if k not in SWITCHES}  # not the sweep's
    layout, resuming = _sweep_location(cfg)
    store = FeatureStore(layout.storage_uri)  # checks the storage is reachable, first
    lock = None
    if resuming:
        cfg, raw = _resumed_config(cfg, layout, _load_config(layout), overrides)
    if cfg.dry_run:
        return dry_run(cfg, layout, resuming, store)
    if resuming:
        from explore.sweep.study import SweepLock

        lock = SweepLock(layout)
        lock.acquire(force=cfg.resume_force_unlock)
    recipe = get_recipe(cfg.method)
    if cfg.mode == "full":
        _check_full_mode(cfg, recipe)
    try:
        _init_ray(cfg.verbose)
        prepared = prepare(cfg, recipe, store)
        space = checked_space(cfg, recipe, prepared.facts)
        if cfg.search.metric.startswith("val_") and not prepared.reference.results[0].val:
            raise ConfigError(
                f"search.metric={cfg.search.metric} needs a validation split, and this data has "
                "none: set dataset.val_per_class (and lower dataset.n_max) or give features with "
                "val.npz")
        num_samples = _count_configurations(cfg, space)
        if not resuming:
            _save_config(layout, {**raw, "space_name": cfg.space_name, "sweep_id": layout.sweep_id,
                                  "overrides": overrides})
        log.info("sweep %s: %s, %d configurations × %d seeds", layout.sweep_id, cfg.space_name,
                 num_samples, cfg.repeats)
        prov = Provenance(
            sweep_id=layout.sweep_id, space=cfg.space_name, mode=cfg.mode,
            dataset=prepared.dataset_name, feature_key=prepared.feature_key,
            thresholds=cfg.splits, code_version=code_version(), base=prepared.reference.name,
            base_key=prepared.base_key,
        )
        ctx = TrialContext(
            layout=layout, provenance=prov, method=cfg.method,
            method_settings=cfg.method_settings, head=cfg.head, seeds=tuple(cfg.seeds),
            mode=cfg.mode, cpus_per_trial=cfg.runner.cpus_per_trial,
            gpus_per_trial=cfg.runner.gpus_per_trial, max_failures=cfg.runner.max_failures,
            gpus_per_worker=cfg.runner.worker_gpus(cfg.backbone.use_gpu),
            dataset=cfg.dataset if cfg.mode == "full" else None,
            backbone=cfg.backbone if cfg.mode == "full" else None,
            report_rungs=scheduling.rungs(cfg),
        )
        _write_reference_rows(ctx, prepared)
        val = [r.val["acc_overall"] for r in prepared.reference.results if "acc_overall" in r.val]
        _run_trials(cfg, ctx, space, num_samples, resuming,
                    float(sum(val) / len(val)) if val else None)
    finally:
        if lock is not None:
            lock.release()
    return _close(layout, cfg)


def _count_configurations(cfg: SweepConfig, space: dict[str, KnobSpace]) -> int:
    from explore.sweep import search

    if all(knob.type == "fixed" for knob in space.values()):
        log.info("every knob is fixed: one configuration")
        return 1
    if cfg.search.sampler == "grid":
        size = search.grid_size(space)
        log.info("grid search: %d configurations", size)
        return size
    return cfg.num_samples


def _finite_size(space: dict[str, KnobSpace]) -> int | None:
    """How many configurations a space without a continuous knob has (None: unbounded)."""
    from explore.sweep import search

    values = search.space_values(space)
    return None if values is None else math.prod(len(v) for v in values.values())


def dry_run(cfg: SweepConfig, layout: SweepLayout, resuming: bool, store: Any) -> str:
    """``dry_run=true``: check the config, the data (or the features to import) and the
    storage, then print what would run — configurations × seeds, where trials would be
    placed, which steps are cached. Starts no Ray, trains nothing, writes nothing.
    Returns the URI the results would have."""
    from explore.pipeline import plan

    recipe = get_recipe(cfg.method)
    if cfg.mode == "full":
        _check_full_mode(cfg, recipe)
    found = plan(cfg, recipe, store)
    space = checked_space(cfg, recipe, found.facts)
    if cfg.search.metric.startswith("val_") and not found.has_val:
        raise ConfigError(
            f"search.metric={cfg.search.metric} needs a validation split, and this data has "
            "none: set dataset.val_per_class (and lower dataset.n_max) or give features with "
            "val.npz")
    num_samples = _count_configurations(cfg, space)
    finite = _finite_size(space)
    finished = 0
    if resuming:
        finished = len(writer.finished_trials(layout))
    to_run = num_samples if finite is None else min(num_samples, finite)
    to_run = max(to_run - finished, 0)
    facts = found.facts
    lines = [f"dry run of {cfg.space_name}: nothing is trained or written", ""]
    lines.append(f"  storage    {_storage_note(layout.storage_uri)}")
    lines.append(f"  data       {found.dataset_name}: {facts.num_classes} classes ("
                 f"{facts.num_base_classes} with >= {cfg.splits.few_below} training samples), "
                 + ", ".join(f"{n} {k}" for k, n in found.samples.items()))
    lines.append(f"  method     {recipe.name} (mode={cfg.mode}), against the reference "
                 f"{found.reference}")
    lines.append("  knobs      " + "; ".join(f"{name} {_range(knob)}" for name, knob in space.items()))
    search_line = (f"{cfg.search.sampler}, objective {cfg.search.objective} "
                   f"({', '.join(cfg.search.metrics)})"
                   if any(k.type != "fixed" for k in space.values()) else "none (every knob pinned)")
    lines.append(f"  search     {search_line}")
    size = f" (the space has {finite})" if finite is not None and finite < num_samples else ""
    lines.append(f"  trials     {to_run} configuration(s){size} × {cfg.repeats} seeds "
                 f"({', '.join(map(str, cfg.seeds))}) = {to_run * cfg.repeats} runs"
                 + (f"; resuming {layout.sweep_id}: {finished} finished trial(s) kept"
                    if resuming else ""))
    lines.append(f"  placement  {scheduling.placement_summary(cfg)}")
    lines.append("  before the first trial (each step cached in the store):")
    for step, cached, what in found.steps:
        lines.append(f"    {step:<10} {'cached   ' if cached else 'would run'}  {what}")
    lines.append(f"  results    {layout.results}" + ("" if resuming else " (a new sweep id each run)"))
    print("\n".join(lines), flush=True)
    return layout.results


def _range(knob: KnobSpace) -> str:
    if knob.type in ("int", "float"):
        low, high = knob.range()
        return f"{knob.type} {low:g}..{high:g}" + (" (log)" if knob.log else "")
    if knob.type == "categorical":
        return " | ".join(str(c) for c in knob.choices)
    return f"= {knob.value} (pinned)"


def _storage_note(uri: str) -> str:
    """Reachable (the store's own check ran already); locally: writable, or creatable."""
    if storage.is_s3(uri):
        return f"{uri}: bucket reachable"
    path = Path(storage.resolve(uri)[1])
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise storage.StorageError(f"storage_uri {uri}: {existing} is not writable")
    return f"{path}: " + ("exists, writable" if path.exists() else
                          f"would be created (under {existing}, writable)")


def _close(layout: SweepLayout, cfg: SweepConfig) -> str:
    """Print the closing summary (the analysis code's); a sweep with no successful trial
    is an error."""
    from explore.analyze import sweep_summary
    from explore.results.reader import read_rows

    read = read_rows([layout.results])
    rows = read.rows
    for problem in read.problems:
        log.warning("%s", problem)
    print()
    print(sweep_summary(rows))
    configurations = rows[rows["role"] == "configuration"] if "role" in rows else rows.iloc[0:0]
    failed = int((configurations["status"] == "error").sum())
    if failed:
        print(f"\n{failed} row(s) of failed trials are recorded with status=error")
    stopped = configurations.loc[configurations["status"] == "stopped", "trial_id"].nunique()
    if stopped:
        print(f"\n{stopped} trial(s) stopped early by the scheduler are recorded with "
              "status=stopped (left out of the comparison)")
    if len(configurations) and not (configurations["status"] == "ok").any():
        raise SweepFailedError(f"no trial of sweep {layout.sweep_id} succeeded ({failed} error "
                               f"rows); see the error column of {layout.results}")
    return layout.results


class SweepFailedError(RuntimeError):
    """Every trial of the sweep failed."""


def _write_reference_rows(ctx: Any, prepared: Any) -> None:
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


def _run_trials(cfg: SweepConfig, ctx: Any, space: dict[str, KnobSpace], num_samples: int,
                resuming: bool, reference_val_overall: float | None = None) -> None:
    """Run the sweep's trials with Ray Tune and the Optuna searcher; on a resume, only
    the ones not finished yet."""
    from ray import tune

    from explore.sweep import search
    from explore.sweep.progress import ProgressReporter

    fn = scheduling.trial_function(cfg, ctx)
    fs, sweep_path = storage.resolve(ctx.layout.root)
    storage_fs = None if isinstance(fs, pafs.LocalFileSystem) else fs
    journal = StudyJournal(ctx.layout)
    study_storage = search.journal_storage(journal.local_path(fetch=resuming))
    log.info("live view: optuna-dashboard %s  (pip install 'explore[dashboard]')", journal.path)
    remaining, run_name = num_samples, "tune"
    if resuming:
        # Resume from what is durable: finished trials' Parquet files and the Optuna
        # study. Finished trials are kept and never rerun; the rest run as new trials.
        finished = writer.finished_trials(ctx.layout)
        reconcile_study(study_storage, ctx.layout.sweep_id, finished, list(space),
                        cfg.search.metrics)
        remaining = num_samples - len(finished)
        run_name = f"tune-resume-{len(list(_tune_runs(fs, sweep_path)))}"
        log.info("resume %s: %d finished trial(s) kept, %d to run", ctx.layout.sweep_id,
                 len(finished), max(remaining, 0))
    if remaining > 0:
        finite = _finite_size(space)
        total = remaining if finite is None else max(min(remaining, finite - (num_samples
                                                                              - remaining)), 1)
        progress = ProgressReporter(total, cfg.search.metric, ctx, on_trial_end=journal.upload,
                                    mode=cfg.search.mode)
        tuner = tune.Tuner(
            fn,
            param_space=search.param_space(space),
            tune_config=tune.TuneConfig(
                # Two objectives (pareto) live in the searcher only: Tune takes one metric.
                metric=None if len(cfg.search.metrics) > 1 else cfg.search.metric,
                mode=None if len(cfg.search.metrics) > 1 else cfg.search.mode,
                # With no swept knob there is nothing to search (Optuna would have no
                # distribution): Tune runs the one configuration by itself.
                search_alg=search.searcher(cfg, space, ctx.layout.sweep_id, study_storage,
                                           reference_val_overall)
                if any(knob.type != "fixed" for knob in space.values()) else None,
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
                storage_filesystem=storage_fs,
                failure_config=tune.FailureConfig(max_failures=cfg.runner.max_failures),
                callbacks=[progress],
                verbose=1 if cfg.verbose else 0,
            ),
        )
        try:
            with _tune_output(cfg.verbose):
                tuner.fit()
        finally:
            progress.close()
        if progress.storage_errors:  # disk full, read-only, forbidden: say it once, exit 2
            raise StoragePermanentError(progress.storage_errors[0])
    journal.upload()


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


def _check_full_mode(cfg: SweepConfig, recipe: Recipe) -> None:
    """mode=full: the method has a full mode and the data are images."""
    if cfg.features:
        raise ConfigError("mode=full trains the backbone on images: drop features= and give a dataset")
    if not recipe.has_full_mode:
        raise ConfigError(f"mode=full is not available for {recipe.name} (full mode covers "
                          "swrm, dyswrm, neighbor_silencing and lfm); use mode=head")
    if cfg.backbone.use_gpu and cfg.runner.gpus_per_worker == 0:
        raise ConfigError("runner.gpus_per_worker=0 gives the Train workers no GPU, but "
                          "backbone.use_gpu=true: raise it (e.g. 1 or 0.5) or set "
                          "backbone.use_gpu=false")


def _tune_runs(fs: pafs.FileSystem, sweep_path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(sweep_path, allow_not_found=True))
    return [i.base_name for i in infos if i.base_name.startswith("tune")]
