"""Sweep overhead: the same trials through the full sweep path vs called in-process.

The full path is Ray Tune + the Optuna searcher + the trial's worker process + Parquet
(+ a Ray Train job per trial with ``runner.head_placement=ray_train``); the in-process
path calls the same ``run_configuration`` on the same features. Overhead per trial =
(sweep wall − Σ in-process trial time) / N, measured in one run, side by side.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._timing import Figure


def _feature_dir(path: Path, seed: int = 0, classes: int = 40, d: int = 128) -> Path:
    """A long-tail feature set in the bring-your-own format (counts 400 → 5)."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(5, (400 * (80 ** (-np.arange(classes) / (classes - 1))))).astype(int)
    centers = rng.normal(size=(classes, d)) * 1.5

    def draw(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(classes), ns)
        return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y

    path.mkdir(parents=True, exist_ok=True)
    for name, ns in (("train", counts), ("val", np.full(classes, 20)), ("test", np.full(classes, 30))):
        x, y = draw(ns)
        np.savez(path / f"{name}.npz", features=x, labels=y)
    return path


def bench_overhead(num_trials: int, trial_seconds: float, placements: tuple[str, ...]) -> list[Figure]:
    """``num_trials`` AlphaNet configurations (k = 2, 3, …; grid search, one trial at a
    time) whose training takes about ``trial_seconds`` each."""
    import ray

    from explore.config import load
    from explore.pipeline import prepare
    from explore.recipes import get_recipe
    from explore.results.layout import SweepLayout
    from explore.results.rows import Provenance
    from explore.store import FeatureStore
    from explore.sweep import trial as trial_mod
    from explore.sweep.__main__ import main as sweep_main
    from explore.sweep.context import HeadTrialContext
    from explore.sweep.trial import run_configuration

    root = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    feats = _feature_dir(root / "feats")
    store_uri = str(root / "store")
    base = ["alphanet_k", f"features={feats}", f"storage_uri={store_uri}", "repeats=5",
            "search.sampler=grid", "space.distance=euclidean", "space.k.low=2",
            f"space.k.high={1 + num_trials}", "search.max_concurrent_trials=1"]

    # Calibrate the epochs so that one trial trains for about `trial_seconds` in-process.
    cfg = load(base)
    prepared = prepare(cfg, get_recipe("alphanet"), FeatureStore(store_uri))
    provenance = Provenance(sweep_id="bench", space="alphanet_k", mode="head",
                            dataset=prepared.dataset_name, feature_key=prepared.feature_key,
                            thresholds=cfg.splits, code_version="bench",
                            base=prepared.reference.name, base_key=prepared.base_key)

    def context(epochs: int) -> HeadTrialContext:
        settings = {**cfg.method_settings, "epochs": epochs, "lr_step_epochs": max(10, epochs // 3)}
        return HeadTrialContext(layout=SweepLayout(store_uri, "bench"), provenance=provenance,
                                method="alphanet", method_settings=settings, head=cfg.head,
                                seeds=tuple(cfg.seeds))

    run_configuration(context(25), {"k": 2}, "warm-up")
    started = time.perf_counter()
    run_configuration(context(25), {"k": 2}, "calibrate")
    epochs = max(25, int(25 * trial_seconds / (time.perf_counter() - started)))

    # In-process: the same configurations, one load of the features included.
    trial_mod._INPUTS.clear()
    ctx = context(epochs)
    in_process = []
    for k in range(2, 2 + num_trials):
        started = time.perf_counter()
        run_configuration(ctx, {"k": k}, f"in-process-{k}")
        in_process.append(time.perf_counter() - started)

    figures = [Figure("trial work time, in the benchmark process (median)", float(np.median(in_process)), "s",
                      note="for reference; overheads below use each trial's own time in the sweep")]
    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count(), resources={"trial_driver": 2}, log_to_driver=False)
    for placement in placements:
        argv = [*base, f"method.epochs={epochs}", f"method.lr_step_epochs={max(10, epochs // 3)}",
                f"runner.head_placement={placement}"]
        started = time.perf_counter()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            rc = sweep_main(argv)
        wall = time.perf_counter() - started
        if rc != 0:
            raise RuntimeError(f"the {placement} sweep failed (exit {rc})")
        # Trials run one at a time, and the driver prints, as each ends, the trial's own
        # work time (measured inside the trial) and the elapsed time: gap between two
        # completions − that trial's work = its overhead, measured in the same run under
        # the same load. The first gap also holds the trial worker's start-up (a process
        # importing torch), paid once per worker per sweep.
        lines = [line for line in printed.getvalue().splitlines() if "s elapsed)" in line]
        work = np.array([float(line.rsplit("seeds in ", 1)[1].split(" s,")[0]) for line in lines])
        done_at = np.array([float(line.rsplit(", ", 1)[1].split(" s elapsed")[0]) for line in lines])
        overheads = np.diff([0.0, *done_at]) - work
        per_trial = float(np.median(overheads[1:]))
        tune_wall = float(done_at[-1])
        share = float(overheads.sum() / tune_wall)
        target = placement == "in_trial"
        figures += [
            Figure(f"overhead per trial, steady state ({placement})", per_trial, "s",
                   "< 1 s" if target else "", (per_trial < 1.0) if target else None,
                   f"median over trials 2..{num_trials} of (gap between completions − the trial's work)"),
            Figure(f"first trial: worker start-up + overhead ({placement})", float(overheads[0]), "s",
                   note="once per trial worker per sweep (reuse_actors keeps the worker)"),
            Figure(f"overhead share of the sweep's trial time ({placement})", 100 * share, "%",
                   "< 10%" if target else "", (share < 0.10) if target else None,
                   f"{num_trials} trials: Tune {tune_wall:.1f} s, the trials' own work {work.sum():.1f} s, "
                   "start-up included"),
            Figure(f"once-per-sweep driver work ({placement})", wall - tune_wall, "s",
                   note="storage checks, cached features + base, results summary"),
        ]
    return figures
