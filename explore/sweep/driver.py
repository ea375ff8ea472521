"""The sweep driver: prepare cached inputs, run Ray Tune + Optuna, report.

Order of work: validate the config and every knob's range → reach storage → connect
to (or start) Ray → prepare features and the base model (cached) → run the Tuner
(trial rows land as Parquet as trials finish) → record failed trials → print the
summary and, last, ``results: <uri>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from omegaconf import OmegaConf

from explore import __version__
from explore.config import ConfigError, KnobSpace, SweepConfig, sweep_config
from explore.recipes import Recipe, RecipeError, get_recipe
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.store import uri as storage
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


def _init_ray() -> None:
    """Connect to ``RAY_ADDRESS`` when it is set (a Ray job sets it); otherwise start a
    local cluster of our own, whatever address file an earlier ``ray start`` left behind."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("ray: connecting to the running cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    else:
        log.info("ray: starting a local cluster")
        # trial_driver: the resource Train-in-Tune trial drivers hold instead of a CPU.
        ray.init(address="local", resources={"trial_driver": 2}, log_to_driver=False)


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


_RESUME_MAY_CHANGE = ("num_samples", "resume", "storage_uri")


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
    layout, resuming = _sweep_location(cfg)
    store = FeatureStore(layout.storage_uri)  # checks the storage is reachable, first
    lock = None
    if resuming:
        cfg, raw = _resumed_config(cfg, layout, _load_config(layout), overrides)
        from explore.sweep.study import SweepLock

        lock = SweepLock(layout)
        lock.acquire()
    recipe = get_recipe(cfg.method)
    if cfg.mode == "full":
        _check_full_mode(cfg, recipe)
    try:
        _init_ray()
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
            dataset=cfg.dataset if cfg.mode == "full" else None,
            backbone=cfg.backbone if cfg.mode == "full" else None,
        )
        _write_reference_rows(ctx, prepared)
        _run_trials(cfg, ctx, space, num_samples, resuming)
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
                resuming: bool) -> None:
    """Run the sweep's trials with Ray Tune and the Optuna searcher; on a resume, only
    the ones not finished yet."""
    from ray import tune

    from explore.sweep import search
    from explore.sweep.progress import ProgressReporter

    fn = _trial_function(cfg, ctx)
    fs, sweep_path = storage.resolve(ctx.layout.root)
    storage_fs = None if isinstance(fs, pafs.LocalFileSystem) else fs
    journal = StudyJournal(ctx.layout)
    study_storage = search.journal_storage(journal.local_path(fetch=resuming))
    remaining, run_name = num_samples, "tune"
    if resuming:
        # Resume from what is durable: finished trials' Parquet files and the Optuna
        # study. Finished trials are kept and never rerun; the rest run as new trials.
        finished = writer.finished_trials(ctx.layout)
        reconcile_study(study_storage, ctx.layout.sweep_id, finished, list(space), cfg.search.metric)
        remaining = num_samples - len(finished)
        run_name = f"tune-resume-{len(list(_tune_runs(fs, sweep_path)))}"
        log.info("resume %s: %d finished trial(s) kept, %d to run", ctx.layout.sweep_id,
                 len(finished), max(remaining, 0))
    if remaining > 0:
        progress = ProgressReporter(remaining, cfg.search.metric, ctx, on_trial_end=journal.upload)
        tuner = tune.Tuner(
            fn,
            param_space=search.param_space(space),
            tune_config=tune.TuneConfig(
                metric=cfg.search.metric,
                mode=cfg.search.mode,
                # With no swept knob there is nothing to search (Optuna would have no
                # distribution): Tune runs the one configuration by itself.
                search_alg=search.searcher(cfg, space, ctx.layout.sweep_id, study_storage)
                if any(knob.type != "fixed" for knob in space.values()) else None,
                num_samples=remaining,
                max_concurrent_trials=_max_concurrent(cfg),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=sweep_path,
                storage_filesystem=storage_fs,
                failure_config=tune.FailureConfig(max_failures=cfg.runner.max_failures),
                callbacks=[progress],
                verbose=0,
            ),
        )
        tuner.fit()
    journal.upload()


def _check_full_mode(cfg: SweepConfig, recipe: Recipe) -> None:
    """mode=full: the method has a full mode and the data are images."""
    if cfg.features:
        raise ConfigError("mode=full trains the backbone on images: drop features= and give a dataset")
    if not recipe.has_full_mode:
        raise ConfigError(f"mode=full is not available for {recipe.name} (full mode covers "
                          "swrm, dyswrm, neighbor_silencing and lfm); use mode=head")


def _max_concurrent(cfg: SweepConfig) -> int:
    """Full-mode trials each need ``backbone.num_workers`` worker CPUs at once; running more
    trials than the cluster can hold would leave their worker groups waiting."""
    if cfg.mode != "full":
        return cfg.search.max_concurrent_trials
    import ray

    workers = cfg.backbone.num_workers * cfg.runner.cpus_per_trial
    fits = int(ray.cluster_resources().get("CPU", 1) // max(workers, 1e-9))
    return max(1, min(cfg.search.max_concurrent_trials, fits))


def _trial_function(cfg: SweepConfig, ctx: Any) -> Any:
    """The Tune trainable with its resources, per ``mode`` and ``runner.head_placement``."""
    import ray
    from ray import tune

    from explore.sweep.trial import train_job_trainable, trainable

    needs_driver = cfg.mode == "full" or cfg.runner.head_placement == "ray_train"
    if needs_driver and not ray.cluster_resources().get("trial_driver"):
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


def _tune_runs(fs: pafs.FileSystem, sweep_path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(sweep_path, allow_not_found=True))
    return [i.base_name for i in infos if i.base_name.startswith("tune")]
