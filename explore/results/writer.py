"""Write a sweep's Parquet results (layout: :mod:`explore.results.layout`).

A file is written in a single atomic step (temp file + rename locally, a single PUT on S3),
so a crash never loses or half-writes finished rows, and a resumed sweep can tell what is
done. Files carry Parquet page checksums, and an xxh3-128 checksum of the whole file is kept
beside it (``results/_checksums/<name>.json``, hidden from Parquet readers by its ``_``), so a
flipped bit anywhere — a page or the footer, where a column's name lives — is reported by
:mod:`explore.results.reader`, never averaged or silently renamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from explore.results.layout import TRIAL_PREFIX, SweepLayout
from explore.results.schema import arrow_schema
from explore.store import uri as storage
from explore.store.documents import write_bytes, write_json

__all__ = ["CHECKSUMS_DIR", "checksum_uri", "delete_rows", "existing_names", "file_checksum",
           "finished_trials", "read_file", "rows_to_table", "write_rows"]

CHECKSUMS_DIR = "_checksums"
"""Beside the result files; Parquet dataset readers (pyarrow, pandas) skip ``_`` names."""


def file_checksum(data: Any) -> str:
    import xxhash

    return str(xxhash.xxh3_128_hexdigest(memoryview(data)))


def checksum_uri(results_uri: str, name: str) -> str:
    """Where the whole-file checksum of result file ``name`` (without .parquet) lives."""
    return storage.join(results_uri, CHECKSUMS_DIR, f"{name}.json")


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows → Arrow table with the fixed types of the required columns plus any extra
    columns, inferred."""
    schema = arrow_schema()
    extra = sorted({key for row in rows for key in row} - set(schema.names))
    arrays = [pa.array([row.get(f.name) for row in rows], type=f.type) for f in schema]
    fields = list(schema)
    for name in extra:
        arr = pa.array([row.get(name) for row in rows])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_rows(layout: SweepLayout, name: str, rows: Sequence[dict[str, Any]]) -> str:
    """Atomically write ``rows`` as ``<results>/<name>.parquet``, then its checksum; returns
    its URI. (A crash between the two leaves a file without a checksum: read unverified,
    as files written before checksums were kept.)"""
    sink = pa.BufferOutputStream()
    pq.write_table(rows_to_table(rows), sink, write_page_checksum=True)
    data = sink.getvalue()
    _delete(checksum_uri(layout.results, name))  # a rewrite never meets a stale checksum
    write_bytes(layout.result_file(name), data.to_pybytes(), "writing results")
    write_json(checksum_uri(layout.results, name),
               {"xxh3_128": file_checksum(data), "bytes": data.size}, "writing results")
    return layout.result_file(name)


def _delete(uri: str) -> None:
    fs, path = storage.resolve(uri)
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def delete_rows(layout: SweepLayout, name: str) -> None:
    _delete(layout.result_file(name))
    _delete(checksum_uri(layout.results, name))


def existing_names(layout: SweepLayout) -> set[str]:
    """Names (without .parquet) of the result files already written."""
    fs, root = storage.resolve(layout.results)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as exc:
        raise storage.describe_failure(exc, layout.results, "listing results") from None
    return {i.base_name[: -len(".parquet")] for i in infos if i.base_name.endswith(".parquet")}


def read_file(layout: SweepLayout, name: str) -> pd.DataFrame:
    """One result file's rows, page checksums verified."""
    fs, path = storage.resolve(layout.result_file(name))
    return pq.read_table(path, filesystem=fs, page_checksum_verification=True).to_pandas()


def finished_trials(layout: SweepLayout) -> pd.DataFrame:
    """One line per finished trial (``trial-*`` files): trial_id, its knob values and the
    mean over seeds of every metric."""
    names = sorted(n for n in existing_names(layout) if n.startswith(TRIAL_PREFIX))
    if not names:
        return pd.DataFrame(columns=["trial_id"])
    rows = pd.concat([read_file(layout, n) for n in names], ignore_index=True)
    numeric = rows.select_dtypes("number").columns
    first = rows.groupby("trial_id").first()
    first[list(numeric)] = rows.groupby("trial_id")[list(numeric)].mean()
    return first.reset_index()
