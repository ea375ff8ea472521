"""Fashion-MNIST-LT-open: held-out classes as the auxiliary pool, targets long-tailed.

Reads the real Fashion-MNIST files (Debian package dataset-fashion-mnist)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from explore.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    find_fashion_mnist_files,
    read_fashion_mnist,
)
from explore.data.open_set import AUX_CLASSES, TARGET_CLASSES, fashion_mnist_lt_open
from explore.data.registry import DatasetConfig, load_dataset
from explore.data.types import DatasetError, ImageSplit, LongTailDataset
from explore.splits import SplitThresholds

pytestmark = pytest.mark.skipif(
    find_fashion_mnist_files("/usr/share/datasets/fashion-mnist") is None,
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def _digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(im.tobytes()).hexdigest() for im in images]


@pytest.fixture(scope="module")
def raw():
    train_x, train_y, _test_x, _test_y, _ = read_fashion_mnist()
    # an image's official label, by content (Fashion-MNIST has a few duplicate images:
    # keep every label an image carries)
    labels_of: dict[str, set[int]] = {}
    for d, y in zip(_digests(train_x), train_y):
        labels_of.setdefault(d, set()).add(int(y))
    return labels_of


@pytest.fixture(scope="module")
def ds():
    return fashion_mnist_lt_open()


def test_targets_are_long_tailed_with_every_split_present(ds):
    assert ds.classes == TARGET_CLASSES and ds.aux_classes == AUX_CLASSES
    assert not set(TARGET_CLASSES) & set(AUX_CLASSES)
    assert set(TARGET_CLASSES) | set(AUX_CLASSES) == set(FASHION_MNIST_CLASSES)
    counts = ds.class_counts()
    # n_c = floor(1000 · 200^(−c/6)), computed here independently
    assert counts.tolist() == [int(1000 * 200 ** (-c / 6) + 1e-9) for c in range(7)]
    assert counts.tolist() == [1000, 413, 170, 70, 29, 12, 5]
    split = SplitThresholds().split_of_class(counts).tolist()
    assert split == ["many"] * 3 + ["medium"] * 2 + ["few"] * 2


def test_val_and_test_are_balanced_over_targets_only(ds):
    assert np.bincount(ds.val.labels).tolist() == [100] * 7
    assert np.bincount(ds.test.labels).tolist() == [1000] * 7
    assert ds.aux is not None and np.bincount(ds.aux.labels).tolist() == [300] * 3


def test_every_image_keeps_its_true_class_and_aux_images_are_held_out(ds, raw):
    for split in (ds.train, ds.val):
        for d, y in zip(_digests(split.images), split.labels):
            assert FASHION_MNIST_CLASSES.index(TARGET_CLASSES[y]) in raw[d]
    for d, y in zip(_digests(ds.aux.images), ds.aux.labels):
        assert FASHION_MNIST_CLASSES.index(AUX_CLASSES[y]) in raw[d]
    train, val, aux = (set(_digests(s.images)) for s in (ds.train, ds.val, ds.aux))
    assert not train & val and not train & aux and not val & aux


def test_aux_draw_never_moves_the_target_splits_and_seed_is_deterministic(ds):
    other = fashion_mnist_lt_open(aux_per_class=50)
    assert np.array_equal(other.train.images, ds.train.images)
    assert np.array_equal(other.val.images, ds.val.images)
    assert np.bincount(other.aux.labels).tolist() == [50] * 3
    again = fashion_mnist_lt_open(aux_per_class=50)
    assert np.array_equal(again.aux.images, other.aux.images)
    assert not np.array_equal(fashion_mnist_lt_open(seed=1).train.images, ds.train.images)
    assert ds.params["aux_classes"] == list(AUX_CLASSES) and ds.params["aux_per_class"] == 300


def test_registry_entry_and_its_settings():
    small = load_dataset(DatasetConfig.from_mapping(
        {"name": "fashion_mnist_lt_open", "n_max": 60, "imbalance_factor": 10, "val_per_class": 5,
         "aux_per_class": 20}))
    assert small.num_classes == 7 and small.class_counts()[0] == 60
    assert np.bincount(small.aux.labels).tolist() == [20] * 3
    quick = load_dataset(DatasetConfig(name="fashion_mnist_lt_open", test_per_class=30))
    assert np.bincount(quick.test.labels).tolist() == [30] * 7
    with pytest.raises(DatasetError, match="test_per_class applies only to fashion_mnist_lt_open"):
        DatasetConfig(name="cifar10_lt", test_per_class=10)
    with pytest.raises(DatasetError, match="aux_per_class applies only to fashion_mnist_lt_open"):
        DatasetConfig(name="fashion_mnist_lt", aux_per_class=10)
    with pytest.raises(DatasetError, match="aux_per_class must be an integer >= 1"):
        DatasetConfig(name="fashion_mnist_lt_open", aux_per_class=0)
    with pytest.raises(DatasetError, match="lower dataset.aux_per_class"):
        fashion_mnist_lt_open(aux_per_class=7000)
    assert load_dataset(DatasetConfig(name="fashion_mnist_lt")).aux is None  # others unchanged


def test_long_tail_dataset_checks_its_aux_pool():
    split = ImageSplit(labels=np.array([0, 1]), images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="aux and aux_classes together"):
        LongTailDataset("x", ("a", "b"), split, split, split, aux=split)
    with pytest.raises(ValueError, match=r"aux labels must lie in \[0, 1\)"):
        LongTailDataset("x", ("a", "b"), split, split, split, aux=split, aux_classes=("c",))
    with pytest.raises(ValueError, match="also target classes"):
        LongTailDataset("x", ("a", "b"), split, split, split, aux=split, aux_classes=("c", "a"))
