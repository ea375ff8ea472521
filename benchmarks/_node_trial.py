"""The trial-like process of benchmark 7 (``node_memory``): imports only the store, so that
the memory it adds by reading is the features'."""

from __future__ import annotations

from typing import Any

import numpy as np

from explore.store import FeatureStore

WARM_UP_KEY = "warm-up"
"""A tiny entry every trial reads first: the read path's libraries are then loaded (and
their memory counted) before the measurement starts."""


def trial(uri: str, rows_per_shard: int, node_cache: str | bool, key: str, events: Any, go: Any,
          release: Any) -> None:
    """Say it is ready, read ``key`` when told to, touch every page (an epoch's pass over
    the features), report their sum, and hold them until released."""
    store = FeatureStore(uri, max_rows_per_shard=rows_per_shard, node_cache=node_cache, check=False)
    store.read(WARM_UP_KEY)
    events.put("ready")
    go.wait()
    fset = store.read(key)
    events.put(sum(float(s.features.sum(dtype=np.float64)) for s in fset.splits.values()))
    release.wait()
