"""Parquet result files: fixed schema, atomic per-trial files, readable as one dataset."""

from __future__ import annotations

import duckdb
import pyarrow.parquet as pq

from explore.results import writer
from explore.results.schema import REQUIRED_COLUMNS


def _row(trial: str, seed: int, **kw):
    return {"sweep_id": "s1", "trial_id": trial, "seed": seed, "method": "alphanet", "status": "ok",
            "k": 3, "acc_few": 0.5 + seed / 10, **kw}


def test_write_read_roundtrip_keeps_types_and_nulls(tmp_path):
    root = str(tmp_path)
    writer.write_rows(root, "s1", "trial-a", [_row("a", 0), _row("a", 1)])
    writer.write_rows(root, "s1", "base-crt", [{"sweep_id": "s1", "trial_id": "base", "seed": 0,
                                                "method": "crt", "status": "ok", "acc_few": 0.3}])
    assert writer.existing_names(root, "s1") == {"trial-a", "base-crt"}
    df = writer.read_results(writer.results_uri(root, "s1"))
    assert len(df) == 3 and set(REQUIRED_COLUMNS) <= set(df.columns)
    table = pq.read_table(f"{tmp_path}/sweeps/s1/results/base-crt.parquet")
    assert str(table.schema.field("k").type) == "int64"  # an all-null knob keeps its type
    assert str(table.schema.field("rho").type) == "double"
    assert sorted(df["acc_few"].round(3)) == [0.3, 0.5, 0.6]


def test_rewriting_a_file_replaces_it_and_leaves_no_temp_files(tmp_path):
    root = str(tmp_path)
    writer.write_rows(root, "s1", "trial-a", [_row("a", 0)])
    writer.write_rows(root, "s1", "trial-a", [_row("a", 0), _row("a", 1)])
    files = sorted(p.name for p in (tmp_path / "sweeps" / "s1" / "results").iterdir())
    assert files == ["trial-a.parquet"]
    assert len(writer.read_results(writer.results_uri(root, "s1"))) == 2
    writer.delete_rows(root, "s1", "trial-a")
    assert writer.existing_names(root, "s1") == set()


def test_duckdb_reads_the_results(tmp_path):
    root = str(tmp_path)
    writer.write_rows(root, "s1", "trial-a", [_row("a", 0), _row("a", 1)])
    writer.write_rows(root, "s1", "trial-b", [_row("b", 0, distance="cosine")])
    pattern = f"{tmp_path}/sweeps/s1/results/*.parquet"
    n, mean_few = duckdb.sql(f"select count(*), avg(acc_few) from read_parquet('{pattern}')").fetchall()[0]
    assert n == 3 and abs(mean_few - (0.5 + 0.6 + 0.5) / 3) < 1e-9
