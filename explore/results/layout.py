"""Where a sweep's files live: the one definition of a sweep's storage layout.

::

    <storage_uri>/sweeps/<sweep_id>/
        sweep.json                 the composed config, the space name and the user's overrides
        optuna.journal             the Optuna study (local storage; mirrored here from S3 runs)
        results/<name>.parquet     one file per finished trial (trial-<id>), per reference
                                   model (base-<name>) and per failed configuration
                                   (error-<digest of its knobs>)
        seeds/<trial_id>/seed<s>.json   full mode: a finished seed's result (a retried
                                   trial skips it)
        train/                     Ray Train runs (full mode, ray_train placement)
        tune*/                     Ray Tune's experiment state

Read results from ``results/`` (only Parquet files live there).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from explore.store import uri as storage

__all__ = ["BASE_PREFIX", "ERROR_PREFIX", "TRIAL_PREFIX", "SweepLayout"]

TRIAL_PREFIX = "trial-"
BASE_PREFIX = "base-"
ERROR_PREFIX = "error-"


@dataclass(frozen=True)
class SweepLayout:
    storage_uri: str
    sweep_id: str

    @property
    def root(self) -> str:
        return storage.join(self.storage_uri, "sweeps", self.sweep_id)

    @property
    def config(self) -> str:
        return storage.join(self.root, "sweep.json")

    @property
    def journal(self) -> str:
        return storage.join(self.root, "optuna.journal")

    @property
    def results(self) -> str:
        return storage.join(self.root, "results")

    @property
    def train(self) -> str:
        return storage.join(self.root, "train")

    def result_file(self, name: str) -> str:
        return storage.join(self.results, f"{name}.parquet")

    def seed_record(self, trial_id: str, seed: int) -> str:
        return storage.join(self.root, "seeds", trial_id, f"seed{seed}.json")

    @staticmethod
    def trial_name(trial_id: str) -> str:
        return f"{TRIAL_PREFIX}{trial_id}"

    @staticmethod
    def error_name(knobs: dict[str, Any]) -> str:
        """Named by the configuration, not the trial: when a resumed sweep runs the same
        configuration successfully, its stale error rows are found and removed."""
        digest = hashlib.sha256(json.dumps(knobs, sort_keys=True, default=str).encode())
        return f"{ERROR_PREFIX}{digest.hexdigest()[:16]}"

    @staticmethod
    def base_name(base: str) -> str:
        return f"{BASE_PREFIX}{base}"
