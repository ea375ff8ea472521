"""Read sweep results robustly: file by file, page checksums verified, problems named.

A URI may point at a results directory (``<root>/sweeps/<id>/results``), a sweep directory
(``<root>/sweeps/<id>``), a storage root holding ``sweeps/*/results``, or one ``.parquet``
file; local paths and ``s3://`` go through :func:`explore.store.uri.resolve`. Only files
named ``*.parquet`` are opened (a sweep directory also holds ``sweep.json`` and the Optuna
journal). Each file is read on its own with Parquet page-checksum verification, so a file
that is truncated, has a flipped bit in a page (when written with ``write_page_checksum``),
or is not explore results is named in one line of :attr:`ReadResult.problems` and left out,
while the other files are read. Files written without page checksums cannot be checked
this way: Parquet stores no checksum to compare with.

Types: integer columns (``seed``, knobs ``k`` and ``W``, ...) come back as pandas nullable
``Int64`` (so ``k`` reads 5, not 5.0, even where other rows have it null), booleans as
nullable ``boolean``, metrics as ``float64``.

>>> result = read_rows("explore-store")               # doctest: +SKIP
>>> for line in result.problems: print(line)          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from explore.results.schema import METRIC_COLUMNS
from explore.store import uri as storage

__all__ = [
    "INTEGER_KNOBS",
    "NEEDED_COLUMNS",
    "ReadResult",
    "ResultFile",
    "ResultsReadError",
    "find_result_files",
    "read_rows",
]

NEEDED_COLUMNS: tuple[str, ...] = (
    "sweep_id", "trial_id", "seed", "method", "base", "status", *METRIC_COLUMNS,
)
"""A Parquet file without all of these is not explore results (knob and provenance columns
may be missing: a missing column reads as null)."""

INTEGER_KNOBS: frozenset[str] = frozenset({"k", "W"})
"""Knobs that are integers by definition; files that stored them as float are read as Int64."""


class ResultsReadError(ValueError):
    """Results that cannot be read at all (or, with ``strict``, not every file); one line."""


@dataclass(frozen=True)
class ReadResult:
    """The rows read, one line per file left out, and where each sweep's directory is."""

    rows: pd.DataFrame
    problems: list[str]
    """One line per file left out: ``<file uri>: <why>``."""
    files: list[str]
    """URIs of the files whose rows are in ``rows``."""
    sweep_dirs: dict[str, str] = field(default_factory=dict)
    """sweep_id → URI of the sweep directory its results were found in (for ``sweep.json``)."""


@dataclass(frozen=True)
class ResultFile:
    """One result file: its filesystem, path in it, URI as shown, and its sweep directory."""

    fs: pafs.FileSystem
    path: str
    uri: str
    sweep_dir: str | None
    """URI of the sweep directory when the file lies in ``<sweep>/results/``."""


def _display(uri: str, root: str, path: str) -> str:
    return storage.join(uri, path[len(root):]) if path.startswith(root) else path


def find_result_files(uri: str) -> list[ResultFile]:
    """The result Parquet files under ``uri``, sorted.

    Under a directory not itself named ``results``, only files directly inside a ``results``
    directory count when there are any, so a storage root that also holds other Parquet
    files (Tune's outputs) contributes only its results. Hidden files are skipped.
    """
    try:
        fs, root = storage.resolve(uri)
    except ValueError as exc:
        raise ResultsReadError(str(exc)) from None
    root = root.rstrip("/") or root
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise ResultsReadError(f"{uri}: no such file or directory")
        if info.type == pafs.FileType.File:
            if not root.endswith(".parquet"):
                raise ResultsReadError(f"{uri}: not a Parquet file (*.parquet)")
            paths = [root]
        else:
            listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            paths = sorted(
                f.path for f in listing
                if f.type == pafs.FileType.File and f.path.endswith(".parquet")
                and not f.base_name.startswith(".")
            )
    except OSError as exc:
        raise ResultsReadError(str(storage.describe_failure(exc, uri, "listing results"))) from None
    if PurePosixPath(root).name != "results" and info.type != pafs.FileType.File:
        in_results = [p for p in paths if PurePosixPath(p).parent.name == "results"]
        paths = in_results or paths
    if not paths:
        raise ResultsReadError(
            f"{uri}: no Parquet files found (expected <root>/sweeps/<sweep_id>/results/*.parquet)"
        )
    found = []
    for p in paths:
        parent = PurePosixPath(p).parent
        sweep_dir = (
            _display(uri, root, str(parent.parent)) if parent.name == "results" else None
        )
        found.append(ResultFile(fs=fs, path=p, uri=_display(uri, root, p), sweep_dir=sweep_dir))
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return storage.redact(text.splitlines()[0] if text else type(exc).__name__)


