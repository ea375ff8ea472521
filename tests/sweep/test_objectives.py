"""Every ``search.objective``: the values the Optuna study receives, read back from the
study, for trials whose validation overall and few accuracies rank them differently
(so an objective optimising the wrong split cannot pass). The searcher is driven directly
(suggest/complete, as Tune does), with a real Optuna storage; no Ray, no training."""

from __future__ import annotations

import optuna
import pytest

from explore.config import load
from explore.sweep import search, tune_search

# Two configurations: k=2 is better overall, k=3 better on the few split.
OVERALL = {2: 0.70, 3: 0.60}
FEW = {2: 0.10, 3: 0.40}
REFERENCE_VAL_OVERALL = 0.65
EXPECTED_VALUES = {
    "val_overall": lambda k: [OVERALL[k]],
    "val_few": lambda k: [FEW[k]],
    "few_within": lambda k: [FEW[k]],
    "pareto": lambda k: [FEW[k], OVERALL[k]],
}

# few_within: k=3 is better on few but below the floor (0.65 − 2 points), so k=2 is best.
BEST = {"val_overall": 2, "val_few": 3, "few_within": 2}


def _study_after_two_trials(objective: str) -> optuna.Study:
    cfg = load(["alphanet_k", f"search.objective={objective}", "search.tolerance=2",
                "space.k.high=3", "space.distance=euclidean"])
    storage = optuna.storages.InMemoryStorage()
    searcher = tune_search.searcher(cfg, cfg.space, "study", storage, REFERENCE_VAL_OVERALL)
    assert searcher.set_search_properties(None, None, tune_search.param_space(cfg.space))
    for i in range(2):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        k = config["k"]
        searcher.on_trial_complete(f"t{i}", {"val_acc_overall": OVERALL[k], "val_acc_few": FEW[k],
                                             "acc_overall": 0.0, "acc_few": 0.0})
    return optuna.load_study(study_name="study", storage=storage)


@pytest.mark.parametrize("objective", sorted(EXPECTED_VALUES))
def test_the_study_receives_the_objectives_values(objective):
    study = _study_after_two_trials(objective)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["k"] for t in complete) == [2, 3]
    for t in complete:
        assert t.values == pytest.approx(EXPECTED_VALUES[objective](t.params["k"])), objective
    assert all(d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions)
    if objective != "pareto":  # the objective's split decides the best trial
        assert study.best_trial.params["k"] == BEST[objective]


def test_only_few_within_records_a_constraint():
    """few_within: floor = 0.65 − 2 points = 0.63; k=2 (0.70) is feasible, k=3 (0.60) not."""
    for objective in EXPECTED_VALUES:
        study = _study_after_two_trials(objective)
        by_k = {t.params["k"]: t.constraints for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE}
        if objective == "few_within":
            assert by_k[2][search.CONSTRAINT] == pytest.approx(-0.07)
            assert by_k[3][search.CONSTRAINT] == pytest.approx(0.03)
        else:
            assert by_k == {2: {}, 3: {}}, objective


def test_the_configs_metrics_follow_the_objective():
    got = {o: load(["alphanet_k", f"search.objective={o}"]).search.metrics for o in EXPECTED_VALUES}
    assert got == {"val_overall": ["val_acc_overall"], "val_few": ["val_acc_few"],
                   "few_within": ["val_acc_few"], "pareto": ["val_acc_few", "val_acc_overall"]}
