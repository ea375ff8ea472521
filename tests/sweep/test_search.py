"""The search's decisions, driven directly (no Ray cluster, no training)."""

from __future__ import annotations

import optuna
import pytest

from explore.config import KnobSpace, load
from explore.sweep import search, tune_search


def _searcher(overrides: list[str], storage=None, reference=None):
    cfg = load(["alphanet_k", *overrides])
    s = tune_search.searcher(cfg, cfg.space, "study", storage or optuna.storages.InMemoryStorage(),
                        reference)
    assert s.set_search_properties(None, None, tune_search.param_space(cfg.space))
    return s


def _drive(s, n: int, value=lambda c: 0.5, few=lambda c: 0.2) -> list:
    out = []
    for i in range(n):
        config = s.suggest(f"t{i}")
        out.append(config)
        if isinstance(config, dict):
            s.on_trial_complete(f"t{i}", {"val_acc_overall": value(config), "val_acc_few": few(config),
                                          "acc_few": 0.1})
    return out


def test_a_finite_space_is_searched_without_repeats_then_finishes():
    configs = _drive(_searcher(["space.k.high=4"]), 8)
    proposed = [c for c in configs if isinstance(c, dict)]
    assert len(proposed) == 6  # k ∈ {2,3,4} × two distances
    assert len({tuple(sorted(c.items())) for c in proposed}) == 6
    assert configs[6:] == ["FINISHED", "FINISHED"]


def test_repeated_proposals_are_not_stored_as_separate_completed_trials():
    storage = optuna.storages.InMemoryStorage()
    s = _searcher(["space.k.high=3", "search.n_startup_trials=1"], storage)
    _drive(s, 4, value=lambda c: 0.9 if c["k"] == 3 else 0.1)  # TPE wants k=3 again and again
    study = optuna.load_study(study_name="study", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    keys = [tuple(sorted(t.params.items())) for t in complete]
    assert len(keys) == len(set(keys)) == 4
    repeats = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert repeats and all(t.user_attrs.get("explore_repeat") for t in repeats)


def test_the_seeded_sampler_proposes_the_same_trials():
    a = _drive(_searcher(["space.k.high=5"]), 5)
    b = _drive(_searcher(["space.k.high=5"]), 5)
    assert a == b


def test_grid_size_and_continuous_spaces():
    assert search.grid_size({"k": KnobSpace("k", "int", low=2, high=4),
                             "d": KnobSpace("d", "categorical", choices=("a", "b"))}) == 6
    assert search.space_values({"a": KnobSpace("a", "float", low=0, high=1)}) is None
    with pytest.raises(ValueError, match="grid"):
        KnobSpace("a", "float", low=0, high=1).values()


def test_the_pareto_objective_is_a_two_objective_study():
    storage = optuna.storages.InMemoryStorage()
    s = _searcher(["search.objective=pareto", "space.k.high=3"], storage)
    _drive(s, 4, value=lambda c: 0.5 + c["k"] / 100, few=lambda c: 0.5 - c["k"] / 100)
    study = optuna.load_study(study_name="study", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and all(len(t.values) == 2 for t in complete)
    # few first, overall second; the per-split means are user attributes (dashboard)
    t = complete[0]
    assert t.values == [pytest.approx(0.5 - t.params["k"] / 100), pytest.approx(0.5 + t.params["k"] / 100)]
    assert t.user_attrs["acc_few"] == 0.1


def test_few_within_records_the_constraint_against_the_reference():
    """Reference validation overall 0.60, tolerance 2 points: the floor is 0.58; a trial at
    0.55 violates it by 0.03, one at 0.61 is feasible (−0.03)."""
    storage = optuna.storages.InMemoryStorage()
    s = _searcher(["search.objective=few_within", "search.tolerance=2", "space.k.high=3",
                   "space.distance=euclidean"], storage, reference=0.60)
    _drive(s, 2, value=lambda c: 0.55 if c["k"] == 2 else 0.61)
    study = optuna.load_study(study_name="study", storage=storage)
    got = {t.params["k"]: t.constraints[search.CONSTRAINT] for t in study.trials
           if t.state == optuna.trial.TrialState.COMPLETE}
    assert got[2] == pytest.approx(0.03) and got[3] == pytest.approx(-0.03)
    assert [t.values for t in study.trials if t.params["k"] == 2] == [[0.2]]  # few is optimised


def test_few_within_needs_the_reference():
    cfg = load(["alphanet_k", "search.objective=few_within"])
    with pytest.raises(ValueError, match="few_within"):
        tune_search.searcher(cfg, cfg.space, "s", optuna.storages.InMemoryStorage(), None)


def test_a_trial_stopped_after_an_epoch_report_is_pruned_not_completed():
    """ASHA stops a trial after one of its per-epoch reports: the study records it PRUNED
    (its partial curve is not the configuration's value), and the search goes on."""
    from explore.sweep.reports import EpochReports

    storage = optuna.storages.InMemoryStorage()
    s = _searcher(["space.k.high=3"], storage)
    config = s.suggest("t0")
    epoch_report = EpochReports([0, 1], report=None).metrics(seed=0, epoch=3, val_top1=0.4)
    s.on_trial_result("t0", {**epoch_report, "training_iteration": 3})
    s.on_trial_complete("t0", {**epoch_report, "training_iteration": 3})
    assert isinstance(s.suggest("t1"), dict)  # the search goes on; this one completes
    s.on_trial_complete("t1", {"val_acc_overall": 0.5, "val_acc_few": 0.2})
    study = optuna.load_study(study_name="study", storage=storage)
    first, second = study.trials[0], study.trials[-1]
    assert first.params == {k: config[k] for k in first.params}
    assert first.state == optuna.trial.TrialState.PRUNED
    assert first.intermediate_values == {3: 0.4} and first.user_attrs["trial_id"] == "t0"
    assert second.state == optuna.trial.TrialState.COMPLETE and second.value == 0.5
