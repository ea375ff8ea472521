"""The search's parts that need no Ray Tune: the Optuna sampler of ``search.sampler``, a
space's size and values, the study's storage and what a trial leaves in it. The searcher
itself, a Tune searcher, is :mod:`explore.sweep.tune_search`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from explore.config import ConfigError, KnobSpace, SweepConfig

if TYPE_CHECKING:
    import optuna


def grid_size(space: dict[str, KnobSpace]) -> int:
    return math.prod(len(k.values()) for k in space.values())


def sampler(cfg: SweepConfig, space: dict[str, KnobSpace]) -> optuna.samplers.BaseSampler:
    """A seeded sampler: the same config and seed propose the same trials."""
    import optuna  # optuna (~0.2 s) only for a sweep that searches

    if cfg.search.sampler == "tpe":
        # few_within: TPE models feasibility from each trial's constraint (set_constraint).
        return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.search.n_startup_trials)
    if cfg.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.search.sampler == "grid":
        grid = {name: knob.values() for name, knob in space.items() if knob.type != "fixed"}
        return optuna.samplers.GridSampler(grid, seed=cfg.seed)
    raise ConfigError(f"search.sampler={cfg.search.sampler!r} must be tpe, random or grid")


def result_attrs(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of a trial's result (means over seeds) worth keeping in the study; a
    NaN (a split without samples) is left out — JSON has no NaN."""
    from explore.sweep.reports import SUMMARY_METRICS

    out = {}
    for name in (*SUMMARY_METRICS, "num_seeds"):
        value = result.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def config_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def space_values(space: dict[str, KnobSpace]) -> dict[str, list[Any]] | None:
    """Every value of every swept knob, or None when a knob is continuous."""
    swept = {name: knob for name, knob in space.items() if knob.type != "fixed"}
    if any(k.type == "float" for k in swept.values()):
        return None
    return {name: knob.values() for name, knob in swept.items()}


CONSTRAINT = "val_overall_floor"
"""few_within's constraint on a study trial: ``reference val overall − tolerance − val
overall`` (feasible when <= 0), read by Optuna's constrained samplers."""


def journal_storage(path: str) -> optuna.storages.BaseStorage:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))
