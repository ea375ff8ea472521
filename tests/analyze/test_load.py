"""Loading: the row contract for new and old files, knob lists, sweep.json facts."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq

from explore.analyze.load import knob_names, load, normalize
from tests.analyze.crafted import rows_for, table, write_sweep


def test_old_format_role_is_derived_from_base(tmp_path):
    rows = rows_for("s1", "crt", trial_id="crt", seeds=(0,))
    rows += rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3})
    write_sweep(tmp_path, "s1", rows, old_format=True)
    loaded = load(str(tmp_path))
    df = loaded.rows
    assert "role" in df and df["role"].tolist() == ["reference"] + ["configuration"] * 3
    assert df["deterministic"].tolist() == [False] * 4
    assert loaded.problems == []


def test_knob_columns_list_decides_the_knobs():
    row = pd.Series({"k": 3, "distance": None, "rho": 0.5, "gamma": 2,
                     "knob_columns": json.dumps(["gamma", "k", "rho"])})
    assert knob_names(row) == ["k", "rho", "gamma"]  # known knobs first, null ones dropped
    old = pd.Series({"k": 3, "distance": "cosine", "rho": None, "gamma": 2})
    assert knob_names(old) == ["k", "distance"]  # no list: the known knobs only


def test_normalize_fills_missing_columns_and_status():
    df = normalize(pd.DataFrame([{"sweep_id": "s", "trial_id": "t", "seed": 0, "method": "crt",
                                  "status": None, "acc_few": 0.1}]))
    assert df.loc[0, "status"] == "<null>" and df.loc[0, "role"] == "reference"
    assert df.loc[0, "mode"] == "head" and pd.isna(df.loc[0, "acc_overall"])


def test_sweep_meta_from_sweep_json(tmp_path):
    rows = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3})
    write_sweep(tmp_path, "s1", rows, overrides=["repeats=3", "dataset=cifar10_lt"])
    meta = load(str(tmp_path / "sweeps" / "s1" / "results")).sweeps["s1"]
    assert meta.space_name == "alphanet_k"
    assert meta.storage_uri == str(tmp_path)
    assert meta.overrides == ("repeats=3", "dataset=cifar10_lt")


def test_sweep_meta_without_sweep_json_falls_back_to_rows_and_location(tmp_path):
    rows = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3}, space="alphanet_rho")
    results = tmp_path / "store" / "sweeps" / "s1" / "results"
    results.mkdir(parents=True)
    pq.write_table(table(rows), results / "trial-t1.parquet")
    meta = load(str(tmp_path / "store")).sweeps["s1"]
    assert meta.space_name == "alphanet_rho"
    assert meta.storage_uri == str(tmp_path / "store")
    assert meta.overrides is None
