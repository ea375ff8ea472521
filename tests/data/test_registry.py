"""The dataset registry and DatasetConfig validation (explore/data/registry.py)."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import explore.data as data_pkg
from explore.data.registry import DATASETS, LIST_DEFINED, DatasetConfig, load_dataset
from explore.data.types import DatasetError

KNOWN = {"fashion_mnist_lt", "fashion_mnist_lt_open", "cifar10_lt", "cifar100_lt", "imagenet_lt", "places_lt"}


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _tiny_fashion(root: Path) -> Path:
    root.mkdir()
    labels = np.repeat(np.arange(10), 15)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    _write_idx(root / "train-images-idx3-ubyte.gz", images)
    _write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images[:20])
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels[:20])
    return root


def test_registry_names() -> None:
    assert set(DATASETS) == KNOWN
    assert LIST_DEFINED == {"imagenet_lt", "places_lt"}
    assert set(data_pkg.__all__) <= set(dir(data_pkg))


def test_unknown_name_lists_the_known_ones() -> None:
    known = "cifar100_lt, cifar10_lt, fashion_mnist_lt, fashion_mnist_lt_open, imagenet_lt, places_lt"
    with pytest.raises(DatasetError, match=f"unknown dataset 'mnist_lt'; known datasets: {known}"):
        DatasetConfig(name="mnist_lt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "fashion_mnist_lt", "n_max": 0}, "dataset.n_max must be an integer >= 1"),
        ({"name": "fashion_mnist_lt", "n_max": 10.5}, "dataset.n_max must be an integer >= 1"),
        ({"name": "cifar10_lt", "imbalance_factor": 0.5}, "imbalance_factor must be a number >= 1"),
        ({"name": "cifar10_lt", "imbalance_factor": "100"}, "imbalance_factor must be a number"),
        ({"name": "cifar10_lt", "val_per_class": -1}, "val_per_class must be an integer >= 0"),
        ({"name": "cifar10_lt", "seed": -3}, "seed must be an integer >= 0"),
        ({"name": "imagenet_lt", "n_max": 100}, "n_max does not apply to imagenet_lt"),
        ({"name": "places_lt", "val_per_class": 20}, "val_per_class does not apply to places_lt"),
        ({"name": "cifar100_lt", "list_dir": "/x"}, "list_dir applies only to imagenet_lt, places"),
        ({"name": "fashion_mnist_lt", "image_size": 32}, "image_size applies only to"),
        ({"name": "cifar10_lt", "download": True}, "download applies only to fashion_mnist_lt"),
        ({"name": "imagenet_lt", "image_size": 0}, "image_size must be an integer >= 1"),
    ],
)
def test_config_rejects_bad_or_inapplicable_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        DatasetConfig(**kwargs)


def test_from_mapping() -> None:
    cfg = DatasetConfig.from_mapping({"name": "cifar100_lt", "n_max": 480, "val_per_class": 20})
    assert cfg == DatasetConfig(name="cifar100_lt", n_max=480, val_per_class=20)
    assert DatasetConfig.from_mapping({"name": "cifar10_lt", "seed": np.int64(3)}).seed == 3
    with pytest.raises(DatasetError, match=r"setting\(s\) \['imbalance'\]; allowed"):
        DatasetConfig.from_mapping({"name": "cifar10_lt", "imbalance": 10})


def test_load_fashion_through_registry(tmp_path: Path) -> None:
    root = _tiny_fashion(tmp_path / "fm")
    cfg = DatasetConfig(name="fashion_mnist_lt", root=str(root), n_max=10, imbalance_factor=5,
                        val_per_class=4, seed=1)
    ds = load_dataset(cfg)
    direct = data_pkg.fashion_mnist_lt(root, n_max=10, imbalance_factor=5, val_per_class=4, seed=1)
    assert np.array_equal(ds.train.images, direct.train.images)
    assert ds.params == direct.params
    split_knobs = {"name", "n_max", "imbalance_factor", "val_per_class", "seed", "source_sha256"}
    assert split_knobs <= set(ds.params)
    # params go into the feature-cache key, which is built from their JSON.
    assert json.loads(json.dumps(ds.params, sort_keys=True)) == ds.params
    reseeded = load_dataset(DatasetConfig(name="fashion_mnist_lt", root=str(root), n_max=10,
                                          imbalance_factor=5, val_per_class=4, seed=2))
    assert reseeded.params != ds.params
    assert not np.array_equal(reseeded.train.images, ds.train.images)


def test_unset_knobs_take_the_readers_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    labels = np.repeat(np.arange(2), 120)
    batch = {b"fine_labels": labels.tolist(), b"data": np.zeros((240, 3072), dtype=np.uint8)}
    for name in ("train", "test"):
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"a", b"b"]}, protocol=2))
    # Default n_max 500 exceeds the 120 images per class here: the reader's error proves
    # the default reached it.
    with pytest.raises(DatasetError, match="class 0 has 120 training images .* asks for 500"):
        load_dataset(DatasetConfig(name="cifar100_lt", root=str(tmp_path)))
    ds = load_dataset(DatasetConfig(name="cifar100_lt", root=str(tmp_path), n_max=100))
    # Default IF 100 with two classes: 100, 100 / 100.
    assert ds.class_counts().tolist() == [100, 1]
    assert ds.params["imbalance_factor"] == 100.0 and ds.params["val_per_class"] == 0
    assert len(ds.val) == 0


def test_load_list_dataset_through_registry(tmp_path: Path) -> None:
    images = tmp_path / "img"
    for split in ("train", "val", "test"):
        (images / split).mkdir(parents=True)
        Image.new("RGB", (4, 4), (9, 9, 9)).save(images / split / "a.png")
        (images / f"ImageNet_LT_{split}.txt").write_text(f"{split}/a.png 0\n{split}/a.png 1\n")
    ds = load_dataset(DatasetConfig(name="imagenet_lt", root=str(images), image_size=8))
    assert ds.num_classes == 2 and len(ds.train) == 2
    assert ds.params["image_size"] == 8
