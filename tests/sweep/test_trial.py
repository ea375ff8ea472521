"""A trial without Ray: knobs → recipe → rows, the report Tune and Optuna see, and the
rows the driver's recorder writes from it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from explore.recipes.bases import BaseSpec, train_base
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance
from explore.splits import SplitThresholds
from explore.store import FeatureStore
from explore.sweep.context import HeadTrialContext
from explore.sweep.recorder import RowRecorder, stopped_rows
from explore.sweep.reports import (
    EPOCHS_TRAINED,
    epoch_reports_from,
    epochs_reached,
    final_report,
    summarize_rows,
)
from explore.sweep.trial import _epochs_reported, rows_of_trial
from explore.training.head_config import HeadTrainConfig
from tests.support.synthetic import feature_set

HEAD = HeadTrainConfig(epochs=3, batch_size=64)


def test_the_summary_is_the_mean_over_seeds_not_the_best():
    rows = [{"val_acc_overall": 0.5, "acc_few": 0.1}, {"val_acc_overall": 0.7, "acc_few": None},
            {"val_acc_overall": 0.9, "acc_few": float("nan")}]
    out = summarize_rows(rows)
    assert out["val_acc_overall"] == pytest.approx(0.7)  # (0.5 + 0.7 + 0.9) / 3, not 0.9
    assert out["acc_few"] == pytest.approx(0.1)  # missing and NaN seeds are skipped
    assert math.isnan(out["acc_medium"]) and out["num_seeds"] == 3


@pytest.fixture(scope="module")
def store_and_keys(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("store"))
    store = FeatureStore(root)
    fset = feature_set()
    store.write("features", fset)
    splits = {n: (fset.splits[n].features, fset.splits[n].labels) for n in ("train", "val", "test")}
    clf = train_base(BaseSpec.from_mapping({"name": "crt"}, HEAD), splits, 9, 0)
    store.put_arrays("base", "classifier", {"weight": clf.weight, "bias": clf.bias}, {})
    return root


@pytest.mark.parametrize("method,knobs", [("alphanet", {"k": 3, "distance": "cosine"}),
                                          ("swrm", {"W": 4})])
def test_a_trials_report_carries_one_row_per_seed_and_a_retry_reuses_them(store_and_keys,
                                                                         method, knobs):
    """The final report carries the rows; the recorder writes exactly them; a restarted
    trial reads them back instead of retraining."""
    from types import SimpleNamespace

    from explore.results import writer

    root = store_and_keys
    prov = Provenance(sweep_id="s1", space="x", mode="head", dataset="synthetic",
                      feature_key="features", thresholds=SplitThresholds(), code_version="v",
                      base="crt", base_key="base")
    settings = {"epochs": 6} if method == "alphanet" else {}
    ctx = HeadTrialContext(layout=SweepLayout(root, "s1"), provenance=prov, method=method,
                           method_settings=settings, head=HEAD, seeds=(0, 1))
    rows = rows_of_trial(ctx, knobs, f"t-{method}")
    assert [r["seed"] for r in rows] == [0, 1]
    for name, value in knobs.items():
        assert all(r[name] == value for r in rows)
    assert all(r["role"] == "configuration" and r["base"] == "crt" for r in rows)
    assert all(0 <= r["acc_overall"] <= 1 for r in rows)
    assert all(r["device"] == "cpu" for r in rows)  # outside Ray, no GPU: the CPU
    report = final_report(rows, 1.5)
    assert report["acc_overall"] == pytest.approx(np.mean([r["acc_overall"] for r in rows]))
    trial = SimpleNamespace(trial_id=f"t-{method}", config=knobs, last_result=report)
    RowRecorder(ctx).on_trial_result(0, [], trial, report)
    written = writer.read_file(ctx.layout, SweepLayout.trial_name(f"t-{method}"))
    assert written["acc_overall"].tolist() == [r["acc_overall"] for r in rows]
    again = rows_of_trial(ctx, knobs, f"t-{method}")  # read back, not retrained
    np.testing.assert_allclose([r["acc_overall"] for r in again], [r["acc_overall"] for r in rows])
    assert json.loads(again[0]["params_json"])["params"] == json.loads(rows[0]["params_json"])["params"]


def _ctx(root: str, method: str, **kw) -> HeadTrialContext:
    prov = Provenance(sweep_id="s1", space="x", mode="head", dataset="synthetic",
                      feature_key="features", thresholds=SplitThresholds(), code_version="v",
                      base="crt", base_key="base")
    return HeadTrialContext(layout=SweepLayout(root, "s1"), provenance=prov, method=method,
                            method_settings={}, head=HEAD, seeds=(0, 1), **kw)


def test_per_epoch_reports_then_a_stop_gives_stopped_rows(store_and_keys):
    """At rungs 1..4, a head trial reports each epoch of each seed in turn (what ASHA
    counts); stopped by the scheduler (SystemExit out of a report, as Tune does) after
    seed 0's 3 epochs and seed 1's first, its stopped
    rows say how far each seed got and carry no metric."""
    ctx = _ctx(store_and_keys, "swrm", report_rungs=(1, 2, 3, 4))
    reports: list[dict] = []

    def report(metrics: dict) -> None:
        reports.append(metrics)
        if len(reports) == 4:
            raise SystemExit(0)

    with pytest.raises(SystemExit), _epochs_reported(ctx, report):
        rows_of_trial(ctx, {"W": 3}, "t-stop")
    assert [(r["seed"], r["epoch"]) for r in reports] == [(0, 1), (0, 2), (0, 3), (1, 1)]
    assert [r[EPOCHS_TRAINED] for r in reports] == [1, 2, 3, 4]
    assert all(0 <= r["val_acc_overall"] <= 1 and math.isnan(r["acc_few"]) for r in reports)
    assert epochs_reached(reports[-1]) == {0: 3, 1: 1}
    assert epochs_reached(summarize_rows([])) is None  # a trial's final report

    rows = stopped_rows(ctx, {"W": 3}, "t-stop", reports[-1])
    assert [(r["seed"], r["status"], r["stopped_epoch"]) for r in rows] == [
        (0, "stopped", 3), (1, "stopped", 1)]
    assert all(r["W"] == 3 and r.get("acc_overall") is None and r.get("val_acc_overall") is None
               for r in rows)
    assert all(r["started_at"] <= r["finished_at"] for r in rows)
    assert all(r["device"] == "cpu" for r in rows)  # where the stopped trial trained


def test_a_head_trial_reports_only_when_it_reaches_a_rung(store_and_keys):
    """Rungs at 2 and 5 epochs (2.5 rounds up: the scheduler compares at the first count at
    or past a rung); each report waits for the driver, so no other epoch is sent."""
    ctx = _ctx(store_and_keys, "swrm", report_rungs=(2, 2.5, 5))
    reports: list[dict] = []
    with _epochs_reported(ctx, reports.append):
        rows_of_trial(ctx, {"W": 4}, "t-rungs")
    assert [(r[EPOCHS_TRAINED], r["seed"], r["epoch"]) for r in reports] == [
        (2, 0, 2), (3, 0, 3), (5, 1, 2)]


def test_without_rungs_a_head_trial_reports_nothing_per_epoch(store_and_keys):
    ctx = _ctx(store_and_keys, "swrm")
    reports: list[dict] = []
    with _epochs_reported(ctx, reports.append):
        rows = rows_of_trial(ctx, {"W": 5}, "t-fifo")
    assert reports == [] and len(rows) == 2
    assert rows[0]["started_at"] <= rows[0]["finished_at"]


def test_full_mode_epoch_reports_count_the_seeds_trained_before():
    """Full mode's Train callback is pickled per seed: the third seed's third epoch is the
    trial's 2·5 + 3 = 13th, with the first two seeds at all 5 epochs."""
    epochs, before = epoch_reports_from((7, 8, 9), 5, 9)
    report = epochs.metrics(9, 3, 0.5, trained=before + 3)
    assert before == 10 and report[EPOCHS_TRAINED] == 13
    assert epochs_reached(report) == {7: 5, 8: 5, 9: 3}
    assert epoch_reports_from((7, 8, 9), 5, 7)[1] == 0
