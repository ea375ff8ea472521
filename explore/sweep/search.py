"""The search: Hydra knob ranges → Tune domains, searched by Optuna."""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from explore.config import ConfigError, KnobSpace, SweepConfig


def param_space(space: dict[str, KnobSpace]) -> dict[str, Any]:
    """Tune domains; OptunaSearch turns them into Optuna distributions."""
    out: dict[str, Any] = {}
    for name, knob in space.items():
        if knob.type == "int":
            out[name] = tune.lograndint(int(knob.low), int(knob.high) + 1) if knob.log else tune.randint(int(knob.low), int(knob.high) + 1)
        elif knob.type == "float":
            out[name] = tune.loguniform(knob.low, knob.high) if knob.log else tune.uniform(knob.low, knob.high)
        elif knob.type == "categorical":
            out[name] = tune.choice(list(knob.choices))
        else:
            out[name] = knob.value
    return out


def grid_size(space: dict[str, KnobSpace]) -> int:
    return math.prod(len(k.values()) for k in space.values())


def sampler(cfg: SweepConfig, space: dict[str, KnobSpace]) -> optuna.samplers.BaseSampler:
    """A seeded sampler: the same config and seed propose the same trials."""
    if cfg.search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.search.n_startup_trials)
    if cfg.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.search.sampler == "grid":
        grid = {name: knob.values() for name, knob in space.items() if knob.type != "fixed"}
        return optuna.samplers.GridSampler(grid, seed=cfg.seed)
    raise ConfigError(f"search.sampler={cfg.search.sampler!r} must be tpe, random or grid")


class ResumableOptunaSearch(OptunaSearch):
    """After a hard kill the pickled searcher can be older than the persisted study, so
    a replayed intermediate result may hit a finished trial (RAY_NOTES §8): skip it —
    the completion is recorded either way."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def searcher(
    cfg: SweepConfig, space: dict[str, KnobSpace], study_name: str, storage: optuna.storages.BaseStorage
) -> OptunaSearch:
    return ResumableOptunaSearch(
        metric=cfg.search.metric,
        mode=cfg.search.mode,
        sampler=sampler(cfg, space),
        study_name=study_name,
        storage=storage,
    )


def journal_storage(path: str) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))