def _read_one(found: ResultFile) -> tuple[pa.Table | None, str | None]:
    """(table, None) or (None, problem line). The whole file's checksum, when one was kept
    beside it, is checked first: page checksums do not cover the footer."""
    try:
        with found.fs.open_input_file(found.path) as f:
            data = f.read_buffer(f.size())
        mismatch = _checksum_mismatch(found, data)
        if mismatch:
            return None, f"{found.uri}: corrupt ({mismatch})"
        table = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True).read()
    except (OSError, pa.ArrowException, ValueError) as exc:
        return None, f"{found.uri}: unreadable ({_first_line(exc)})"
    missing = [c for c in NEEDED_COLUMNS if c not in table.column_names]
    if missing:
        return None, (
            f"{found.uri}: not explore results (missing columns: {', '.join(missing)})"
        )
    return table, None


def _checksum_mismatch(found: ResultFile, data: pa.Buffer) -> str | None:
    """Why the file differs from the checksum kept beside it (None: it matches, or none
    was kept)."""
    from explore.results.writer import CHECKSUMS_DIR, file_checksum
    from explore.store.documents import read_json

    path = PurePosixPath(found.path)
    if path.parent.name != "results":
        return None
    try:
        kept = read_json(storage.join(found.uri.rsplit("/", 1)[0], CHECKSUMS_DIR,
                                      f"{path.stem}.json"), "reading a result checksum")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"its checksum file is unreadable: {_first_line(exc)}"
    if kept.get("bytes") != data.size or kept.get("xxh3_128") != file_checksum(data):
        return (f"{data.size} bytes whose xxh3-128 differs from the {kept.get('bytes')} bytes "
                "written")
    return None


def _int_types(t: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    return None


def _natural_types(df: pd.DataFrame) -> pd.DataFrame:
    for col in METRIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in (*INTEGER_KNOBS, "seed"):
        if col not in df or isinstance(df[col].dtype, pd.Int64Dtype):
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        present = values.dropna()
        if (present == present.round()).all():
            df[col] = values.astype("Int64")
    return df


def read_rows(uris: str | Sequence[str], strict: bool = False) -> ReadResult:
    """Every result row under ``uris`` (see the module docstring), one DataFrame.

    Unreadable files and files that are not explore results are left out and named in
    ``problems``; with ``strict`` any such file raises :class:`ResultsReadError` instead.
    It is raised too when a URI does not exist or holds no Parquet file, or when no file
    could be read. Columns missing from some files read as null there.
    """
    uri_list = [uris] if isinstance(uris, str) else list(uris)
    found: list[ResultFile] = []
    for uri in uri_list:
        found += find_result_files(uri)
    tables: list[pa.Table] = []
    files: list[str] = []
    problems: list[str] = []
    sweep_dirs: dict[str, str] = {}
    schema: pa.Schema | None = None
    for f in found:
        table, problem = _read_one(f)
        if table is None:
            problems.append(str(problem))
            continue
        try:
            # Files of one sweep may type an all-null column as Arrow null; promote it.
            merged = table.schema if schema is None else pa.unify_schemas(
                [schema, table.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            problems.append(f"{f.uri}: column types conflict with the other files "
                            f"({_first_line(exc)})")
            continue
        schema = merged
        tables.append(table)
        files.append(f.uri)
        if f.sweep_dir is not None:
            for sweep_id in _distinct_text(table.column("sweep_id")):
                sweep_dirs.setdefault(sweep_id, f.sweep_dir)
    if strict and problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ResultsReadError(f"--strict: {problems[0]}{more}")
    if not tables:
        raise ResultsReadError(
            f"no result file could be read ({len(problems)} left out; first: {problems[0]})"
        )
    table = pa.concat_tables(tables, promote_options="permissive")
    df = table.to_pandas(types_mapper=_int_types)
    return ReadResult(rows=_natural_types(df), problems=problems, files=files,
                      sweep_dirs=sweep_dirs)


def _distinct_text(column: pa.ChunkedArray) -> list[str]:
    """The distinct non-null values of a column, as text."""
    return sorted({str(v) for v in column.unique().to_pylist() if v is not None})
