"""One result row per (trial, seed), built from typed provenance, a recipe's knob columns
and the fit's outcome. The only place rows are made."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from explore.splits import SplitThresholds
from explore.training.outcome import SeedResult

__all__ = ["PLACEMENT_COLUMNS", "Provenance", "build_row"]

PLACEMENT_COLUMNS = ("node_id", "node_ip", "gpu_ids", "device", "started_at", "finished_at")
"""Where and when a trial ran: Ray node id and IP, the GPU ids Ray assigned to it (comma
separated; empty without GPUs), the torch device its heads trained on (``cuda:0``,
``cpu``), and its start and end in Unix seconds."""


@dataclass(frozen=True)
class Provenance:
    """What every row of a sweep shares."""

    sweep_id: str
    space: str
    mode: str
    dataset: str
    feature_key: str
    thresholds: SplitThresholds
    code_version: str
    base: str | None = None
    """The reference configurations are compared with (the base model's name)."""
    base_key: str | None = None
    columns: tuple[tuple[str, Any], ...] = ()
    """Extra columns every row of the sweep carries, (name, value) pairs (e.g. a
    leaderboard's ``board_id`` and ``phase``); none by default."""


def build_row(
    prov: Provenance,
    *,
    trial_id: str,
    method: str,
    role: str,
    result: SeedResult,
    knobs: Mapping[str, Any],
    params: Any = None,
    training: Any = None,
    resolved: Mapping[str, Any] | None = None,
    status: str = "ok",
    error: str | None = None,
    deterministic: bool = False,
    placement: Mapping[str, Any] | None = None,
    stopped_epoch: int | None = None,
) -> dict[str, Any]:
    """A row: ids, the method's knob columns, test and validation metrics, provenance.

    ``params``/``training`` are the frozen params and head-training dataclasses;
    ``resolved`` the values the recipe resolved (merged with the seed's own records);
    ``placement`` where and when the trial ran (:data:`PLACEMENT_COLUMNS`);
    ``stopped_epoch`` the epochs a seed reached when the scheduler stopped its trial.
    """
    details = {
        "params": dataclasses.asdict(params) if params is not None else {},
        "training": dataclasses.asdict(training) if training is not None else None,
        "resolved": {**(resolved or {}), **result.records},
    }
    row: dict[str, Any] = {
        "sweep_id": prov.sweep_id,
        "space": prov.space,
        "trial_id": trial_id,
        "seed": result.seed,
        "method": method,
        "role": role,
        "base": prov.base if role == "configuration" else None,
        "mode": prov.mode,
        "status": status,
        "dataset": prov.dataset,
        "feature_key": prov.feature_key,
        "base_key": prov.base_key,
        "deterministic": deterministic,
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "many_above": prov.thresholds.many_above,
        "few_below": prov.thresholds.few_below,
        "code_version": prov.code_version,
        "knob_columns": json.dumps(sorted(knobs)),
        "params_json": json.dumps(details, sort_keys=True, default=str),
        "error": error,
        "stopped_epoch": stopped_epoch,
    }
    row.update({name: (placement or {}).get(name) for name in PLACEMENT_COLUMNS})
    row.update(prov.columns)
    row.update(knobs)
    row.update(result.test)
    row.update({"val_" + name: value for name, value in result.val.items() if name.startswith("acc_")})
    return row
