"""One copy of the features per node: S3 entries (and local splits of several shards) are
read through a node-local copy, fetched and verified once, memory-mapped by every reader.
Real moto S3 server; real separate processes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from explore.store import FeatureStore
from tests.store.test_feature_store import assert_same, make_set

pytestmark = pytest.mark.s3


def _mapped_files(address: int) -> tuple[str, int] | None:
    """(path, inode) of the file mapping that holds ``address`` in this process, if any."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi and len(fields) == 6 and int(fields[4]):
                return fields[5].strip(), int(fields[4])
    return None


def _read_in_child(uri: str, node: str, key: str, barrier, out) -> None:
    barrier.wait()  # both readers at once: one fetches, the other waits for its copy
    fset = FeatureStore(uri, max_rows_per_shard=10, node_cache=node).read(key)
    features = fset.train.features
    out.put((_mapped_files(features.__array_interface__["data"][0]),
             float(features.sum(dtype=np.float64))))


def test_two_processes_share_one_node_copy_of_an_s3_entry(s3_bucket, tmp_path):
    uri, node = f"s3://{s3_bucket}/cache", str(tmp_path / "node")
    fset = make_set(n_train=25)
    FeatureStore(uri, max_rows_per_shard=10).write("k", fset)  # train: 3 shards on S3
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_read_in_child, args=(uri, node, "k", barrier, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    (path_a, inode_a), sum_a = results[0]
    (path_b, inode_b), sum_b = results[1]
    # Both processes' train arrays are views of one mapped file: the same inode.
    assert path_a == path_b and inode_a == inode_b
    assert path_a.startswith(node) and os.stat(path_a).st_ino == inode_a
    assert sum_a == sum_b == pytest.approx(float(fset.train.features.sum(dtype=np.float64)))
    copies = list((Path(node) / "features").iterdir())
    assert len(copies) == 1 and copies[0].name.startswith("k-")
    assert sorted(p.name for p in copies[0].glob("*.arrow")) == [
        "test-00000.arrow", "train-00000.arrow", "val-00000.arrow"]  # one shard per split


def test_a_corrupt_node_copy_is_detected_and_fetched_again(s3_bucket, tmp_path, caplog):
    uri, node = f"s3://{s3_bucket}/cache", tmp_path / "node"
    fset = make_set(n_train=25)
    store = FeatureStore(uri, max_rows_per_shard=10, node_cache=str(node))
    store.write("k", fset)
    assert_same(store.read("k"), fset)
    (copy,) = (node / "features").iterdir()
    shard = copy / "train-00000.arrow"
    before = os.stat(shard).st_ino
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert_same(store.read("k"), fset)
    assert "train-00000.arrow fails its checksum" in caplog.text
    assert os.stat(shard).st_ino != before  # a new copy, written whole and renamed in place

    # The entry rebuilt on S3 under the same key: a new copy; the old one is removed.
    other = make_set(n_train=25, seed=5)
    store.write("k", other)
    assert_same(store.read("k"), other)
    (only,) = (node / "features").iterdir()
    assert only.name != copy.name and not copy.exists()


def test_local_entries_are_copied_only_when_a_split_has_several_shards(tmp_path):
    node = tmp_path / "node"
    one = FeatureStore(str(tmp_path / "one"), node_cache=str(node))
    one.write("single", make_set(n_train=25))
    assert_same(one.read("single"), make_set(n_train=25))
    assert not (node / "features").exists()  # already one mapped file per split

    many = FeatureStore(str(tmp_path / "many"), max_rows_per_shard=10, node_cache=str(node))
    many.write("multi", make_set(n_train=25))
    got = many.read("multi")
    assert_same(got, make_set(n_train=25))
    mapped = _mapped_files(got.train.features.__array_interface__["data"][0])
    assert mapped is not None and mapped[0].startswith(str(node))
    off = FeatureStore(str(tmp_path / "many"), max_rows_per_shard=10, node_cache=False)
    assert _mapped_files(off.read("multi").train.features.__array_interface__["data"][0]) is None

