"""Comparability groups: never rank across data, features, reference, mode or thresholds."""

from __future__ import annotations

import pandas as pd

from explore.analyze.answer import analyse
from explore.analyze.groups import assign_groups
from explore.analyze.load import normalize
from tests.analyze.crafted import rows_for


def _rows(*parts: list[dict]) -> pd.DataFrame:
    return normalize(pd.DataFrame([r for p in parts for r in p]))


def test_two_datasets_make_two_groups_and_each_gets_its_own_recommendation():
    # On cifar10 the configuration has far higher accuracies than anything on cifar100:
    # ranked together it would win; per group each dataset gets its own answer.
    c100 = rows_for("a", "crt", trial_id="crt", dataset="cifar100_lt")
    c100 += rows_for("a", "alphanet", base="crt", trial_id="t1", knobs={"k": 3},
                     dataset="cifar100_lt", val={"few": [20] * 3})
    c10 = rows_for("b", "crt", trial_id="crt", dataset="cifar10_lt", val={"overall": [80] * 3})
    c10 += rows_for("b", "alphanet", base="crt", trial_id="t1", knobs={"k": 5},
                    dataset="cifar10_lt", val={"few": [70] * 3, "overall": [80] * 3})
    results, _ = analyse(_rows(c100, c10))
    assert [g.group.sweeps for g in results] == [("a",), ("b",)]  # by key: "cifar100_lt" < "cifar10_lt"
    chosen = {g.group.key[0]: g.line(g.recommendation.chosen)["label"] for g in results}
    assert chosen == {"cifar100_lt": "alphanet(crt) k=3", "cifar10_lt": "alphanet(crt) k=5"}
    for g in results:
        assert set(g.summary["sweep_id"]) == set(g.group.sweeps)


def test_same_setup_sweeps_share_a_group_other_thresholds_do_not():
    k = rows_for("k", "crt", trial_id="crt") + rows_for(
        "k", "alphanet", base="crt", trial_id="t1", knobs={"k": 3})
    rho = rows_for("rho", "crt", trial_id="crt") + rows_for(
        "rho", "alphanet", base="crt", trial_id="t1", knobs={"k": 3, "rho": 0.5})
    other = rows_for("x", "crt", trial_id="crt") + rows_for(
        "x", "alphanet", base="crt", trial_id="t1", knobs={"k": 3})
    for r in other:
        r["few_below"] = 10
    rows = _rows(k, rho, other)
    per_row, groups = assign_groups(rows)
    assert len(groups) == 2
    assert {g.sweeps for g in groups} == {("k", "rho"), ("x",)}
    assert per_row[rows["sweep_id"] == "k"].nunique() == 1


def test_reference_written_in_head_mode_joins_its_full_mode_configurations():
    rows = rows_for("f", "crt", trial_id="crt", mode="head") + rows_for(
        "f", "alphanet", base="crt", trial_id="t1", knobs={"k": 3}, mode="full")
    per_row, groups = assign_groups(_rows(rows))
    (g,) = groups
    assert dict(zip(("dataset", "feature_key", "reference", "mode"), g.key[:4])) == {
        "dataset": "cifar100_lt", "feature_key": "fk0", "reference": "crt", "mode": "full"}
    assert per_row.nunique() == 1
