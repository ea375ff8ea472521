"""Configuration summaries: mean ± std over seeds in points, computed here by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from explore.analyze.load import normalize
from explore.analyze.summary import (
    mean_std,
    mean_std_table,
    pareto_front,
    summarize,
    to_text,
    with_configurations,
)
from tests.analyze.crafted import rows_for


def _summary(*parts: list[dict]) -> pd.DataFrame:
    rows = normalize(pd.DataFrame([r for p in parts for r in p]))
    return summarize(with_configurations(rows[rows["status"] == "ok"]))


def test_mean_and_sample_std_in_points_by_hand():
    s = _summary(
        rows_for("s1", "crt", trial_id="crt", test={"few": [10, 11, 12]}),
        rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 8, "distance": "cosine"},
                 test={"few": [15, 16, 20]}, val={"overall": [44, 45, 46]}),
    )
    assert list(s["label"]) == ["crt (reference)", "alphanet(crt) k=8 distance=cosine"]
    a = s.iloc[1]
    assert a["n_seeds"] == 3 and a["seeds"] == (0, 1, 2)
    assert a["acc_few_mean"] == pytest.approx(17.0)
    # deviations -2, -1, 3: sum of squares 14, ddof 1 -> sqrt(7)
    assert a["acc_few_std"] == pytest.approx(math.sqrt(7))
    assert a["val_acc_overall_mean"] == pytest.approx(45.0)
    assert s.iloc[0]["acc_few_std"] == pytest.approx(1.0)


def test_one_seed_std_is_a_dash_everywhere():
    s = _summary(rows_for("s1", "crt", trial_id="crt", seeds=(0,), test={"few": [10]}))
    assert math.isnan(s.iloc[0]["acc_few_std"])
    assert mean_std(10.0, math.nan) == "10.00 ± –"
    table = mean_std_table(s)
    assert table.loc[0, "few"] == "10.00 ± –"
    assert "10.00 ± –" in to_text(table)


def test_repeated_configuration_rows_on_one_seed_are_averaged():
    a = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3}, test={"few": [10, 20]},
                 seeds=(0, 1))
    b = rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 3}, test={"few": [14, 20]},
                 seeds=(0, 1))
    s = _summary(a, b)
    (line,) = s.itertuples()
    assert line.n_seeds == 2 and line.n_rows == 4
    assert line.acc_few_mean == pytest.approx(16.0)  # seed 0: (10+14)/2 = 12, seed 1: 20
    assert line.acc_few_std == pytest.approx(math.sqrt(32))


def test_order_reference_first_then_validation_overall():
    s = _summary(
        rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 2}, val={"overall": [40] * 3}),
        rows_for("s1", "alphanet", base="crt", trial_id="t2", knobs={"k": 3}, val={"overall": [47] * 3}),
        rows_for("s1", "crt", trial_id="crt", val={"overall": [30] * 3}),
    )
    assert list(s["label"]) == ["crt (reference)", "alphanet(crt) k=3", "alphanet(crt) k=2"]


def test_knob_labels_use_natural_types_and_knob_columns():
    rows = rows_for("s1", "swrm", base="crt", trial_id="t1", knobs={"W": 3, "beta": 0.5})
    for r in rows:
        r["W"] = 3.0  # as an older reader would hand it over
    s = _summary(rows)
    assert s.iloc[0]["label"] == "swrm(crt) W=3 beta=0.5"
    assert s.iloc[0]["knob_items"] == (("W", 3), ("beta", 0.5))


def test_pareto_front_by_hand():
    pts = pd.DataFrame({"x": [50, 40, 30, 45, 50, 20, np.nan], "y": [10, 30, 30, 5, 10, 35, 90]})
    # (50,10) twice: ties do not dominate each other; (30,30) is beaten by (40,30);
    # (45,5) by (50,10); NaN is never on the front.
    assert pareto_front(pts, "x", "y").tolist() == [True, True, False, False, True, True, False]
