"""A trial without Ray: knobs → recipe → rows, and the summary Tune and Optuna see."""

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
from explore.sweep.trial import TrialContext, rows_of_trial, summarize_rows
from explore.training.head import HeadTrainConfig
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
def test_a_trial_writes_one_row_per_seed_and_reuses_them(store_and_keys, method, knobs):
    root = store_and_keys
    prov = Provenance(sweep_id="s1", space="x", mode="head", dataset="synthetic",
                      feature_key="features", thresholds=SplitThresholds(), code_version="v",
                      base="crt", base_key="base")
    settings = {"epochs": 6} if method == "alphanet" else {}
    ctx = TrialContext(layout=SweepLayout(root, "s1"), provenance=prov, method=method,
                       method_settings=settings, head=HEAD, seeds=(0, 1))
    rows = rows_of_trial(ctx, knobs, f"t-{method}")
    assert [r["seed"] for r in rows] == [0, 1]
    for name, value in knobs.items():
        assert all(r[name] == value for r in rows)
    assert all(r["role"] == "configuration" and r["base"] == "crt" for r in rows)
    assert all(0 <= r["acc_overall"] <= 1 for r in rows)
    again = rows_of_trial(ctx, knobs, f"t-{method}")  # read back, not retrained
    np.testing.assert_allclose([r["acc_overall"] for r in again], [r["acc_overall"] for r in rows])
    assert json.loads(again[0]["params_json"])["params"] == json.loads(rows[0]["params_json"])["params"]
