"""Find and read sweep results (Parquet) from local directories or S3.

A URI may point at a results directory (``.../sweeps/<id>/results``), a sweep directory
(``.../sweeps/<id>``) or a storage root that holds ``sweeps/*/results``. S3 endpoints and
credentials come from the standard AWS environment chain (``AWS_ENDPOINT_URL[_S3]``,
``AWS_ACCESS_KEY_ID``..., instance profiles), through ``pyarrow.fs.FileSystem.from_uri``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from explore.results.schema import KNOB_COLUMNS, METRIC_COLUMNS

# Columns the analysis reads. Provenance columns (params_json, code_version, ...) are kept
# when present but not required, so an analysis does not fail over bookkeeping fields.
ANALYSIS_ID_COLUMNS: tuple[str, ...] = ("sweep_id", "trial_id", "seed", "method", "base", "mode", "status")
ANALYSIS_REQUIRED_COLUMNS: tuple[str, ...] = ANALYSIS_ID_COLUMNS + KNOB_COLUMNS + METRIC_COLUMNS


class AnalyzeError(ValueError):
    """Input the analysis cannot use; the message says what to fix (shown as one line)."""


def _filesystem_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        uri = Path(uri).expanduser().resolve().as_uri()
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as e:
        raise AnalyzeError(f"cannot open {uri!r}: {e}") from None
    return fs, path.rstrip("/")


def find_result_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """Parquet files of the results under ``uri``, sorted.

    Files inside a ``results`` directory are preferred, so a storage root that also holds
    other Parquet files (Tune's outputs, feature shards) contributes only its results.
    """
    fs, root = _filesystem_and_path(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise AnalyzeError(f"{uri}: no such file or directory")
    if info.type == pafs.FileType.File:
        files = [root] if root.endswith(".parquet") else []
    else:
        listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        files = sorted(f.path for f in listing
                       if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
        if PurePosixPath(root).name != "results":
            in_results = [f for f in files
                          if "results" in PurePosixPath(f).relative_to(root).parts[:-1]]
            files = in_results or files
    if not files:
        raise AnalyzeError(
            f"{uri}: no Parquet files found (expected <root>/sweeps/<sweep_id>/results/*.parquet)"
        )
    return fs, files


def read_results(uris: list[str]) -> pd.DataFrame:
    """All result rows under ``uris`` as one DataFrame, checked for the analysis columns.

    Files written by different trials may type an all-null column as Arrow ``null``;
    their schemas are unified permissively so such columns take the type of the others.
    """
    tables = []
    for uri in uris:
        fs, files = find_result_files(uri)
        dataset = ds.dataset(files, filesystem=fs, format="parquet")
        schemas = [frag.physical_schema for frag in dataset.get_fragments()]
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise AnalyzeError(f"{uri}: Parquet files have incompatible schemas: {e}") from None
        missing = [c for c in ANALYSIS_REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise AnalyzeError(
                f"{uri}: not explore results, missing required columns: {', '.join(missing)}"
            )
        tables.append(ds.dataset(files, filesystem=fs, format="parquet", schema=schema).to_table())
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas()
