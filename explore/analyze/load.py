"""Load sweep results for the analysis and bring them to one row contract.

The contract (one row per trial and seed): ``status`` is ok, error or stopped and only ok
rows count; ``role`` is ``reference`` (the sweep's base model, one row per seed) or
``configuration``; ``deterministic`` is True when the reference is constant over seeds (an
imported classifier); a configuration's ``base`` names its reference method. Knobs are the
columns a row's ``knob_columns`` JSON list names (else the known knob columns), minus the
ones that are null in that row.

Older files are read too: without ``role`` a row is a reference iff its ``base`` is null;
without ``deterministic`` no reference is assumed constant (seeds are paired as they are).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from explore.results.reader import INTEGER_KNOBS, ResultsReadError, read_rows
from explore.results.schema import METRIC_COLUMNS
from explore.store import uri as storage

REFERENCE = "reference"
CONFIGURATION = "configuration"
KNOWN_KNOBS: tuple[str, ...] = ("k", "distance", "rho", "W", "beta", "lambda_s", "alpha", "tau")
"""The knob columns of rows without a ``knob_columns`` list (older files), in display order."""


class AnalyzeError(ValueError):
    """Input the analysis cannot use; the message says what to fix (shown as one line)."""


@dataclass(frozen=True)
class SweepMeta:
    """What the analysis needs from a sweep's ``sweep.json`` (all optional)."""

    sweep_id: str
    space_name: str | None
    storage_uri: str | None
    """Where a rerun should write: ``sweep.json``'s storage_uri, else the root it was found in."""
    overrides: tuple[str, ...] | None
    """The command-line overrides the sweep was started with; None when not recorded."""
    swept: tuple[str, ...] | None = None
    """The knobs the sweep's space searched (its ``space`` keys); None when not recorded."""


@dataclass(frozen=True)
class Loaded:
    rows: pd.DataFrame
    """Every row read, normalised (:func:`normalize`), whatever its status."""
    problems: list[str]
    """Files left out, one line each."""
    sweeps: dict[str, SweepMeta]


def is_null(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(float(value))


def natural(name: str, value: object) -> Any:
    """A knob value as a plain Python value of its natural type (k=5, never 5.0)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return int(v) if name in INTEGER_KNOBS and v.is_integer() else v
    return value


def knob_names(row: pd.Series) -> list[str]:
    """The knobs of one row: its ``knob_columns`` list (else the known knobs), non-null ones;
    known knobs first in their usual order, so labels read the same for old and new files."""
    listed: Sequence[str] = KNOWN_KNOBS
    raw = row.get("knob_columns")
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            listed = [k for k in KNOWN_KNOBS if k in parsed]
            listed += [k for k in parsed if k not in KNOWN_KNOBS]
    return [k for k in listed if k in row.index and not is_null(row[k])]


def normalize(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``rows`` with every column the analysis reads present and typed: ``role``
    filled for old files, ``deterministic`` a bool, ``status`` a string, metrics float."""
    df = rows.copy().reset_index(drop=True)
    for col in ("base", "mode", "dataset", "feature_key", "many_above", "few_below", "space",
                "status", "role", "deterministic", "trial_id", "sweep_id", "method"):
        if col not in df:
            df[col] = None
    for col in METRIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64") if col in df else np.nan
    df["status"] = df["status"].astype(object).where(df["status"].notna(), "<null>")
    base_null = df["base"].isna() | (df["base"].astype(object) == "")
    derived = np.where(base_null, REFERENCE, CONFIGURATION)
    df["role"] = df["role"].astype(object).where(df["role"].notna(), derived)
    df["base"] = df["base"].astype(object).where(~base_null, None)
    det = df["deterministic"].astype(object)
    df["deterministic"] = det.where(det.notna(), False).astype(bool)
    df["mode"] = df["mode"].astype(object).where(df["mode"].notna(), "head")
    return df


def _read_json(uri: str) -> dict[str, Any] | None:
    from explore.store.documents import read_json

    try:
        data = read_json(uri, "reading a sweep config")
    except (OSError, ValueError):  # missing, unreadable or corrupt: the rows still analyse
        return None
    return data if isinstance(data, dict) else None


def _root_of(sweep_dir: str) -> str | None:
    head, sep, _ = sweep_dir.rstrip("/").rpartition("/sweeps/")
    return head if sep else None


def sweep_meta(sweep_id: str, sweep_dir: str | None, rows: pd.DataFrame) -> SweepMeta:
    """The sweep's ``sweep.json`` facts; what it lacks is taken from the rows (space name)
    or the directory the results were found in (storage root)."""
    data = _read_json(storage.join(sweep_dir, "sweep.json")) if sweep_dir else None
    data = data or {}
    space = data.get("space_name")
    if not space and "space" in rows:
        spaces = rows.loc[rows["sweep_id"] == sweep_id, "space"].dropna().unique()
        space = str(spaces[0]) if len(spaces) == 1 else None
    raw_overrides = data.get("overrides")
    overrides = (tuple(str(o) for o in raw_overrides)
                 if isinstance(raw_overrides, list) else None)
    root = data.get("storage_uri") or (_root_of(sweep_dir) if sweep_dir else None)
    space_cfg = data.get("space")
    swept = tuple(str(k) for k in space_cfg) if isinstance(space_cfg, dict) else None
    return SweepMeta(sweep_id=sweep_id, space_name=str(space) if space else None,
                     storage_uri=str(root) if root else None, overrides=overrides, swept=swept)


def load(uris: str | Sequence[str], strict: bool = False) -> Loaded:
    """Read (``explore.results.reader.read_rows``), normalise, and collect sweep facts."""
    try:
        result = read_rows(uris, strict=strict)
    except ResultsReadError as exc:
        raise AnalyzeError(str(exc)) from None
    rows = normalize(result.rows)
    sweeps = {
        str(s): sweep_meta(str(s), result.sweep_dirs.get(str(s)), rows)
        for s in sorted(rows["sweep_id"].dropna().astype(str).unique())
    }
    return Loaded(rows=rows, problems=result.problems, sweeps=sweeps)
