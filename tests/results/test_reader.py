"""explore.results.reader on real Parquet files: good ones, a truncated one, one with a
flipped bit in a data page, a non-Parquet file, a foreign Parquet file, and S3 (moto)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from explore.results.reader import ResultsReadError, read_rows
from tests.analyze.crafted import rows_for, table, write_sweep

# a value that appears once in the file's bytes: not a page min/max, so not in any statistics
MARKER = 0.123456789


def _sweep(root: Path) -> Path:
    rows = rows_for("s1", "crt", trial_id="crt", test={"few": [10, 11, 12]})
    rows += rows_for("s1", "alphanet", base="crt", trial_id="t1",
                     knobs={"k": 5, "distance": "cosine"}, test={"few": [15, 16, 18]})
    rows += rows_for("s1", "swrm", base="crt", trial_id="t2", knobs={"W": 3, "beta": 0.5})
    return write_sweep(root, "s1", rows)


def _marked_file(path: Path) -> float:
    """A one-trial result file, plain-encoded and uncompressed so a data value's bytes can
    be found and flipped; returns the value of acc_few that the flip targets."""
    rows = rows_for("s1", "alphanet", base="crt", trial_id="t9", knobs={"k": 9},
                    test={"few": [10.0, MARKER * 100, 30.0]})
    pq.write_table(table(rows), path, write_page_checksum=True, compression="none",
                   use_dictionary=False)
    return rows[1]["acc_few"]


def test_reads_a_storage_root_a_sweep_dir_and_a_results_dir(tmp_path):
    sweep = _sweep(tmp_path / "store")
    for uri in (tmp_path / "store", sweep, sweep / "results"):
        result = read_rows(str(uri))
        assert result.problems == []
        assert len(result.rows) == 9
        assert sorted(Path(f).name for f in result.files) == [
            "base-crt.parquet", "trial-t1.parquet", "trial-t2.parquet"]
        assert result.sweep_dirs == {"s1": str(sweep)}


def test_knobs_have_their_natural_types(tmp_path):
    df = read_rows(str(_sweep(tmp_path / "store"))).rows
    assert isinstance(df["k"].dtype, pd.Int64Dtype)
    assert isinstance(df["W"].dtype, pd.Int64Dtype)
    assert isinstance(df["seed"].dtype, pd.Int64Dtype)
    assert df.loc[df["trial_id"] == "t1", "k"].tolist() == [5, 5, 5]
    assert str(df.loc[df["trial_id"] == "t1", "k"].iloc[0]) == "5"  # not 5.0
    assert df.loc[df["trial_id"] == "t2", "W"].tolist() == [3, 3, 3]
    assert df.loc[df["trial_id"] == "t2", "k"].isna().all()
    assert df["acc_few"].dtype == "float64"
    assert isinstance(df["deterministic"].dtype, pd.BooleanDtype)


def test_integer_knob_stored_as_float_reads_as_int(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    rows = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 4})
    t = table(rows)
    t = t.set_column(t.schema.get_field_index("k"), "k", pa.array([4.0, 4.0, 4.0]))
    pq.write_table(t, d / "trial-t1.parquet")
    df = read_rows(str(d)).rows
    assert isinstance(df["k"].dtype, pd.Int64Dtype) and df["k"].tolist() == [4, 4, 4]


def test_truncated_file_is_named_and_the_rest_is_read(tmp_path):
    sweep = _sweep(tmp_path / "store")
    target = sweep / "results" / "trial-t2.parquet"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    result = read_rows(str(tmp_path / "store"))
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"{target}: unreadable (")
    assert "\n" not in result.problems[0]
    assert set(result.rows["trial_id"]) == {"crt", "t1"}
    with pytest.raises(ResultsReadError, match="trial-t2.parquet: unreadable"):
        read_rows(str(tmp_path / "store"), strict=True)


def test_flipped_bit_in_a_data_page_is_reported_never_averaged(tmp_path):
    sweep = _sweep(tmp_path / "store")
    target = sweep / "results" / "trial-t9.parquet"
    value = _marked_file(target)
    data = bytearray(target.read_bytes())
    offsets = [i for i in range(len(data)) if data[i:i + 8] == struct.pack("<d", value)]
    assert len(offsets) == 1  # the value itself, inside the data page of acc_few
    data[offsets[0]] ^= 0x01  # lowest mantissa bit: a plausible, silently wrong number
    target.write_bytes(bytes(data))

    # Without checksum verification the corruption reads as data (what must never happen).
    silent = pq.read_table(target).column("acc_few").to_pylist()
    assert silent[1] != value and silent[1] == pytest.approx(value, rel=1e-12)

    result = read_rows(str(tmp_path / "store"))
    assert len(result.problems) == 1
    assert str(target) in result.problems[0] and "CRC" in result.problems[0]
    assert "t9" not in set(result.rows["trial_id"])
    assert len(result.rows) == 9
    with pytest.raises(ResultsReadError, match="--strict: .*trial-t9.parquet"):
        read_rows(str(sweep), strict=True)


def test_non_parquet_files_are_never_read(tmp_path):
    sweep = _sweep(tmp_path / "store")
    (sweep / "results" / "notes.txt").write_text("not a table")
    (sweep / "results" / ".trial-x.1234.tmp").write_bytes(b"PAR1 half-written")
    result = read_rows(str(sweep), strict=True)  # strict: nothing to complain about
    assert result.problems == [] and len(result.rows) == 9
    # the sweep dir's own files (sweep.json, optuna.journal) are not results either
    assert all(f.endswith(".parquet") for f in result.files)


def test_foreign_parquet_file_is_named_with_its_missing_columns(tmp_path):
    sweep = _sweep(tmp_path / "store")
    pq.write_table(pa.table({"sweep_id": ["a"], "acc_few": [0.1]}),
                   sweep / "results" / "foreign.parquet")
    result = read_rows(str(sweep))
    (problem,) = result.problems
    assert "foreign.parquet: not explore results" in problem
    assert "acc_overall" in problem and "status" in problem and "sweep_id," not in problem


def test_nothing_readable_missing_path_and_empty_dir_are_errors(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    with pytest.raises(ResultsReadError, match="no Parquet files found"):
        read_rows(str(d))
    (d / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(ResultsReadError, match="no result file could be read .*x.parquet"):
        read_rows(str(d))
    with pytest.raises(ResultsReadError, match="no such file or directory"):
        read_rows(str(tmp_path / "nope"))


def test_files_with_different_columns_are_read_together(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    old = rows_for("s1", "crt", trial_id="crt")
    new = rows_for("s1", "lfm", base="crt", trial_id="t1", knobs={"alpha": 0.5, "gamma": 7})
    for r in new:
        r["knob_columns"] = json.dumps(["alpha", "gamma"])
    t = table(new)
    t = t.append_column("gamma", pa.array([7, 7, 7], pa.int64()))
    pq.write_table(table(old, old_format=True), d / "base-crt.parquet")
    pq.write_table(t, d / "trial-t1.parquet")
    df = read_rows(str(d)).rows
    assert len(df) == 6
    assert df["role"].isna().sum() == 3  # the old file has no role column
    assert isinstance(df["gamma"].dtype, pd.Int64Dtype)
    assert df["gamma"].dropna().tolist() == [7, 7, 7]


def test_file_whose_column_types_conflict_is_named(tmp_path):
    sweep = _sweep(tmp_path / "store")
    rows = rows_for("s1", "alphanet", base="crt", trial_id="t7", knobs={"k": 7})
    t = table(rows)
    t = t.set_column(t.schema.get_field_index("k"), "k", pa.array(["seven"] * 3))
    pq.write_table(t, sweep / "results" / "trial-t7.parquet")
    result = read_rows(str(sweep))
    (problem,) = result.problems
    assert "trial-t7.parquet: column types conflict with the other files" in problem
    assert len(result.rows) == 9


@pytest.mark.s3
def test_reads_from_s3_and_names_a_corrupted_object(s3_bucket, tmp_path):
    fs, _ = pafs.FileSystem.from_uri(f"s3://{s3_bucket}/x")  # endpoint + keys from the env
    local = _sweep(tmp_path / "store")
    for f in sorted((local / "results").iterdir()):
        with fs.open_output_stream(f"{s3_bucket}/root/sweeps/s1/results/{f.name}") as out:
            out.write(f.read_bytes())
    bad = tmp_path / "bad.parquet"
    value = _marked_file(bad)
    data = bytearray(bad.read_bytes())
    data[data.find(struct.pack("<d", value))] ^= 0x01
    with fs.open_output_stream(f"{s3_bucket}/root/sweeps/s1/results/trial-t9.parquet") as out:
        out.write(bytes(data))
    with fs.open_output_stream(f"{s3_bucket}/root/sweeps/s1/optuna.journal") as out:
        out.write(b"{}\n")
    result = read_rows(f"s3://{s3_bucket}/root")
    assert len(result.rows) == 9
    (problem,) = result.problems
    assert problem.startswith(f"s3://{s3_bucket}/root/sweeps/s1/results/trial-t9.parquet: ")
    assert result.sweep_dirs == {"s1": f"s3://{s3_bucket}/root/sweeps/s1"}
