"""Importing a feature directory reads each feature file once on a cache hit (for the
key's digest): only classifier.npz is read again, and it is the same classifier."""

from __future__ import annotations

from collections import Counter

import numpy as np

from explore import pipeline
from explore.store import FeatureStore
from explore.store import imported as imported_mod
from tests.support.synthetic import write_feature_dir


def test_a_cache_hit_reads_the_feature_files_once(tmp_path, monkeypatch):
    feats = write_feature_dir(tmp_path / "feats", classifier=True)
    store = FeatureStore(str(tmp_path / "store"))
    first = pipeline._imported_features(str(feats), store)  # a miss: digest, then import
    reads: Counter[str] = Counter()
    real_read = imported_mod._read

    def counted(fs, path, uri):  # a spy: the real read, counted by file
        reads[path.rsplit("/", 1)[-1]] += 1
        return real_read(fs, path, uri)

    monkeypatch.setattr(imported_mod, "_read", counted)
    key, _, fset, given = pipeline._imported_features(str(feats), store)
    assert key == first[0]
    assert reads["train.npz"] == 1 and reads["test.npz"] == 1  # the digest only
    assert reads["classifier.npz"] == 2  # the digest, then the classifier itself
    assert given is not None and first[3] is not None
    np.testing.assert_array_equal(given.weight, first[3].weight)
    np.testing.assert_array_equal(given.bias, first[3].bias)
    assert fset.num_classes == first[2].num_classes
