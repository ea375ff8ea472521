"""Write and read a sweep's Parquet results.

Layout: ``<storage_uri>/sweeps/<sweep_id>/results/<name>.parquet``, one file per
finished trial (``trial-<trial_id>``), per base model (``base-<name>``) and per failed
trial (``error-<trial_id>``). A trial's file is written when the trial finishes, in a
single atomic step (temp file + rename locally, a single PUT on S3), so a crash never
loses or half-writes finished rows, and a resumed sweep can tell what is done.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from explore.results.schema import REQUIRED_COLUMNS
from explore.store import uri as storage

_INT = {"seed", "k", "W", "best_epoch", "many_above", "few_below"}
_FLOAT_PREFIXES = ("acc_", "val_acc_", "top5_")
_FLOAT = {"rho", "beta", "lambda_s", "alpha", "tau", "train_seconds"}

SCHEMA = pa.schema(
    [
        pa.field(
            name,
            pa.int64()
            if name in _INT
            else pa.float64()
            if name in _FLOAT or name.startswith(_FLOAT_PREFIXES)
            else pa.string(),
        )
        for name in REQUIRED_COLUMNS
    ]
)


def sweep_uri(storage_uri: str, sweep_id: str) -> str:
    return storage.join(storage_uri, "sweeps", sweep_id)


def results_uri(storage_uri: str, sweep_id: str) -> str:
    return storage.join(sweep_uri(storage_uri, sweep_id), "results")


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows → Arrow table with the fixed schema for the required columns (so an
    all-null knob keeps its type) plus any extra columns, inferred."""
    extra = sorted({key for row in rows for key in row} - set(SCHEMA.names))
    arrays = [pa.array([row.get(f.name) for row in rows], type=f.type) for f in SCHEMA]
    fields = list(SCHEMA)
    for name in extra:
        arr = pa.array([row.get(name) for row in rows])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_rows(storage_uri: str, sweep_id: str, name: str, rows: Sequence[dict[str, Any]]) -> str:
    """Atomically write ``rows`` as ``<results>/<name>.parquet``; returns its URI."""
    fs, root = storage.resolve(results_uri(storage_uri, sweep_id))
    path = f"{root}/{name}.parquet"
    table = rows_to_table(rows)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(root, recursive=True)
            tmp = f"{root}/.{name}.{uuid.uuid4().hex}.tmp"
            pq.write_table(table, tmp, filesystem=fs)
            fs.move(tmp, path)  # rename: readers see the old file or the whole new one
        else:
            pq.write_table(table, path, filesystem=fs)  # one PUT: atomic on S3
    except OSError as exc:
        raise storage.describe_failure(exc, results_uri(storage_uri, sweep_id), "writing results") from None
    return storage.join(results_uri(storage_uri, sweep_id), f"{name}.parquet")


def delete_rows(storage_uri: str, sweep_id: str, name: str) -> None:
    fs, root = storage.resolve(results_uri(storage_uri, sweep_id))
    try:
        fs.delete_file(f"{root}/{name}.parquet")
    except (FileNotFoundError, OSError):
        pass


def existing_names(storage_uri: str, sweep_id: str) -> set[str]:
    """Names (without .parquet) of the result files already written."""
    fs, root = storage.resolve(results_uri(storage_uri, sweep_id))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return {i.base_name[: -len(".parquet")] for i in infos if i.base_name.endswith(".parquet")}


def read_results(uri: str) -> pd.DataFrame:
    """Every row under a results directory (local or s3://) as one DataFrame."""
    fs, root = storage.resolve(uri)
    dataset = pads.dataset(root, filesystem=fs, format="parquet", exclude_invalid_files=True)
    # Files may carry different extra columns: read with the union of their schemas.
    schemas = [frag.physical_schema for frag in dataset.get_fragments()]
    if schemas:
        dataset = pads.dataset(root, filesystem=fs, format="parquet", schema=pa.unify_schemas(schemas))
    return dataset.to_table().to_pandas()


def finished_trials(storage_uri: str, sweep_id: str) -> pd.DataFrame:
    """One line per finished trial (``trial-*`` files): trial_id, its knob values and the
    mean over seeds of every metric."""
    names = sorted(n for n in existing_names(storage_uri, sweep_id) if n.startswith("trial-"))
    if not names:
        return pd.DataFrame(columns=["trial_id"])
    rows = read_results(results_uri(storage_uri, sweep_id))
    rows = rows[rows["trial_id"].isin([n[len("trial-"):] for n in names])]
    numeric = rows.select_dtypes("number").columns
    first = rows.groupby("trial_id").first()
    first[list(numeric)] = rows.groupby("trial_id")[list(numeric)].mean()
    return first.reset_index()
