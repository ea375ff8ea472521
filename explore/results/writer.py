"""Write a sweep's Parquet results (layout: :mod:`explore.results.layout`).

A file is written in a single atomic step (temp file + rename locally, a single PUT on S3),
so a crash never loses or half-writes finished rows, and a resumed sweep can tell what is
done. Files carry Parquet page checksums, verified when read (:mod:`explore.results.reader`),
so a corrupted file is reported, never averaged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from explore.results.layout import TRIAL_PREFIX, SweepLayout
from explore.results.schema import arrow_schema
from explore.store import uri as storage

__all__ = ["delete_rows", "existing_names", "finished_trials", "read_file", "rows_to_table",
           "write_rows"]


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
    """Atomically write ``rows`` as ``<results>/<name>.parquet``; returns its URI."""
    fs, root = storage.resolve(layout.results)
    path = f"{root}/{name}.parquet"
    table = rows_to_table(rows)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(root, recursive=True)
            tmp = f"{root}/.{name}.{uuid.uuid4().hex}.tmp"
            pq.write_table(table, tmp, filesystem=fs, write_page_checksum=True)
            fs.move(tmp, path)  # rename: readers see the old file or the whole new one
        else:
            pq.write_table(table, path, filesystem=fs, write_page_checksum=True)  # one PUT
    except OSError as exc:
        raise storage.describe_failure(exc, layout.results, "writing results") from None
    return layout.result_file(name)


def delete_rows(layout: SweepLayout, name: str) -> None:
    fs, root = storage.resolve(layout.results)
    try:
        fs.delete_file(f"{root}/{name}.parquet")
    except (FileNotFoundError, OSError):
        pass


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
