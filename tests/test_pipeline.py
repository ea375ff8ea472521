"""The pipeline's caches on a real Ray Train backbone job: nothing is redone, and a
corrupt cached shard is detected and extracted again — never used; the reference of a
training-time method is trained on every seed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from explore.config import load
from explore.pipeline import prepare
from explore.recipes import get_recipe
from explore.store import FeatureStore

pytestmark = pytest.mark.ray

SMALL = ["dataset.n_max=200", "dataset.imbalance_factor=40", "dataset.val_per_class=10",
         "backbone.epochs=1", "backbone.batch_size=64", "head.epochs=3"]


def test_cached_features_are_reused_and_a_corrupt_shard_is_re_extracted(ray_cluster, tmp_path, caplog):
    cfg = load(["alphanet_k", f"storage_uri={tmp_path}", *SMALL])
    method = get_recipe("alphanet")
    store = FeatureStore(str(tmp_path))
    first = prepare(cfg, method, store)
    original = store.read(first.feature_key).test.features.copy()  # read() returns views of the files
    weights = sorted((tmp_path / "artifacts").rglob("weights.npz"))
    assert len(weights) == 1
    stamp = weights[0].stat().st_mtime_ns

    caplog.set_level(logging.INFO, logger="explore")
    caplog.clear()
    again = prepare(cfg, method, store)
    assert again.feature_key == first.feature_key and "cache hit" in caplog.text
    assert "training" not in caplog.text  # neither the backbone nor the base was trained again

    shard = sorted((tmp_path / "features" / first.feature_key).glob("test-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    caplog.clear()
    third = prepare(cfg, method, store)
    assert "extracting them again" in caplog.text
    assert third.feature_key == first.feature_key
    assert weights[0].stat().st_mtime_ns == stamp  # the backbone was not retrained
    rebuilt = store.read(first.feature_key)  # checksums verify again
    np.testing.assert_array_equal(rebuilt.test.features, original)


def test_a_training_time_reference_is_trained_on_every_seed(ray_cluster, tmp_path):
    cfg = load(["swrm_window", f"storage_uri={tmp_path}", "repeats=3", "seed=4", *SMALL])
    prepared = prepare(cfg, get_recipe("swrm"), FeatureStore(str(tmp_path)))
    ref = prepared.reference
    assert ref.name == "ce" and not ref.deterministic and prepared.base_key is None
    assert [r.seed for r in ref.results] == [4, 5, 6] and len(set(ref.keys)) == 3
    assert len({round(r.test["acc_overall"], 6) for r in ref.results}) > 1  # really per seed
