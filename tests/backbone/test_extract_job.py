"""Extraction as Ray work (explore.backbone.extract_job) on a real local Ray cluster: the
same shards as the single process, bit for bit; a worker killed mid-range is replaced and
its range redone once; finished shards are not extracted again. Tiny images and CNN."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from explore.backbone import ModelSpec, extract_features
from explore.backbone.extract_job import extract_to_store, plan_ranges
from explore.data.types import ImageSplit
from explore.store import FeatureSet, FeatureSplit, FeatureStore
from tests.backbone.images import bars

ROWS_PER_SHARD = 16
BATCH = 8
SPEC = ModelSpec("small_cnn", 2, 1)


def _weights() -> dict[str, np.ndarray]:
    torch.manual_seed(3)
    model = SPEC.build()
    with torch.no_grad():  # non-trivial running statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _splits() -> dict[str, ImageSplit]:
    return {"train": bars(40, 0), "val": bars(0, 1), "test": bars(20, 2)}


def _single_process(splits: dict[str, ImageSplit], state: dict[str, np.ndarray],
                    decode=None) -> FeatureSet:
    model = SPEC.build()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    out = {}
    for name, split in splits.items():
        feats = (extract_features(model, split, BATCH, decode=decode) if len(split)
                 else np.zeros((0, model.feature_dim), np.float32))
        out[name] = FeatureSplit(feats, split.labels)
    return FeatureSet(out, ("h", "v"), {"who": "test"})


def _entry_files(root: Path, key: str) -> set[str]:
    return {p.name for p in (root / "features" / key).iterdir()} - {".lock"}


def test_ranges_are_whole_shards_of_each_split():
    assert [(r.split, r.index, r.start, r.stop) for r in plan_ranges({"a": 33, "b": 0, "c": 5}, 16)] \
        == [("a", 0, 0, 16), ("a", 1, 16, 32), ("a", 2, 32, 33), ("c", 0, 0, 5)]


@pytest.mark.parametrize("on_ray", [False, True], ids=["in-process", "ray"])
def test_finished_shards_of_a_killed_build_are_not_extracted_again(on_ray, tmp_path, request):
    if on_ray:
        request.getfixturevalue("ray_cluster")
    else:
        import ray

        if ray.is_initialized():
            pytest.skip("Ray runs in this session: the in-process path is for a driver without it")
    splits, state = _splits(), _weights()
    want = _single_process(splits, state)
    store = FeatureStore(str(tmp_path / "store"), max_rows_per_shard=ROWS_PER_SHARD)
    # A build that died after finishing train's shard 1: its shard and record are there.
    part = want.train
    store.write_shard("k", "train", 1, part.features[16:32], part.labels[16:32])
    marks = tmp_path / "marks"
    marks.mkdir()
    decode = _SlowFiles(splits, marks, stall="none")
    got = extract_to_store(store, "k", _by_path(splits), SPEC, state, ("h", "v"), {},
                           batch_size=BATCH, decode=decode, workers=2)
    decoded = set((marks / "decoded").read_text().split())
    assert not {f"train/{i}" for i in range(16, 32)} & decoded
    assert {f"train/{i}" for i in (*range(16), *range(32, 40))} <= decoded
    assert np.array_equal(got.train.features, want.train.features)
    assert not [n for n in _entry_files(tmp_path / "store", "k") if n.endswith(".done")]


def test_two_workers_write_the_single_process_shards_bit_for_bit(ray_cluster, tmp_path):
    splits, state = _splits(), _weights()
    want = _single_process(splits, state)
    reference = FeatureStore(str(tmp_path / "one"), max_rows_per_shard=ROWS_PER_SHARD)
    reference.write("k", want)

    store = FeatureStore(str(tmp_path / "many"), max_rows_per_shard=ROWS_PER_SHARD)
    seen: list[int] = []
    got = extract_to_store(store, "k", splits, SPEC, state, ("h", "v"), {"who": "test"},
                           batch_size=BATCH, workers=2, progress=seen.append)
    for name in splits:
        assert np.array_equal(got.splits[name].features, want.splits[name].features), name
        assert np.array_equal(got.splits[name].labels, want.splits[name].labels)
    assert sum(seen) == 60  # images done / total, as the driver showed them
    # The very same shard files: equal checksums, the same manifest apart from its time.
    one = reference._shards.manifest("k")
    many = store._shards.manifest("k")
    assert {k: v for k, v in many.items() if k != "written_at"} \
        == {k: v for k, v in one.items() if k != "written_at"}
    assert len(many["splits"]["train"]["shards"]) == 3
    assert _entry_files(tmp_path / "many", "k") == _entry_files(tmp_path / "one", "k")


class _SlowFiles:
    """Decodes ``name/i`` paths from in-memory images on the worker; the first attempt at
    ``stall`` records its pid and stalls, so that the test can kill that worker mid-range."""

    def __init__(self, splits: dict[str, ImageSplit], marks: Path, stall: str) -> None:
        self.images = {f"{n}/{i}": s.images[i] for n, s in splits.items()
                       for i in range(len(s))}
        self.marks, self.stall = marks, stall

    def __call__(self, path: str) -> np.ndarray:
        with open(self.marks / "decoded", "a") as f:
            f.write(path + "\n")
        if path == self.stall and not (self.marks / "stalled").exists():
            (self.marks / "stalled").write_text(str(os.getpid()))
            time.sleep(60)
        return self.images[path]


def _by_path(splits: dict[str, ImageSplit]) -> dict[str, ImageSplit]:
    return {n: ImageSplit(labels=s.labels, paths=tuple(f"{n}/{i}" for i in range(len(s))))
            for n, s in splits.items()}


def test_a_worker_killed_mid_range_is_replaced_and_the_features_are_whole(ray_cluster,
                                                                          tmp_path):
    splits, state = _splits(), _weights()
    want = _single_process(splits, state)
    marks = tmp_path / "marks"
    marks.mkdir()
    decode = _SlowFiles(splits, marks, stall="train/20")  # range 1 of train, mid-way
    store = FeatureStore(str(tmp_path / "store"), max_rows_per_shard=ROWS_PER_SHARD)
    result: dict[str, object] = {}

    def drive() -> None:
        try:
            result["fset"] = extract_to_store(store, "k", _by_path(splits), SPEC, state,
                                              ("h", "v"), {}, batch_size=BATCH, decode=decode,
                                              workers=2)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 60
    while not (marks / "stalled").exists():
        assert time.monotonic() < deadline and driver.is_alive(), result
        time.sleep(0.1)
    time.sleep(0.2)  # the pid is written before the stall starts
    os.kill(int((marks / "stalled").read_text()), signal.SIGKILL)
    driver.join(120)
    assert not driver.is_alive() and "error" not in result, result
    got = result["fset"]
    assert isinstance(got, FeatureSet)
    for name in splits:
        assert np.array_equal(got.splits[name].features, want.splits[name].features), name
        assert np.array_equal(got.splits[name].labels, want.splits[name].labels)
    decoded = (marks / "decoded").read_text().split()
    assert decoded.count("train/20") == 2  # the killed range was redone ...
    assert decoded.count("train/0") == 1 and decoded.count("test/0") == 1  # ... the others not
    # Verified, and no duplicate rows or leftovers: exactly the manifest's shards.
    manifest = store._shards.manifest("k")
    assert [s["rows"] for s in manifest["splits"]["train"]["shards"]] == [16, 16, 8]
    assert _entry_files(tmp_path / "store", "k") == {"manifest.json"} | {
        s["path"] for info in manifest["splits"].values() for s in info["shards"]}
    FeatureStore(str(tmp_path / "store"), node_cache=False).read("k")
