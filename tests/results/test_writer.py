"""Parquet result files: fixed schema, atomic per-trial files, page checksums, DuckDB."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.schema import required_columns


def _row(trial: str, seed: int, **kw):
    return {"sweep_id": "s1", "trial_id": trial, "seed": seed, "method": "alphanet", "status": "ok",
            "role": "configuration", "k": 3, "acc_few": 0.5 + seed / 10, **kw}


def test_write_read_roundtrip_keeps_types_and_nulls(tmp_path):
    layout = SweepLayout(str(tmp_path), "s1")
    writer.write_rows(layout, "trial-a", [_row("a", 0), _row("a", 1)])
    writer.write_rows(layout, "base-crt", [{"sweep_id": "s1", "trial_id": "base-crt", "seed": 0,
                                            "method": "crt", "role": "reference", "status": "ok",
                                            "acc_few": 0.3}])
    assert writer.existing_names(layout) == {"trial-a", "base-crt"}
    table = pq.read_table(f"{tmp_path}/sweeps/s1/results/base-crt.parquet")
    assert set(required_columns()) <= set(table.column_names)
    assert str(table.schema.field("k").type) == "int64"  # an all-null knob keeps its type
    assert str(table.schema.field("rho").type) == "double"
    assert str(table.schema.field("distance").type) == "string"
    assert pq.ParquetFile(f"{tmp_path}/sweeps/s1/results/trial-a.parquet").metadata.num_rows == 2
    df = writer.read_file(layout, "trial-a")
    assert sorted(df["acc_few"].round(3)) == [0.5, 0.6]


def test_files_carry_page_checksums(tmp_path):
    layout = SweepLayout(str(tmp_path), "s1")
    path = writer.write_rows(layout, "trial-a", [_row("a", 0)])
    data = bytearray(open(path, "rb").read())
    # flip one bit in the last byte of acc_few's column chunk (inside its data page)
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(0).column(meta.schema.names.index("acc_few"))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start + chunk.total_compressed_size - 1] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises((OSError, pa.ArrowException), match="(?i)checksum|crc"):
        writer.read_file(layout, "trial-a")


def test_rewriting_a_file_replaces_it_and_leaves_no_temp_files(tmp_path):
    layout = SweepLayout(str(tmp_path), "s1")
    writer.write_rows(layout, "trial-a", [_row("a", 0)])
    writer.write_rows(layout, "trial-a", [_row("a", 0), _row("a", 1)])
    results = tmp_path / "sweeps" / "s1" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["_checksums", "trial-a.parquet"]
    assert [p.name for p in (results / "_checksums").iterdir()] == ["trial-a.json"]
    assert len(writer.read_file(layout, "trial-a")) == 2
    assert len(pd.read_parquet(results)) == 2  # dataset readers skip the "_" directory
    writer.delete_rows(layout, "trial-a")
    assert writer.existing_names(layout) == set()
    assert list((results / "_checksums").iterdir()) == []


def test_a_flipped_bit_in_the_footer_is_caught_by_the_file_checksum(tmp_path):
    """Page checksums do not cover the footer, where column names live: a flipped bit
    there renames a column silently, unless the whole file's checksum is checked."""
    from explore.results.reader import read_rows

    layout = SweepLayout(str(tmp_path), "s1")
    writer.write_rows(layout, "trial-a", [_row("a", 0), _row("a", 1)])
    writer.write_rows(layout, "trial-b", [_row("b", 0)])
    path = tmp_path / "sweeps" / "s1" / "results" / "trial-a.parquet"
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    at = footer_start
    while (at := data.find(b"acc_few", at + 1)) > 0:  # its schema element and chunk path
        data[at + 6] = ord("x")  # acc_few -> acc_fex (the Arrow schema copy is base64)
    path.write_bytes(bytes(data))
    silent = pq.ParquetFile(path, page_checksum_verification=True)  # reads, renamed
    assert "acc_fex" in silent.schema.names and "acc_few" not in silent.schema.names
    result = read_rows(str(tmp_path / "sweeps" / "s1" / "results"))
    assert len(result.problems) == 1 and "trial-a.parquet: corrupt" in result.problems[0]
    assert set(result.rows["trial_id"]) == {"b"}


def test_duckdb_reads_the_results(tmp_path):
    layout = SweepLayout(str(tmp_path), "s1")
    writer.write_rows(layout, "trial-a", [_row("a", 0), _row("a", 1)])
    writer.write_rows(layout, "trial-b", [_row("b", 0, distance="cosine")])
    pattern = f"{tmp_path}/sweeps/s1/results/*.parquet"
    n, mean_few = duckdb.sql(f"select count(*), avg(acc_few) from read_parquet('{pattern}')").fetchall()[0]
    assert n == 3 and abs(mean_few - (0.5 + 0.6 + 0.5) / 3) < 1e-9
