"""Parquet result files: fixed schema, atomic per-trial files, page checksums, DuckDB."""

from __future__ import annotations

import duckdb
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
    files = sorted(p.name for p in (tmp_path / "sweeps" / "s1" / "results").iterdir())
    assert files == ["trial-a.parquet"]
    assert len(writer.read_file(layout, "trial-a")) == 2
    writer.delete_rows(layout, "trial-a")
    assert writer.existing_names(layout) == set()


def test_duckdb_reads_the_results(tmp_path):
    layout = SweepLayout(str(tmp_path), "s1")
    writer.write_rows(layout, "trial-a", [_row("a", 0), _row("a", 1)])
    writer.write_rows(layout, "trial-b", [_row("b", 0, distance="cosine")])
    pattern = f"{tmp_path}/sweeps/s1/results/*.parquet"
    n, mean_few = duckdb.sql(f"select count(*), avg(acc_few) from read_parquet('{pattern}')").fetchall()[0]
    assert n == 3 and abs(mean_few - (0.5 + 0.6 + 0.5) / 3) < 1e-9
