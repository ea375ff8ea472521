"""Rows are built in one place, from typed provenance, knob columns and the outcome."""

from __future__ import annotations

import json

from explore.recipes import get_recipe
from explore.results.rows import Provenance, build_row
from explore.splits import SplitThresholds
from explore.training.head_config import HeadTrainConfig
from explore.training.outcome import SeedResult

PROV = Provenance(sweep_id="s", space="swrm_window", mode="head", dataset="d", feature_key="fk",
                  thresholds=SplitThresholds(), code_version="v", base="ce", base_key="bk")


def test_a_configuration_row_has_its_knobs_metrics_and_provenance():
    recipe = get_recipe("swrm")
    params = recipe.params({"W": 4, "beta": 2.5})
    result = SeedResult(seed=3, best_epoch=7, test={"acc_overall": 0.5, "acc_few": 0.25},
                        val={"acc_overall": 0.6, "top5_overall": 0.9}, records={"margin_mean": 1.5})
    row = build_row(PROV, trial_id="t1", method="swrm", role="configuration", result=result,
                    knobs=recipe.columns(params), params=params, training=HeadTrainConfig(),
                    resolved={"tsne_perplexity": 8.0})
    assert (row["W"], row["beta"], row["seed"], row["best_epoch"]) == (4, 2.5, 3, 7)
    assert (row["base"], row["base_key"], row["role"]) == ("ce", "bk", "configuration")
    assert row["acc_few"] == 0.25 and row["val_acc_overall"] == 0.6
    assert "val_top5_overall" not in row  # only accuracies are copied from validation
    assert json.loads(row["knob_columns"]) == ["W", "beta", "components", "margin_sign"]
    details = json.loads(row["params_json"])
    assert details["params"]["W"] == 4 and details["training"]["epochs"] == 30
    assert details["resolved"] == {"tsne_perplexity": 8.0, "margin_mean": 1.5}


def test_a_reference_row_names_no_base():
    row = build_row(PROV, trial_id="base-ce", method="ce", role="reference",
                    result=SeedResult(seed=0, best_epoch=0, test={}, val={}), knobs={},
                    deterministic=True)
    assert row["base"] is None and row["deterministic"] is True and row["role"] == "reference"
