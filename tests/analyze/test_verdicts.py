"""Paired differences, t intervals, verdicts and the recommendation rule, checked against
hand computations on crafted rows (values in points; t(0.975, 2) = 4.303)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from explore.analyze.answer import analyse
from explore.analyze.verdicts import (
    BETTER,
    NO_PAIRS,
    ONE_SEED,
    UNCLEAR,
    WORSE,
    paired_interval,
    recommend,
)
from tests.analyze.crafted import rows_for

T975_2DF = 4.303  # Student t quantile, 0.975, 2 degrees of freedom (3 seeds)
T975_3DF = 3.182  # 4 seeds


def _frame(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p])


def test_paired_interval_three_seeds_by_hand():
    # differences 5, 5, 6: mean 16/3, sd sqrt(1/3), se sd/sqrt(3) = 1/3
    r = paired_interval(np.array([0.15, 0.16, 0.18]), np.array([0.10, 0.11, 0.12]))
    assert r.n == 3
    assert r.mean == pytest.approx(16 / 3, abs=1e-9)
    assert r.low == pytest.approx(16 / 3 - T975_2DF / 3, abs=1e-3)
    assert r.high == pytest.approx(16 / 3 + T975_2DF / 3, abs=1e-3)
    assert r.verdict == BETTER
    assert r.text() == "+5.33 [+3.90, +6.77] better"


def test_paired_interval_straddling_zero_and_below_zero():
    # differences -0.5, 0, -0.5 (points): mean -1/3, sd sqrt(1/12), se 1/6
    r = paired_interval(np.array([0.445, 0.455, 0.455]), np.array([0.45, 0.455, 0.46]))
    assert r.mean == pytest.approx(-1 / 3, abs=1e-9)
    assert (r.low, r.high) == pytest.approx((-1 / 3 - T975_2DF / 6, -1 / 3 + T975_2DF / 6),
                                            abs=1e-3)
    assert r.verdict == UNCLEAR
    # differences -2, -3, -1, -2 over 4 seeds: mean -2, sd sqrt(2/3), se sqrt(2/3)/2
    w = paired_interval(np.array([0.40, 0.40, 0.40, 0.40]), np.array([0.42, 0.43, 0.41, 0.42]))
    half = T975_3DF * math.sqrt(2 / 3) / 2
    assert (w.low, w.high) == pytest.approx((-2 - half, -2 + half), abs=1e-3)
    assert w.verdict == WORSE


def test_paired_is_not_unpaired():
    # Seeds move both models together: each difference is +1, so the paired interval is
    # tight and above 0, while the two columns alone vary by 20 points.
    c = np.array([0.31, 0.51, 0.41])
    r = np.array([0.30, 0.50, 0.40])
    res = paired_interval(c, r)
    assert res.verdict == BETTER and res.low == pytest.approx(1.0) == res.high


def test_one_seed_no_pairs_and_missing_values():
    one = paired_interval(np.array([0.2]), np.array([0.1]))
    assert (one.n, one.verdict) == (1, ONE_SEED) and one.mean == pytest.approx(10.0)
    assert math.isnan(one.low) and one.text() == "+10.00 (one seed: no interval)"
    none = paired_interval(np.array([]), np.array([]))
    assert (none.n, none.verdict) == (0, NO_PAIRS)
    # a missing value drops its pair: 2 pairs left
    nan = paired_interval(np.array([0.2, np.nan, 0.3]), np.array([0.1, 0.1, 0.1]))
    assert nan.n == 2 and nan.mean == pytest.approx(15.0)


def _sweep_rows() -> pd.DataFrame:
    ref = rows_for("s1", "crt", trial_id="crt", test={"few": [10, 11, 12], "overall": [45, 45.5, 46]},
                   val={"few": [11, 11, 11], "overall": [45, 45, 45]})
    # eligible (val overall -0.5), best val few among the eligible -> recommended
    k8 = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 8, "distance": "cosine"},
                  test={"few": [15, 16, 18], "overall": [44.5, 45.5, 45.5]},
                  val={"few": [25, 25, 25], "overall": [44.5, 44.5, 44.5]})
    # best val few of all, but val overall -5: not eligible at T = 1
    k4 = rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 4, "distance": "cosine"},
                  test={"few": [42, 42, 42], "overall": [40, 40, 40]},
                  val={"few": [30, 30, 30], "overall": [40, 40, 40]})
    # best on test overall, lower val few: never chosen
    k2 = rows_for("s1", "alphanet", base="crt", trial_id="t3",
                  knobs={"k": 2, "distance": "euclidean"},
                  test={"few": [11, 10, 13], "overall": [46, 47, 46]},
                  val={"few": [20, 21, 22], "overall": [46, 46, 46]})
    return _frame(ref, k8, k4, k2)


def test_comparisons_and_recommendation_by_hand():
    (g,), _ = analyse(_sweep_rows(), tolerance=1.0)
    by_label = {c.label: c for c in g.comparisons.values()}
    k8 = by_label["alphanet(crt) k=8 distance=cosine"]
    assert k8.paired_seeds == (0, 1, 2) and k8.pairing() == "paired on 3 seeds"
    assert k8.test["few"].mean == pytest.approx(16 / 3)
    assert k8.test["few"].verdict == BETTER
    assert k8.test["overall"].verdict == UNCLEAR
    assert k8.test["medium"].verdict == UNCLEAR  # identical: a zero-width interval at 0
    assert k8.val["overall"].mean == pytest.approx(-0.5)
    k4 = by_label["alphanet(crt) k=4 distance=cosine"]
    assert k4.test["overall"].verdict == WORSE and k4.val["overall"].mean == pytest.approx(-5)

    rec = g.recommendation
    assert g.line(rec.chosen)["label"] == "alphanet(crt) k=8 distance=cosine"
    assert {g.line(c)["label"] for c in rec.eligible} == {
        "alphanet(crt) k=8 distance=cosine", "alphanet(crt) k=2 distance=euclidean"}
    # beats on few: k8 (few better, overall -0.33 >= -1); k4's few is better but it loses 5.5
    assert [g.line(c)["label"] for c in rec.beating] == ["alphanet(crt) k=8 distance=cosine"]

    # with 6 points allowed, k4 (val overall -5) qualifies and has the best val few
    wide = recommend(g.summary, g.comparisons, 6.0)
    assert g.line(wide.chosen)["label"] == "alphanet(crt) k=4 distance=cosine"
    assert len(wide.beating) == 2


def test_no_configuration_qualifies():
    ref = rows_for("s1", "crt", trial_id="crt", val={"overall": [45, 45, 45]})
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3},
                 test={"few": [60, 61, 62]}, val={"few": [60, 60, 60], "overall": [43.9, 43.9, 43.9]})
    b = rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 5},
                 val={"overall": [40, 41, 42]})
    (g,), _ = analyse(_frame(ref, a, b), tolerance=1.0)
    rec = g.recommendation
    assert rec.chosen is None and rec.eligible == ()
    assert "no configuration qualifies" in rec.reason
    # k=3 beats the base on few on test (+11 points, overall unchanged) yet is not chosen:
    # validation decides, and it loses 1.1 points there
    assert [g.line(c)["label"] for c in rec.beating] == ["alphanet(crt) k=3"]
    assert recommend(g.summary, g.comparisons, 1.2).chosen is not None


def test_tolerance_boundary_is_inclusive_despite_rounding():
    # 0.44 - 0.45 is -1.0000000000000009 points in floating point: still "within 1 point"
    ref = rows_for("s1", "crt", trial_id="crt", val={"overall": [45, 45]}, seeds=(0, 1))
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3},
                 val={"overall": [44, 44]}, seeds=(0, 1))
    (g,), _ = analyse(_frame(ref, a), tolerance=1.0)
    assert g.recommendation.chosen is not None


def test_missing_reference_seeds_pair_only_common_seeds():
    ref = rows_for("s1", "crt", trial_id="crt", seeds=(0, 1), test={"few": [10, 20]})
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3}, seeds=(0, 1, 2),
                 test={"few": [12, 23, 99]})
    (g,), _ = analyse(_frame(ref, a))
    (c,) = g.comparisons.values()
    assert c.paired_seeds == (0, 1)
    assert c.test["few"].n == 2 and c.test["few"].mean == pytest.approx(2.5)  # (2 + 3) / 2
    assert c.pairing() == "paired on 2 common seeds of 3 (reference has 2; reference lacks seed(s) 2)"


def test_old_single_seed_reference_gives_one_seed_verdicts():
    ref = rows_for("s1", "crt", trial_id="crt", seeds=(0,), test={"few": [10]})
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3},
                 test={"few": [15, 16, 18]})
    (g,), _ = analyse(_frame(ref, a))
    (c,) = g.comparisons.values()
    assert c.test["few"].verdict == ONE_SEED and c.test["few"].mean == pytest.approx(5.0)


def test_deterministic_reference_pairs_every_seed():
    ref = rows_for("s1", "ce", trial_id="ce", test={"few": [10, 10, 10]}, deterministic=True)
    a = rows_for("s1", "lfm", base="ce", trial_id="t1", knobs={"alpha": 0.5}, seeds=(0, 1, 2, 3),
                 test={"few": [12, 13, 11, 12]})
    (g,), _ = analyse(_frame(ref, a))
    (c,) = g.comparisons.values()
    assert c.paired_seeds == (0, 1, 2, 3) and c.reference_deterministic
    # differences 2, 3, 1, 2: mean 2, sd sqrt(2/3), n 4
    half = T975_3DF * math.sqrt(2 / 3) / 2
    assert (c.test["few"].low, c.test["few"].high) == pytest.approx((2 - half, 2 + half), abs=1e-3)
    assert "reference deterministic" in c.pairing()


def test_recommend_rejects_tolerance_outside_0_100():
    (g,), _ = analyse(_sweep_rows())
    for bad in (0.0, -1.0, 100.0, 150.0, float("nan")):
        with pytest.raises(ValueError, match=r"tolerance must be in \(0, 100\) points"):
            recommend(g.summary, g.comparisons, bad)


def test_validation_not_test_decides_where_they_disagree():
    """Rows where selecting on test would pick differently at both steps of the rule:
    "val_few" has the best validation few but a poor test few; "test_few" the reverse;
    "test_only" has the best test few and loses 0.5 overall on test, but 3 points on
    validation (not eligible). Validation picks val_few; test would pick test_only."""
    ref = rows_for("s1", "crt", trial_id="crt", test={"few": [10, 10, 10], "overall": [45, 45, 45]},
                   val={"few": [10, 10, 10], "overall": [45, 45, 45]})
    val_few = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3},
                       test={"few": [12, 13, 14], "overall": [45, 45, 45]},
                       val={"few": [30, 30, 30], "overall": [45, 45, 45]})
    test_few = rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 4},
                        test={"few": [25, 26, 27], "overall": [45, 45, 45]},
                        val={"few": [20, 20, 20], "overall": [45, 45, 45]})
    test_only = rows_for("s1", "alphanet", base="crt", trial_id="t3", knobs={"k": 5},
                         test={"few": [40, 41, 42], "overall": [44.5, 44.5, 44.5]},
                         val={"few": [35, 35, 35], "overall": [42, 42, 42]})
    (g,), _ = analyse(_frame(ref, val_few, test_few, test_only), tolerance=1.0)
    rec = g.recommendation
    assert g.line(rec.chosen)["label"] == "alphanet(crt) k=3"
    assert {g.line(c)["label"] for c in rec.eligible} == {"alphanet(crt) k=3", "alphanet(crt) k=4"}
    # all three beat the base on few on test; the rule still goes by validation
    assert {g.line(c)["label"] for c in rec.beating} == {
        "alphanet(crt) k=3", "alphanet(crt) k=4", "alphanet(crt) k=5"}
