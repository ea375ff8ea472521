"""Columns of the Parquet results that users, ``explore.analyze`` and checks rely on.

One row per (trial, seed). Knob columns are named exactly as the knob and typed as the
recipe's parameter is (``k`` an integer, ``distance`` a string); a knob a method does not
have is null in its rows. Extra columns are allowed and kept.
"""

from __future__ import annotations

import functools

import pyarrow as pa

__all__ = ["ID_COLUMNS", "METRIC_COLUMNS", "PROVENANCE_COLUMNS", "arrow_schema", "knob_types",
           "required_columns"]

METRIC_COLUMNS: tuple[str, ...] = (
    "acc_many",
    "acc_medium",
    "acc_few",
    "acc_overall",
    "top5_overall",
    "val_acc_many",
    "val_acc_medium",
    "val_acc_few",
    "val_acc_overall",
)

ID_COLUMNS: tuple[str, ...] = (
    "sweep_id",
    "space",          # search-space name, e.g. alphanet_k
    "trial_id",
    "seed",
    "method",         # e.g. alphanet, crt, swrm
    "role",           # reference (the base/reference model) | configuration
    "base",           # the reference a configuration is compared with (null on reference rows)
    "mode",           # head (cached features) | full (backbone trained)
    "status",         # ok | error | stopped
    "dataset",
    "feature_key",
    "base_key",       # cache key of the base model the row used or is
)

PROVENANCE_COLUMNS: tuple[str, ...] = (
    "deterministic",  # reference rows of a given classifier: the same on every seed
    "train_seconds",
    "best_epoch",
    "many_above",
    "few_below",
    "code_version",
    "knob_columns",   # JSON list: the knobs this row's method has
    "params_json",    # every parameter, the training settings and the resolved values, JSON
    "error",          # message when status == error
    "stopped_epoch",  # status == stopped: the epochs this seed had trained when stopped
    "node_id",        # the Ray node the trial ran on (its trial driver in full mode)
    "node_ip",
    "gpu_ids",        # GPUs Ray assigned to the trial, comma separated ("" without)
    "device",         # the torch device its heads trained on: cuda:0 | cpu
    "started_at",     # the trial's start and end, Unix seconds
    "finished_at",
)

_INT = {"seed", "best_epoch", "many_above", "few_below", "stopped_epoch"}
_BOOL = {"deterministic"}
_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


@functools.cache
def knob_types() -> dict[str, type]:
    """Every method's knob columns and their types, from the recipes."""
    from explore.recipes import knob_columns

    return knob_columns()


def required_columns() -> tuple[str, ...]:
    return ID_COLUMNS + tuple(knob_types()) + METRIC_COLUMNS + PROVENANCE_COLUMNS


@functools.cache
def arrow_schema() -> pa.Schema:
    """The fixed types of the required columns (so an all-null knob keeps its type)."""
    knobs = knob_types()
    fields = []
    for name in required_columns():
        if name in knobs:
            kind = _ARROW.get(knobs[name], pa.string())
        elif name in _INT:
            kind = pa.int64()
        elif name in _BOOL:
            kind = pa.bool_()
        elif name in METRIC_COLUMNS or name in ("train_seconds", "started_at", "finished_at"):
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)
