"""ASHA early stopping on a real local Ray cluster, against FIFO on the same grid and seeds.

Half the grid is clearly bad: SWRM with β in the hundreds adds margins so large to the
target logit that the loss vanishes and the head never learns (validation top-1 stays
near chance, about 0.07 here, against about 0.76 for β ≤ 2).
"""

from __future__ import annotations

import pytest

from explore.analyze.answer import analyse
from explore.results.reader import read_rows
from explore.sweep.__main__ import main as sweep_main
from tests.support.synthetic import write_feature_dir

pytestmark = pytest.mark.ray

GOOD, BAD = (0.5, 1.0, 2.0), (300.0, 600.0, 900.0)
EPOCHS, SEEDS = 12, 2


def _sweep(feats, store, scheduler: str, capsys):
    argv = ["swrm_window", f"features={feats}", f"storage_uri={store}", "space.W=4",
            f"+space.beta={{type: categorical, choices: {list(GOOD + BAD)}}}",
            "search.sampler=grid", f"repeats={SEEDS}", f"head.epochs={EPOCHS}",
            # one trial at a time: a trial meets a rung after some good trials have
            "search.max_concurrent_trials=1", f"search.scheduler={scheduler}",
            "search.grace_period=3", "search.reduction_factor=2"]
    assert sweep_main(argv) == 0
    out = capsys.readouterr().out
    rows = read_rows(out.strip().splitlines()[-1].removeprefix("results: ")).rows
    return rows[rows.role == "configuration"], rows, out


def _recommended(rows) -> str:
    (group,), _ = analyse(rows)
    assert group.recommendation.chosen is not None
    return str(group.line(group.recommendation.chosen)["label"])


def test_asha_stops_bad_configurations_and_recommends_what_fifo_does(ray_cluster, tmp_path,
                                                                     capsys):
    feats = write_feature_dir(tmp_path / "feats")
    asha, asha_all, out = _sweep(feats, tmp_path / "store", "asha", capsys)
    fifo, fifo_all, _ = _sweep(feats, tmp_path / "store", "fifo", capsys)

    assert (fifo.status == "ok").all() and len(fifo) == len(GOOD + BAD) * SEEDS
    stopped = asha[asha.status == "stopped"]
    assert len(stopped) >= SEEDS, "ASHA stopped nothing"
    assert set(stopped.beta) <= set(BAD)  # only bad configurations are stopped
    assert set(asha[asha.status == "ok"].beta) >= set(GOOD)  # every good one finished
    for _, trial in stopped.groupby("trial_id"):  # a row per seed, with the epochs reached
        assert sorted(trial.seed) == list(range(SEEDS))
        assert trial.stopped_epoch.between(0, EPOCHS).all()
        assert trial.stopped_epoch.sum() < EPOCHS * SEEDS
        assert trial.acc_overall.isna().all() and trial.val_acc_overall.isna().all()
    assert "stopped early after" in out and "status=stopped" in out

    # Stopped rows never count: the recommendation is FIFO's, on less training.
    assert _recommended(asha_all) == _recommended(fifo_all)
    epochs_asha = EPOCHS * (asha.status == "ok").sum() + stopped.stopped_epoch.sum()
    assert epochs_asha < EPOCHS * len(fifo)
    print(f"\nASHA: {stopped.trial_id.nunique()} of {len(GOOD + BAD)} trials stopped, "
          f"{epochs_asha} epochs trained against FIFO's {EPOCHS * len(fifo)}; trial seconds "
          f"ASHA {(asha.finished_at - asha.started_at).groupby(asha.trial_id).first().sum():.1f}"
          f" vs FIFO {(fifo.finished_at - fifo.started_at).groupby(fifo.trial_id).first().sum():.1f}")
