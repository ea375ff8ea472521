"""The Optuna searcher as a Ray Tune searcher: Hydra knob ranges → Tune domains →
Optuna distributions. A Tune run uses it as its ``search_alg``; the warm workers' loop
(:mod:`explore.sweep.workers`) calls the same interface. Importing this imports Tune."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from explore.config import ConfigError, KnobSpace, SweepConfig
from explore.sweep.search import CONSTRAINT, config_key, result_attrs, sampler, space_values

__all__ = ["ExploreOptunaSearch", "param_space", "searcher"]


def param_space(space: dict[str, KnobSpace]) -> dict[str, Any]:
    """Tune domains; OptunaSearch turns them into Optuna distributions."""
    out: dict[str, Any] = {}
    for name, knob in space.items():
        if knob.type == "int":  # Tune's integer upper bounds are exclusive
            low, high = int(knob.range()[0]), int(knob.range()[1]) + 1
            out[name] = tune.lograndint(low, high) if knob.log else tune.randint(low, high)
        elif knob.type == "float":
            low_f, high_f = knob.range()
            out[name] = tune.loguniform(low_f, high_f) if knob.log else tune.uniform(low_f, high_f)
        elif knob.type == "categorical":
            out[name] = tune.choice(list(knob.choices))
        else:
            out[name] = knob.value
    return out


class ExploreOptunaSearch(OptunaSearch):
    """OptunaSearch that proposes each configuration once.

    On a small discrete space (k 2..7 × two distances) TPE keeps proposing the best
    configuration again; rerunning it only repeats the same seeds. A repeated proposal is
    closed as a FAIL trial marked ``explore_repeat`` (so the study holds one COMPLETE trial
    per configuration run) and the sampler is asked again; after a few repeats the next
    unseen configuration is enqueued, and once every configuration of a finite space has
    been proposed, the search finishes early.
    """

    RESAMPLES_BEFORE_ENQUEUE = 10

    def __init__(self, *args: Any, space_values: dict[str, list[Any]] | None = None, seed: int = 0,
                 overall_floor: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._overall_floor = overall_floor
        # A finite space: every configuration, in a seeded order, to fall back on.
        self._all: list[dict[str, Any]] | None = None
        if space_values is not None:
            names = sorted(space_values)
            combos = [dict(zip(names, values)) for values in itertools.product(*(space_values[n] for n in names))]
            order = np.random.default_rng(seed).permutation(len(combos))
            self._all = [combos[i] for i in order]

    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]
        from ray.tune.search import Searcher

        for attempt in range(self.RESAMPLES_BEFORE_ENQUEUE + 1):
            known = self._known_configurations()
            if self._all is not None:
                unseen = [c for c in self._all if config_key(c) not in known]
                if not unseen:
                    return Searcher.FINISHED
                if attempt == self.RESAMPLES_BEFORE_ENQUEUE:
                    # The sampler keeps proposing known configurations: take the next unseen one.
                    self._study.enqueue_trial(unseen[0])
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            ot_trial = self._ot_trials[trial_id]
            key = config_key(ot_trial.params)
            if key not in known or attempt == self.RESAMPLES_BEFORE_ENQUEUE:
                return config
            del self._ot_trials[trial_id]
            # Not a second result of the configuration: the repeat is closed as FAIL (the
            # samplers ignore failed trials), marked so that readers of the study know why.
            ot_trial.set_user_attr("explore_repeat", True)
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        return None  # unreachable: the last attempt always returns

    @property
    def _study(self) -> optuna.Study:
        assert self._ot_study is not None, "the searcher has no study yet"
        return self._ot_study

    def _known_configurations(self) -> dict[tuple, float | None]:
        """Configurations proposed so far → their value (None while running)."""
        known: dict[tuple, float | None] = {}
        for t in self._study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.COMPLETE:  # (values: one or two objectives)
                known[config_key(t.params)] = t.values[0] if t.values else None
            elif t.state == optuna.trial.TrialState.RUNNING and t.params:
                known.setdefault(config_key(t.params), None)
        return known

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Before the value is told: the trial's per-split validation and test means as
        user attributes, so the study alone (optuna-dashboard) shows them, and Tune's
        trial id, the ``trial_id`` of its rows in the results. A trial the scheduler
        stopped is told PRUNED."""
        from explore.sweep.reports import STORAGE_ERROR, TRIAL_ERROR, epochs_reached

        if result and (result.get(TRIAL_ERROR) or result.get(STORAGE_ERROR)):
            super().on_trial_complete(trial_id, None, True)  # FAIL: a resume runs it again
            return
        ot_trial = self._ot_trials.get(trial_id)
        if result and epochs_reached(result) is not None:
            # Stopped by the scheduler after an epoch report: PRUNED in the study (a
            # partial curve is not the configuration's value); its epochs are the trial's
            # intermediate values.
            if ot_trial is not None and trial_id not in self._completed_trials:
                ot_trial.set_user_attr("trial_id", trial_id)
            super().on_trial_complete(trial_id, None, error)
            return
        if ot_trial is not None and result and trial_id not in self._completed_trials:
            ot_trial.set_user_attr("trial_id", trial_id)
            for name, value in result_attrs(result).items():
                ot_trial.set_user_attr(name, value)
            if self._overall_floor is not None:
                overall = float(result.get("val_acc_overall", math.nan))
                violation = self._overall_floor - overall if math.isfinite(overall) else 1.0
                ot_trial.set_constraint(CONSTRAINT, violation)
        super().on_trial_complete(trial_id, result, error)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """After a hard kill the pickled searcher can be older than the persisted study,
        so a replayed result may hit a finished trial (docs/operations.md#restoring-after-sigkill): skip it — the
        completion is recorded either way."""
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def searcher(
    cfg: SweepConfig, space: dict[str, KnobSpace], study_name: str,
    storage: optuna.storages.BaseStorage, reference_val_overall: float | None = None,
) -> OptunaSearch:
    """The Optuna searcher of ``search.objective``: one metric, or two (pareto); for
    few_within, ``reference_val_overall`` (the reference's validation mean) sets the bound."""
    metrics = cfg.search.metrics
    floor = None
    if cfg.search.objective == "few_within":
        if reference_val_overall is None:
            raise ConfigError("search.objective=few_within needs the reference's validation "
                              "accuracy (a validation split)")
        floor = reference_val_overall - cfg.search.tolerance / 100.0
    return ExploreOptunaSearch(
        space_values=space_values(space),
        seed=cfg.seed,
        overall_floor=floor,
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=["max"] * len(metrics) if len(metrics) > 1 else "max",
        sampler=sampler(cfg, space),
        study_name=study_name,
        storage=storage,
    )
