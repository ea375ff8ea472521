"""The sweep driver: prepare cached inputs, run Ray Tune + Optuna, report.

Order of work: validate the config and every knob's range → reach storage → connect
to (or start) Ray → prepare features and the base model (cached) → run the Tuner
(trial rows land as Parquet as trials finish) → record failed trials → print the
summary and, last, ``results: <uri>``.
"""

from __future__ import annotations

import dataclasses
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
from explore.results import writer
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


def checked_space(cfg: SweepConfig, method: Any, facts: Any) -> dict[str, KnobSpace]:
    """Every knob must be a parameter of the method and valid at both ends of its
    range, before any trial runs. A range reaching past a data-dependent limit (k above
    the number of base classes, W above the number of classes) is capped, with a note;
    a fixed value past it is an error."""
    params0 = method.make_params(cfg.method_settings())
    limits = method.limits(facts)
    out = {}
    for name, knob in cfg.space.items():
        if name not in {f.name for f in dataclasses.fields(params0)}:
            raise ConfigError(f"space.{name} is not a parameter of method {method.name}")
        if knob.type == "int" and name in limits and knob.high > limits[name] >= knob.low:
            log.warning("space.%s: range %g..%g capped at %d for this dataset", name, knob.low, knob.high, limits[name])
            knob = dataclasses.replace(knob, high=limits[name])
        for value in knob.bounds():
            try:
                params = dataclasses.replace(params0, **{name: value})
                method.check(params, facts)
            except ValueError as exc:
                raise ConfigError(f"space.{name}={value!r}: {exc}") from None
        out[name] = knob
    method.check(params0, facts)
    return out


