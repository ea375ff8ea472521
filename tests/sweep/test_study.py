"""Study reconciliation after a hard kill, driven with Optuna ask/tell (no training)."""

from __future__ import annotations

import optuna
import pandas as pd

from explore.sweep.study import reconcile_study


def _study(storage):
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=3))
    dists = {"k": optuna.distributions.IntDistribution(2, 5),
             "distance": optuna.distributions.CategoricalDistribution(["euclidean", "cosine"])}
    done = study.ask(dists)
    study.tell(done, 0.4)
    finished_running = study.ask(dists)   # its rows were written, then the driver died
    interrupted = study.ask(dists)        # killed mid-training: no rows
    return study, done, finished_running, interrupted


def test_reconcile_completes_finished_trials_and_requeues_interrupted_ones():
    storage = optuna.storages.InMemoryStorage()
    study, done, finished_running, interrupted = _study(storage)
    finished = pd.DataFrame([
        {"trial_id": "a", **done.params, "val_acc_overall": 0.4},
        {"trial_id": "b", **finished_running.params, "val_acc_overall": 0.55},
    ])
    assert finished_running.params != interrupted.params  # seeded draws: distinct
    reconcile_study(storage, "s", finished, ["k", "distance"], "val_acc_overall")
    trials = optuna.load_study(study_name="s", storage=storage).trials
    state = {t.number: t for t in trials}
    assert state[finished_running.number].state == optuna.trial.TrialState.COMPLETE
    assert state[finished_running.number].value == 0.55
    assert state[interrupted.number].state == optuna.trial.TrialState.FAIL
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    fixed = [t.system_attrs.get("fixed_params") for t in waiting]
    assert fixed == [interrupted.params]


def test_reconcile_of_a_study_that_does_not_exist_does_nothing():
    storage = optuna.storages.InMemoryStorage()
    reconcile_study(storage, "missing", pd.DataFrame(columns=["trial_id"]), ["k"], "val_acc_overall")
    assert optuna.get_all_study_names(storage) == []
