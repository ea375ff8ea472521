"""Crafted result rows and real Parquet sweep folders for the analysis tests.

Values are given in points per seed so the expected differences, t intervals and verdicts
can be worked out by hand in the tests; rows store them as fractions, as the sweep does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("few", "medium", "many", "overall")
KNOBS = {"k": pa.int64(), "distance": pa.string(), "rho": pa.float64(), "W": pa.int64(),
         "beta": pa.float64(), "lambda_s": pa.float64(), "alpha": pa.float64(),
         "tau": pa.float64()}
STRINGS = ("sweep_id", "space", "trial_id", "method", "role", "base", "mode", "status",
           "dataset", "feature_key", "knob_columns", "params_json", "error", "code_version")
INTS = ("seed", "many_above", "few_below")
METRICS = ("acc_many", "acc_medium", "acc_few", "acc_overall", "top5_overall",
           "val_acc_many", "val_acc_medium", "val_acc_few", "val_acc_overall")
OLD_FORMAT_DROPS = ("role", "deterministic", "knob_columns")


def rows_for(
    sweep_id: str,
    method: str,
    *,
    trial_id: str,
    seeds: Sequence[int] = (0, 1, 2),
    base: str | None = None,
    knobs: dict[str, Any] | None = None,
    test: dict[str, Sequence[float]] | None = None,
    val: dict[str, Sequence[float]] | None = None,
    status: str = "ok",
    deterministic: bool = False,
    dataset: str = "cifar100_lt",
    feature_key: str = "fk0",
    mode: str = "head",
    space: str = "alphanet_k",
) -> list[dict[str, Any]]:
    """One row per seed. ``test`` / ``val``: split -> points per seed (a missing split is 50
    on every seed); top-5 is 90. ``base`` None makes a reference row."""
    knobs = dict(knobs or {})
    test = test or {}
    val = val or {}
    rows = []
    for i, seed in enumerate(seeds):
        row: dict[str, Any] = {
            "sweep_id": sweep_id, "space": space, "trial_id": trial_id, "seed": seed,
            "method": method, "role": "reference" if base is None else "configuration",
            "base": base, "mode": mode, "status": status, "dataset": dataset,
            "feature_key": feature_key, "many_above": 100, "few_below": 20,
            "deterministic": deterministic, "code_version": "test",
            "knob_columns": json.dumps(sorted(knobs)), "params_json": json.dumps(knobs),
            "error": "boom" if status == "error" else None,
        }
        row.update(knobs)
        for split in SPLITS:
            row[f"acc_{split}"] = test.get(split, [50.0] * len(seeds))[i] / 100
            row[f"val_acc_{split}"] = val.get(split, [50.0] * len(seeds))[i] / 100
        row["top5_overall"] = 0.9
        rows.append(row)
    return rows


def schema(old_format: bool = False) -> pa.Schema:
    fields = [pa.field(c, pa.string()) for c in STRINGS]
    fields += [pa.field(c, pa.int64()) for c in INTS]
    fields += [pa.field(c, pa.float64()) for c in METRICS]
    fields += [pa.field(c, t) for c, t in KNOBS.items()]
    fields.append(pa.field("deterministic", pa.bool_()))
    return pa.schema([f for f in fields if not (old_format and f.name in OLD_FORMAT_DROPS)])


def table(rows: list[dict[str, Any]], old_format: bool = False) -> pa.Table:
    s = schema(old_format)
    return pa.Table.from_pylist([{c: r.get(c) for c in s.names} for r in rows], schema=s)


def write_sweep(root: Path, sweep_id: str, rows: list[dict[str, Any]], *,
                overrides: list[str] | None = None, space_name: str = "alphanet_k",
                old_format: bool = False) -> Path:
    """``<root>/sweeps/<sweep_id>/`` with ``sweep.json`` and one Parquet file per trial
    (page checksums on, as the writer does); returns the sweep directory."""
    sweep = root / "sweeps" / sweep_id
    results = sweep / "results"
    results.mkdir(parents=True)
    meta: dict[str, Any] = {"space_name": space_name, "sweep_id": sweep_id,
                            "storage_uri": str(root), "features": None, "num_samples": 20,
                            "repeats": 3}
    if overrides is not None:
        meta["overrides"] = overrides
    (sweep / "sweep.json").write_text(json.dumps(meta))
    (sweep / "optuna.journal").write_text('{"op_code": 0}\n')  # never read as results
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_trial.setdefault(str(r["trial_id"]), []).append(r)
    for trial, trial_rows in by_trial.items():
        prefix = "base-" if trial_rows[0]["base"] is None else "trial-"
        pq.write_table(table(trial_rows, old_format), results / f"{prefix}{trial}.parquet",
                       write_page_checksum=True)
    return sweep
