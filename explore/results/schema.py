"""Columns of the Parquet results that users, `explore.analyze` and checks rely on.

One row per (trial, seed). Knob columns are named exactly as the knob; a knob a
method does not have is null in its rows. Extra columns are allowed and kept.
"""

from __future__ import annotations

KNOB_COLUMNS: tuple[str, ...] = ("k", "distance", "rho", "W", "beta", "lambda_s", "alpha", "tau")

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
    "base",           # the base model a post-hoc method corrected (null for a base row)
    "mode",           # head (cached features) | full (backbone trained)
    "status",         # ok | error
    "dataset",
    "feature_key",
)

PROVENANCE_COLUMNS: tuple[str, ...] = (
    "train_seconds",
    "best_epoch",
    "many_above",
    "few_below",
    "code_version",
    "params_json",    # every resolved method parameter, JSON
    "error",          # message when status == error
)

REQUIRED_COLUMNS: tuple[str, ...] = ID_COLUMNS + KNOB_COLUMNS + METRIC_COLUMNS + PROVENANCE_COLUMNS
