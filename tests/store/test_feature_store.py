"""Feature store: keys, shards + manifest on local disk and S3 (moto), checksums, build-once
locking across processes, unreachable endpoints, and no credential in any error.

URI parsing is tested in test_uri.py, dead lock owners in test_locks.py."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import socket
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from pyarrow import ipc

from explore.store import (
    CorruptShardError,
    EntryNotFoundError,
    FeatureSet,
    FeatureSplit,
    FeatureStore,
    LockTimeoutError,
    StorageError,
    StorageUnreachableError,
    feature_key,
)

SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")


def make_set(
    n_train: int = 25,
    n_val: int = 10,
    n_test: int = 7,
    d: int = 6,
    seed: int = 0,
    aux: int | None = None,
) -> FeatureSet:
    rng = np.random.default_rng(seed)
    classes = ("cat", "dog", "eel", "fox")

    def split(n: int) -> FeatureSplit:
        return FeatureSplit(rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 4, n))

    splits = {"train": split(n_train), "val": split(n_val), "test": split(n_test)}
    if aux is not None:
        splits["aux"] = split(aux)
    return FeatureSet(splits=splits, classes=classes, meta={"backbone": "toy", "seed": seed})


def assert_same(a: FeatureSet, b: FeatureSet) -> None:
    assert set(a.splits) == set(b.splits)
    for name in a.splits:
        assert (
            a.splits[name].features.dtype == np.float32 and a.splits[name].labels.dtype == np.int64
        )
        np.testing.assert_array_equal(a.splits[name].features, b.splits[name].features)
        np.testing.assert_array_equal(a.splits[name].labels, b.splits[name].labels)
    assert a.classes == b.classes and a.meta == b.meta


def assert_no_secret(exc: BaseException) -> None:
    for name in SECRET_ENV:
        secret = os.environ[name]
        assert secret not in str(exc) and secret not in repr(exc), f"{name} leaked into the error"


# ------------------------------------------------------------------ keys and data types


def test_feature_key_is_sha256_of_canonical_json_and_ignores_key_order():
    spec = {
        "preprocess": [28, "norm"],
        "dataset": {"name": "fmnist-lt", "imb": 100},
        "backbone": {"weights_sha256": "ab", "name": "resnet18"},
    }
    canonical = (
        '{"backbone":{"name":"resnet18","weights_sha256":"ab"},'
        '"dataset":{"imb":100,"name":"fmnist-lt"},"preprocess":[28,"norm"]}'
    )
    expected = hashlib.sha256(("explore-features/v1\n" + canonical).encode()).hexdigest()[:16]
    assert feature_key(spec) == expected
    reordered = {
        "backbone": {"name": "resnet18", "weights_sha256": "ab"},
        "dataset": {"imb": 100, "name": "fmnist-lt"},
        "preprocess": [28, "norm"],
    }
    assert feature_key(reordered) == expected
    assert feature_key({**spec, "dataset": {"name": "fmnist-lt", "imb": 50}}) != expected
    with pytest.raises(ValueError, match="plain JSON"):
        feature_key({"x": np.float32(1.0)})
    with pytest.raises(ValueError, match="non-empty"):
        feature_key({})


def test_feature_split_and_set_validation():
    ok = FeatureSplit(np.zeros((3, 2), np.float64), np.array([0, 1, 2], np.int32))
    assert ok.features.dtype == np.float32 and ok.labels.dtype == np.int64 and ok.d == 2
    with pytest.raises(ValueError, match="2-D"):
        FeatureSplit(np.zeros(3, np.float32), np.zeros(3, int))
    with pytest.raises(ValueError, match="3 rows but labels have 2"):
        FeatureSplit(np.zeros((3, 2), np.float32), np.zeros(2, int))
    with pytest.raises(ValueError, match="NaN"):
        FeatureSplit(np.full((1, 2), np.nan, np.float32), np.zeros(1, int))
    with pytest.raises(ValueError, match="integer"):
        FeatureSplit(np.zeros((1, 2), np.float32), np.zeros(1, np.float32))
    s = {"train": ok, "val": ok, "test": ok}
    with pytest.raises(ValueError, match="missing split"):
        FeatureSet({"train": ok, "val": ok}, ("a", "b", "c"))
    with pytest.raises(ValueError, match="label 2 but only 2 classes"):
        FeatureSet(s, ("a", "b"))
    with pytest.raises(ValueError, match="share the feature dimension"):
        FeatureSet(
            {**s, "aux": FeatureSplit(np.zeros((1, 5), np.float32), np.zeros(1, int))},
            ("a", "b", "c"),
        )
    with pytest.raises(ValueError, match="plain JSON"):
        FeatureSet(s, ("a", "b", "c"), meta={"t": object()})


# ------------------------------------------------------------------ local store


def test_round_trip_local_with_shard_boundaries(tmp_path):
    store = FeatureStore(str(tmp_path / "store"), max_rows_per_shard=10)
    fset = make_set(n_train=25, n_val=10, n_test=7, aux=0)
    key = "k" + "0" * 15
    assert not store.has(key)
    store.write(key, fset)
    assert store.has(key)
    assert_same(store.read(key), fset)

    entry = tmp_path / "store" / "features" / key
    manifest = json.loads((entry / "manifest.json").read_text())
    rows = {s: [sh["rows"] for sh in manifest["splits"][s]["shards"]] for s in manifest["splits"]}
    assert rows == {"train": [10, 10, 5], "val": [10], "test": [7], "aux": []}
    assert manifest["d"] == 6 and manifest["classes"] == ["cat", "dog", "eel", "fox"]
    for split, info in manifest["splits"].items():
        for i, shard in enumerate(info["shards"]):
            assert shard["path"] == f"{split}-{i:05d}.arrow"
            raw = (entry / shard["path"]).read_bytes()
            assert len(raw) == shard["bytes"] and xxhash.xxh3_128_hexdigest(raw) == shard["xxh3_128"]
            table = ipc.open_file(pa.BufferReader(raw)).read_all()
            assert table.schema.metadata[b"explore.cache_key"] == key.encode()
            assert table.schema.metadata[b"explore.split"] == split.encode()
            assert table.schema.field("features").type == pa.list_(pa.float32(), 6)
            # rows i*10 .. of the original split, checked row by row
            for r in range(table.num_rows):
                np.testing.assert_array_equal(
                    table.column("features")[r].values.to_numpy(),
                    fset.splits[split].features[i * 10 + r],
                )
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [
            "manifest.json",
            "train-00000.arrow",
            "train-00001.arrow",
            "train-00002.arrow",
            "val-00000.arrow",
            "test-00000.arrow",
        ]
    )


def test_manifest_is_the_only_source_of_truth(tmp_path):
    store = FeatureStore(str(tmp_path), max_rows_per_shard=10)
    key, fset = "abc123", make_set()
    store.write(key, fset)
    entry = tmp_path / "features" / key
    # A shard that no manifest lists is ignored.
    (entry / "train-00099.arrow").write_bytes((entry / "train-00000.arrow").read_bytes())
    assert_same(store.read(key), fset)
    # Without the manifest the shards are invisible.
    (entry / "manifest.json").unlink()
    assert not store.has(key)
    with pytest.raises(EntryNotFoundError, match=f"no features for key {key}.*manifest.json"):
        store.read(key)
    calls = []
    rebuilt = store.get_or_build(key, lambda: calls.append(1) or make_set(seed=1))
    assert calls == [1]
    assert_same(rebuilt, make_set(seed=1))
    assert not (entry / "train-00099.arrow").exists()  # leftovers cleared before the rebuild


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_shards_are_detected_and_rebuilt_once(tmp_path):
    # The entry's own shards, read without a node-local copy in between (test_node_cache.py).
    store = FeatureStore(str(tmp_path), max_rows_per_shard=10, node_cache=False)
    key = "feedbeef"
    store.write(key, make_set())
    entry = tmp_path / "features" / key
    _flip_byte(entry / "train-00001.arrow")
    with pytest.raises(CorruptShardError, match="train-00001.arrow.*checksum"):
        store.read(key)

    calls: list[int] = []
    def build():
        return calls.append(1) or make_set()
    assert_same(store.get_or_build(key, build), make_set())
    assert_same(store.get_or_build(key, build), make_set())
    assert calls == [1]
    assert_same(store.read(key), make_set())

    shard = entry / "val-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-17])
    with pytest.raises(CorruptShardError, match="val-00000.arrow has .* bytes"):
        store.read(key)


def test_shard_of_another_key_is_rejected(tmp_path):
    store = FeatureStore(str(tmp_path))
    store.write("keya", make_set(seed=0))
    store.write("keyb", make_set(seed=0))
    a, b = tmp_path / "features" / "keya", tmp_path / "features" / "keyb"
    # Same data, different key: bytes differ only in the schema metadata. Swap the shard
    # and make b's manifest agree with it, so only the metadata check can catch it.
    raw = (a / "train-00000.arrow").read_bytes()
    (b / "train-00000.arrow").write_bytes(raw)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0].update(
        bytes=len(raw), xxh3_128=xxhash.xxh3_128_hexdigest(raw)
    )
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptShardError, match="train-00000.arrow carries key/split b'keya'"):
        store.read("keyb")


def test_manifests_with_sha256_checksums_are_still_verified(tmp_path):
    """Entries written before shards used xxh3-128 carry sha256: still checked."""
    store = FeatureStore(str(tmp_path))
    store.write("old", make_set(seed=1))
    entry = tmp_path / "features" / "old"
    manifest = json.loads((entry / "manifest.json").read_text())
    for info in manifest["splits"].values():
        for shard in info["shards"]:
            del shard["xxh3_128"]
            shard["sha256"] = hashlib.sha256((entry / shard["path"]).read_bytes()).hexdigest()
    (entry / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(store.read("old").train.features, make_set(seed=1).train.features)
    _flip_byte(entry / "train-00000.arrow")
    with pytest.raises(CorruptShardError, match="checksum"):
        store.read("old")


def test_stale_lock_is_broken_and_live_lock_is_waited_for(tmp_path):
    store = FeatureStore(
        str(tmp_path), lock_stale_after_s=5, lock_heartbeat_s=1, poll_s=0.05, wait_timeout_s=0.5
    )
    entry = tmp_path / "features" / "k1"
    entry.mkdir(parents=True)
    (entry / ".lock").write_text(
        json.dumps(
            {"owner": "dead:1", "created": time.time() - 100, "heartbeat": time.time() - 100}
        )
    )
    assert_same(store.get_or_build("k1", make_set), make_set())
    assert not (entry / ".lock").exists()

    entry2 = tmp_path / "features" / "k2"
    entry2.mkdir(parents=True)
    (entry2 / ".lock").write_text(
        json.dumps({"owner": "alive:2", "created": time.time(), "heartbeat": time.time()})
    )
    t0 = time.monotonic()
    with pytest.raises(LockTimeoutError, match="k2"):
        store.get_or_build("k2", make_set)
    assert time.monotonic() - t0 < 3
    assert (entry2 / ".lock").exists()  # a live lock is never broken


def test_heartbeat_refreshes_lock_during_build_and_failed_build_releases(tmp_path):
    store = FeatureStore(str(tmp_path), lock_heartbeat_s=0.1, lock_stale_after_s=5)
    lock = tmp_path / "features" / "k" / ".lock"
    seen = []

    def build() -> FeatureSet:
        seen.append(json.loads(lock.read_text()))
        time.sleep(0.5)
        seen.append(json.loads(lock.read_text()))
        return make_set()

    store.get_or_build("k", build)
    assert seen[0]["owner"] == seen[1]["owner"] and seen[1]["heartbeat"] > seen[0]["heartbeat"]
    assert not lock.exists()

    def failing() -> FeatureSet:
        raise RuntimeError("extractor crashed")

    with pytest.raises(RuntimeError, match="extractor crashed"):
        store.get_or_build("k2", failing)
    assert not (tmp_path / "features" / "k2" / ".lock").exists()
    assert not store.has("k2")


def test_arrays_and_json_artifacts(tmp_path):
    store = FeatureStore(str(tmp_path))
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1, 2, 3], np.float64)
    store.put_arrays("key1", "base_classifier", {"weight": w, "bias": b}, meta={"epochs": 3})
    assert store.has_arrays("key1", "base_classifier") and not store.has_arrays("key1", "other")
    arrays, meta = store.get_arrays("key1", "base_classifier")
    np.testing.assert_array_equal(arrays["weight"], w)
    assert arrays["bias"].dtype == np.float64 and meta == {"epochs": 3}
    _flip_byte(tmp_path / "artifacts" / "key1" / "base_classifier.npz")
    with pytest.raises(CorruptShardError, match="base_classifier.npz"):
        store.get_arrays("key1", "base_classifier")
    with pytest.raises(EntryNotFoundError):
        store.get_arrays("key1", "other")

    store.put_json("key1", "text", {"prompts": ["a photo of a cat"], "dim": 384})
    assert store.get_json("key1", "text") == {"prompts": ["a photo of a cat"], "dim": 384}
    path = tmp_path / "artifacts" / "key1" / "text.json"
    path.write_text(path.read_text().replace("384", "385"))
    with pytest.raises(CorruptShardError, match="text.json"):
        store.get_json("key1", "text")
    with pytest.raises(ValueError, match="artifact name"):
        store.put_json("key1", "../escape", 1)


# ------------------------------------------------------------------ concurrency


def _slow_build(counter: str) -> FeatureSet:
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    return make_set(n_train=30, seed=7)


def _contend(uri: str, key: str, counter: str, out: str, barrier) -> None:
    store = FeatureStore(uri, max_rows_per_shard=16, poll_s=0.1)
    barrier.wait(timeout=60)
    fset = store.get_or_build(key, partial(_slow_build, counter))
    np.savez(out, features=fset.train.features, labels=fset.train.labels)


def _run_contenders(uri: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    counter = str(tmp_path / "builds.txt")
    outs = [str(tmp_path / f"out{i}.npz") for i in range(3)]
    procs = [
        ctx.Process(target=_contend, args=(uri, "sharedkey", counter, o, barrier)) for o in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(Path(counter).read_text().splitlines()) == 1  # built exactly once
    expected = make_set(n_train=30, seed=7).train
    for o in outs:
        with np.load(o) as got:
            np.testing.assert_array_equal(got["features"], expected.features)
            np.testing.assert_array_equal(got["labels"], expected.labels)


def test_concurrent_get_or_build_builds_once_local(tmp_path):
    _run_contenders(str(tmp_path / "store"), tmp_path)
    assert not (tmp_path / "store" / "features" / "sharedkey" / ".lock").exists()


# ------------------------------------------------------------------ S3 (moto)


@pytest.mark.s3
def test_round_trip_and_artifacts_on_s3(s3_bucket):
    import boto3

    uri = f"s3://{s3_bucket}/cache"
    # The S3 read path itself, without a node-local copy in between (test_node_cache.py).
    store = FeatureStore(uri, max_rows_per_shard=10, node_cache=False)
    fset = make_set(n_train=25, aux=3)
    assert not store.has("s3key")
    store.write("s3key", fset)
    assert store.has("s3key")
    assert_same(store.read("s3key"), fset)
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == [
        f"cache/features/s3key/{n}"
        for n in sorted(
            [
                "manifest.json",
                "train-00000.arrow",
                "train-00001.arrow",
                "train-00002.arrow",
                "val-00000.arrow",
                "test-00000.arrow",
                "aux-00000.arrow",
            ]
        )
    ]

    # Corrupt a shard through S3 itself: detected, rebuilt once.
    obj = s3.get_object(Bucket=s3_bucket, Key="cache/features/s3key/train-00001.arrow")[
        "Body"
    ].read()
    s3.put_object(Bucket=s3_bucket, Key="cache/features/s3key/train-00001.arrow", Body=obj[:-5])
    with pytest.raises(CorruptShardError, match="train-00001.arrow"):
        store.read("s3key")
    calls: list[int] = []
    store.get_or_build("s3key", lambda: calls.append(1) or fset)
    assert_same(store.get_or_build("s3key", lambda: calls.append(1) or fset), fset)
    assert calls == [1]

    store.put_arrays("s3key", "clf", {"weight": np.ones((4, 6), np.float32)}, meta={"k": 1})
    arrays, meta = store.get_arrays("s3key", "clf")
    assert arrays["weight"].shape == (4, 6) and meta == {"k": 1}
    store.put_json("s3key", "info", [1, 2])
    assert store.get_json("s3key", "info") == [1, 2]

    s3.delete_object(Bucket=s3_bucket, Key="cache/features/s3key/manifest.json")
    assert not store.has("s3key")
    with pytest.raises(EntryNotFoundError, match="no features for key s3key"):
        store.read("s3key")
    store.write("s3key", fset)

    blob = pickle.dumps(store)
    assert os.environ["AWS_SECRET_ACCESS_KEY"].encode() not in blob
    assert_same(pickle.loads(blob).read("s3key"), fset)


@pytest.mark.s3
def test_s3_conditional_put_lock_is_exclusive(s3_bucket):
    """moto honours If-None-Match: * (and If-Match deletes), which the S3 lock relies on."""
    from explore.store._locks import S3Lock

    store = FeatureStore(f"s3://{s3_bucket}/c")
    lock = S3Lock(store._storage.s3_client(), s3_bucket, "c/features/k/.lock")
    first = lock.try_acquire(b'{"owner": "a"}')
    assert first is not None and lock.try_acquire(b'{"owner": "b"}') is None
    refreshed = lock.refresh(first, b'{"owner": "a", "beat": 1}')
    assert refreshed is not None and refreshed != first
    assert not lock.break_stale(first)  # the old version is gone: nothing to break
    assert lock.peek() == (refreshed, {"owner": "a", "beat": 1})
    lock.release(refreshed)
    assert lock.peek() is None


@pytest.mark.s3
def test_concurrent_get_or_build_builds_once_s3(s3_bucket, tmp_path):
    _run_contenders(f"s3://{s3_bucket}/cache", tmp_path)


@pytest.mark.s3
def test_missing_bucket_is_a_clear_error_without_secrets(s3_endpoint):
    with pytest.raises(
        StorageError, match="bucket 'no-such-bucket-here' .* does not exist"
    ) as info:
        FeatureStore("s3://no-such-bucket-here/prefix")
    assert not isinstance(info.value, StorageUnreachableError)
    assert_no_secret(info.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_fails_fast_without_secrets(monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    t0 = time.monotonic()
    with pytest.raises(StorageUnreachableError) as info:
        FeatureStore("s3://some-bucket/cache")
    assert time.monotonic() - t0 < 10
    message = str(info.value)
    assert endpoint in message and "s3://some-bucket/cache" in message and "\n" not in message
    assert_no_secret(info.value)

    store = FeatureStore("s3://some-bucket/cache", check=False)
    with pytest.raises(StorageUnreachableError) as info:
        store.has("k")
    assert_no_secret(info.value)
    with pytest.raises(StorageUnreachableError) as info:
        store.get_or_build("k", make_set)
    assert_no_secret(info.value)
