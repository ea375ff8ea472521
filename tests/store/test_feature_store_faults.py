"""Faults injected into the feature store on a real S3-compatible server."""

from __future__ import annotations

import os
import threading
import time

import boto3
import numpy as np
import pytest

from explore.store import (
    EntryNotFoundError,
    FeatureSet,
    FeatureSplit,
    FeatureStore,
    StorageError,
)
from tests.support.moto import MotoServer

pytestmark = pytest.mark.s3


@pytest.fixture()
def own_s3(monkeypatch, s3_endpoint):
    server = MotoServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    server.start()
    yield server
    server.kill()


def _feature_set(rows: int = 60_000, d: int = 64) -> FeatureSet:
    rng = np.random.default_rng(0)
    def split(n):
        return FeatureSplit(rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 5, n))
    return FeatureSet({"train": split(rows), "val": split(500), "test": split(500)}, tuple("abcde"))


def test_server_stopped_during_a_feature_write(own_s3):
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="feat")
    fset = _feature_set()
    writer = FeatureStore("s3://feat/cache", max_rows_per_shard=2_000)
    reader = FeatureStore("s3://feat/cache")
    key = "0123456789abcdef"
    outcome: dict[str, BaseException | None] = {}
    seen_complete = []

    def write() -> None:
        try:
            writer.write(key, fset)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=write)
    thread.start()
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # a reader polling during the write never sees the entry before its manifest
        if reader.has(key):
            seen_complete.append(True)
        listed = s3.list_objects_v2(Bucket="feat", Prefix=f"cache/features/{key}/").get("KeyCount", 0)
        if listed >= 4:
            break
        time.sleep(0.05)
    own_s3.kill()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the write hung after the server stopped"
    error = outcome["error"]
    assert isinstance(error, StorageError), error
    message = str(error)
    assert "cannot reach S3 endpoint" in message and len(message.splitlines()) == 1
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message
    assert not seen_complete

    # restarted (moto keeps objects in memory, so the bucket comes back empty), the next run completes
    own_s3.start()
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="feat")
    assert not reader.has(key)
    with pytest.raises(EntryNotFoundError):
        reader.read(key)
    built = writer.get_or_build(key, lambda: fset)
    back = reader.read(key)
    np.testing.assert_array_equal(back.train.features, fset.train.features)
    assert built is not None


def test_partial_shards_without_manifest_are_invisible(s3_bucket):
    """The same property without a crash: shards written, manifest deleted."""
    store = FeatureStore(f"s3://{s3_bucket}/c", max_rows_per_shard=1_000)
    fset = _feature_set(rows=3_000, d=8)
    store.write("00000000000000aa", fset)
    s3 = boto3.client("s3")
    s3.delete_object(Bucket=s3_bucket, Key="c/features/00000000000000aa/manifest.json")
    assert not store.has("00000000000000aa")
    calls = []
    store.get_or_build("00000000000000aa", lambda: calls.append(1) or fset)
    assert calls == [1] and store.has("00000000000000aa")
