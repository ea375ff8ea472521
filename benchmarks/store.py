"""Benchmark 4 — feature-store read throughput against a raw ``pyarrow.fs`` read.

``FeatureStore.read`` reads every shard listed in the manifest with one sized read,
checks its size and sha256, parses the Arrow IPC file and hands back numpy arrays.
The raw baseline reads the same objects with ``open_input_file`` + ``read_buffer(size)``
and nothing else, so the ratio is what the store's safety costs. Local disk and the S3
API (a moto server on 127.0.0.1, started and stopped here) are measured separately.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from benchmarks._timing import Figure, Timed, time_side_by_side
from benchmarks.synthetic import IMAGENET_LT, LongTailSize, make_feature_set
from explore.store import FeatureStore, feature_key, resolve

TARGET = 0.8
"""Wanted store throughput as a fraction of the raw read's."""


@dataclass(frozen=True)
class StoreReport:
    backend: str
    megabytes: float
    store: Timed
    raw: Timed
    sha256: Timed
    """Hashing the same bytes once (what verification alone costs)."""

    @property
    def fraction_of_raw(self) -> float:
        return self.raw.median / self.store.median

    def figures(self) -> list[Figure]:
        mb = self.megabytes
        return [
            Figure(f"store read / raw read throughput ({self.backend})", self.fraction_of_raw, "",
                   f">= {TARGET:g}", self.fraction_of_raw >= TARGET,
                   f"store {mb / self.store.median:.0f} MB/s, raw {mb / self.raw.median:.0f} MB/s, "
                   f"{mb:.0f} MB; sha256 of the same bytes alone {mb / self.sha256.median:.0f} MB/s"),
        ]


def loopback_only() -> bool:
    """True inside the loopback-only network namespace of ``.ci/loopback``."""
    if os.environ.get("EXPLORE_IN_LOOPBACK_NS") == "1":
        return True
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server(log_dir: str) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with dummy credentials in this process's
    environment; yields its endpoint. Stopped (by its PID) on exit, also on error."""
    port = _free_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                             "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    with open(os.path.join(log_dir, "moto.log"), "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench-key-id",
                              AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1")
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"moto server did not start; see {log_dir}/moto.log") from None
                    time.sleep(0.2)
            yield os.environ["AWS_ENDPOINT_URL"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _shard_paths(uri: str, key: str) -> list[str]:
    """Every shard object listed in ``key``'s manifest: exactly what ``FeatureStore.read`` reads."""
    fs, root = resolve(uri)
    entry = f"{root}/features/{key}"
    with fs.open_input_file(f"{entry}/manifest.json") as f:
        manifest = json.loads(f.read_buffer(f.size()).to_pybytes())
    return [f"{entry}/{shard['path']}" for split in manifest["splits"].values() for shard in split["shards"]]


def bench_store(uri: str, backend: str, size: LongTailSize, repeats: int) -> StoreReport:
    """Write a synthetic feature set of ``size`` to ``uri``, then time reads both ways."""
    fset = make_feature_set(size, seed=1)
    key = feature_key({"benchmark": "store", "size": repr(size)})
    # The read path itself: no node-local copy in between (benchmark 7 measures that one).
    store = FeatureStore(uri, node_cache=False)
    store.write(key, fset)
    rows_written = sum(len(split) for split in fset.splits.values())
    del fset
    fs, _ = resolve(uri)
    paths = _shard_paths(uri, key)

    def raw() -> list:
        out = []
        for path in paths:
            with fs.open_input_file(path) as f:
                out.append(f.read_buffer(f.size()))
        return out

    buffers = raw()
    total = sum(b.size for b in buffers)

    def sha() -> list[str]:
        return [hashlib.sha256(memoryview(b)).hexdigest() for b in buffers]

    timed = time_side_by_side({"store": lambda: store.read(key), "raw": raw, "sha256": sha}, repeats)
    rows = sum(len(s) for s in timed["store"].value.splits.values())
    if rows != rows_written:
        raise AssertionError(f"store read returned {rows} rows, {rows_written} were written")
    store.delete(key)
    return StoreReport(backend, total / 1e6, timed["store"], timed["raw"], timed["sha256"])


def bench_store_local(size: LongTailSize, repeats: int) -> StoreReport:
    with tempfile.TemporaryDirectory(prefix="explore-bench-store-") as tmp:
        return bench_store(os.path.join(tmp, "store"), "local disk", size, repeats)


@contextmanager
def moto_bucket(prefix: str) -> Iterator[str]:
    """``s3://explore-bench/<prefix>`` on a moto server of its own (stopped on exit). Needs
    the loopback namespace (the caller checks ``loopback_only()``)."""
    import boto3

    with tempfile.TemporaryDirectory(prefix="explore-bench-moto-") as tmp, moto_server(tmp) as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="explore-bench")
        yield f"s3://explore-bench/{prefix}"


def bench_store_s3(size: LongTailSize, repeats: int) -> StoreReport:
    with moto_bucket("store") as uri:
        return bench_store(uri, "S3 API, moto on 127.0.0.1", size, repeats)


def store_size(megabytes: float, d: int = 2048) -> LongTailSize:
    """ImageNet-LT's profile with as many classes as make about ``megabytes`` of float32 features."""
    full = replace(IMAGENET_LT, d=d)
    classes = max(30, round(full.num_classes * megabytes * 1e6 / full.features_bytes))
    return full.scaled(classes)