def _init_ray(cfg: SweepConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        log.info("ray: connecting to the running cluster at %s", os.environ["RAY_ADDRESS"])
        ray.init(log_to_driver=False)
    else:
        log.info("ray: starting a local cluster")
        # trial_driver: the resource Train-in-Tune trial drivers hold instead of a CPU.
        ray.init(resources={"trial_driver": 2}, log_to_driver=False)


def _sweep_location(cfg: SweepConfig) -> tuple[str, str, bool]:
    """(storage_uri, sweep_id, resuming)."""
    if not cfg.resume:
        return cfg.storage_uri, new_sweep_id(cfg.space_name), False
    ref = cfg.resume.rstrip("/")
    if "/sweeps/" in ref:
        root, sweep_id = ref.rsplit("/sweeps/", 1)
        return root, sweep_id, True
    return cfg.storage_uri, ref, True


def _save_config(storage_uri: str, sweep_id: str, raw: dict[str, Any]) -> None:
    fs, path = storage.resolve(writer.sweep_uri(storage_uri, sweep_id))
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/sweep.json") as f:
        f.write(json.dumps(raw, indent=2, sort_keys=True, default=str).encode())


def _load_config(storage_uri: str, sweep_id: str) -> dict[str, Any]:
    fs, path = storage.resolve(writer.sweep_uri(storage_uri, sweep_id))
    try:
        with fs.open_input_file(f"{path}/sweep.json") as f:
            return json.loads(f.read_buffer(f.size()).to_pybytes())
    except FileNotFoundError:
        raise ConfigError(
            f"resume: no sweep {sweep_id!r} under {storage_uri} (no sweep.json); check the id and storage_uri"
        ) from None


def run(cfg: SweepConfig, raw: dict[str, Any]) -> str:
    """Run (or resume) a sweep; returns the URI of its Parquet results."""
    from explore.pipeline import prepare
    from explore.store.feature_store import FeatureStore
    from explore.sweep import search
    from explore.sweep.summary import configuration_table, format_table
    from explore.sweep.trial import TrialContext
    from explore.training.registry import get_method

    storage_uri, sweep_id, resuming = _sweep_location(cfg)
    if resuming:
        raw = _load_config(storage_uri, sweep_id)
        raw["storage_uri"] = storage_uri
        cfg = sweep_config(OmegaConf.create(raw), str(raw.get("space_name", cfg.space_name)))
    method = get_method(cfg.method_name)
    method.make_params(cfg.method_settings())  # fail on bad settings before touching anything
    store = FeatureStore(storage_uri)  # checks the storage is reachable
    full_settings = _check_full_mode(cfg, method)
    _init_ray(cfg)
    prepared = prepare(cfg, method, store)
    space = checked_space(cfg, method, prepared.facts)
    if cfg.search.metric.startswith("val_") and prepared.base_result is not None and not prepared.base_result.val:
        raise ConfigError(
            f"search.metric={cfg.search.metric} needs a validation split, and this data has none: "
            "set dataset.val_per_class (and lower dataset.n_max) or give features with val.npz"
        )
    num_samples = cfg.num_samples
    if all(knob.type == "fixed" for knob in space.values()):
        num_samples = 1
        log.info("every knob is fixed: one configuration")
    elif cfg.search.sampler == "grid":
        num_samples = search.grid_size(space)
        log.info("grid search: %d configurations", num_samples)
    if not resuming:
        _save_config(storage_uri, sweep_id, {**raw, "space_name": cfg.space_name, "sweep_id": sweep_id})
    log.info("sweep %s: %s, %d configurations × %d seeds", sweep_id, cfg.space_name, num_samples, cfg.repeats)

    ctx = TrialContext(
        sweep_id=sweep_id,
        space_name=cfg.space_name,
        storage_uri=storage_uri,
        feature_key=prepared.feature_key,
        dataset_name=prepared.dataset_name,
        method_name=cfg.method_name,
        method_settings=cfg.method_settings(),
        seeds=tuple(cfg.seeds),
        thresholds=cfg.splits,
        mode=cfg.mode,
        base_name=prepared.base_name,
        base_key=prepared.base_key,
        code_version=code_version(),
        cpus_per_trial=cfg.runner.cpus_per_trial,
        gpus_per_trial=cfg.runner.gpus_per_trial,
        max_failures=cfg.runner.max_failures,
        dataset=dict(cfg.dataset) if cfg.mode == "full" else {},
        backbone=dict(cfg.backbone) if cfg.mode == "full" else {},
        full=full_settings,
    )
    _write_base_row(ctx, prepared)
    _run_trials(cfg, ctx, space, num_samples, resuming)

    uri = writer.results_uri(storage_uri, sweep_id)
    rows = writer.read_results(uri)
    print()
    print(format_table(configuration_table(rows, cfg.search.metric)))
    errors = int((rows["status"] != "ok").sum())
    if errors:
        print(f"\n{errors} row(s) of failed trials are recorded with status=error")
    return uri



def _write_base_row(ctx: Any, prepared: Any) -> None:
    """The base/reference model's row, once per sweep (a resume keeps the existing one).
    It is a head on the CE backbone's cached features, in either mode."""
    from explore.sweep.trial import result_row

    name = f"base-{prepared.base_name}"
    if prepared.base_result is None or name in writer.existing_names(ctx.storage_uri, ctx.sweep_id):
        return
    base_ctx = dataclasses.replace(ctx, method_name=str(prepared.base_name), mode="head")
    row = result_row(base_ctx, name, str(prepared.base_name), None, None, prepared.base_result)
    writer.write_rows(ctx.storage_uri, ctx.sweep_id, name, [row])

def _run_trials(cfg: SweepConfig, ctx: Any, space: dict[str, KnobSpace], num_samples: int, resuming: bool) -> None:
    """Run the sweep's trials with Ray Tune and the Optuna searcher; on a resume, only
    the ones not finished yet."""
    from ray import tune

    from explore.sweep import search
    from explore.sweep.progress import ProgressReporter

    fn = _trial_function(cfg, ctx)
    fs, sweep_path = storage.resolve(writer.sweep_uri(ctx.storage_uri, ctx.sweep_id))
    storage_fs = None if isinstance(fs, pafs.LocalFileSystem) else fs
    journal = StudyJournal(ctx.storage_uri, ctx.sweep_id)
    study_storage = search.journal_storage(journal.local_path(fetch=resuming))
    remaining, run_name = num_samples, "tune"
    if resuming:
        # Resume from what is durable: finished trials' Parquet files and the Optuna
        # study. Finished trials are kept and never rerun; the rest run as new trials.
        finished = writer.finished_trials(ctx.storage_uri, ctx.sweep_id)
        reconcile_study(study_storage, ctx.sweep_id, finished, list(space), cfg.search.metric)
        remaining = num_samples - len(finished)
        run_name = f"tune-resume-{len(list(_tune_runs(fs, sweep_path)))}"
        log.info("resume %s: %d finished trial(s) kept, %d to run", ctx.sweep_id, len(finished), max(remaining, 0))
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
                search_alg=search.searcher(cfg, space, ctx.sweep_id, study_storage)
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


def _check_full_mode(cfg: SweepConfig, method: Any) -> dict[str, Any]:
    """mode=full: the method has a full-mode recipe, the data are images, and the ``full``
    settings (a ``full:`` block of the config, e.g. ``+full.drw_start=5``) are valid.
    Returns those settings ({} in head mode)."""
    if cfg.mode != "full":
        return {}
    from explore.pipeline import backbone_train_config
    from explore.training.full import FullModeConfig, FullModeError, full_method_kind

    if cfg.features:
        raise ConfigError("mode=full trains the backbone on images: drop features= and give a dataset")
    settings = dict(cfg.full)
    try:
        full_method_kind(method.make_params(cfg.method_settings()))
        FullModeConfig.from_mapping(settings).method_start(backbone_train_config(cfg.backbone).epochs)
    except FullModeError as exc:
        raise ConfigError(str(exc)) from None
    return settings


def _max_concurrent(cfg: SweepConfig) -> int:
    """Full-mode trials each need ``backbone.num_workers`` worker CPUs at once; running more
    trials than the cluster can hold would leave their worker groups waiting."""
    if cfg.mode != "full":
        return cfg.search.max_concurrent_trials
    import ray

    workers = int(cfg.backbone.get("num_workers", 1)) * cfg.runner.cpus_per_trial
    fits = int(ray.cluster_resources().get("CPU", 1) // max(workers, 1e-9))
    return max(1, min(cfg.search.max_concurrent_trials, fits))


def _trial_function(cfg: SweepConfig, ctx: Any) -> Any:
    """The Tune trainable with its resources, per ``mode`` and ``runner.head_placement``."""
    import ray
    from ray import tune

    from explore.sweep.trial import full_trainable, train_job_trainable, trainable

    if cfg.mode == "full":
        if not ray.cluster_resources().get("trial_driver"):
            raise ConfigError(
                "mode=full needs the custom resource 'trial_driver' on the cluster (see "
                "cluster/*.yaml: resources: {trial_driver: N} on the head)"
            )
        # The trial drives Train runs and holds no CPU: the workers hold them (RAY_NOTES §3).
        return tune.with_resources(tune.with_parameters(full_trainable, ctx=ctx), {"trial_driver": 1})
    if cfg.runner.head_placement == "in_trial":
        resources = {"cpu": cfg.runner.cpus_per_trial, "gpu": cfg.runner.gpus_per_trial}
        return tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources)
    if cfg.runner.head_placement == "ray_train":
        if not ray.cluster_resources().get("trial_driver"):
            raise ConfigError(
                "runner.head_placement=ray_train needs the custom resource 'trial_driver' on the "
                "cluster (see cluster/*.yaml: resources: {trial_driver: N} on the head)"
            )
        return tune.with_resources(tune.with_parameters(train_job_trainable, ctx=ctx), {"trial_driver": 1})
    raise ConfigError(f"runner.head_placement={cfg.runner.head_placement!r} must be in_trial or ray_train")


def _tune_runs(fs: pafs.FileSystem, sweep_path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(sweep_path, allow_not_found=True))
    return [i.base_name for i in infos if i.base_name.startswith("tune")]
