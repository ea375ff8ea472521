"""CIFAR-10-LT / CIFAR-100-LT from tiny pickles in the real on-disk format (data/cifar.py)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from explore.data.cifar import cifar10_lt, cifar100_lt, load_cifar_pickle
from explore.data.types import DatasetError, DatasetFilesMissing

NAMES = [b"apple", b"bus", b"cat"]


def _rows(ids: np.ndarray) -> np.ndarray:
    """N×3072 uint8 rows (R plane, G plane, B plane); row of id i carries i in pixel (0,0)
    of the red and green planes, and random noise elsewhere."""
    data = np.random.default_rng(int(ids[0]) if len(ids) else 0).integers(
        0, 256, size=(len(ids), 3072), dtype=np.uint8
    )
    data[:, 0] = ids % 256
    data[:, 1024] = ids // 256
    return data


def _tag(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 0, 1].astype(np.int64)


def _dump(path: Path, obj: dict, protocol: int = 2) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _write_cifar10(root: Path, per_class: int = 30) -> np.ndarray:
    """5 train batches + test batch for 3 classes; returns the train labels in file order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(3), per_class))
    ids = np.arange(len(labels))
    for b, chunk in enumerate(np.array_split(ids, 5), start=1):
        _dump(folder / f"data_batch_{b}", {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": labels[chunk].tolist(),
            b"data": _rows(chunk),
            b"filenames": [f"img_{i}.png".encode() for i in chunk],
        })
    test_ids = np.arange(1000, 1006)
    _dump(folder / "test_batch", {b"labels": [0, 1, 2, 0, 1, 2], b"data": _rows(test_ids)})
    _dump(folder / "batches.meta", {b"label_names": NAMES, b"num_vis": 3072})
    return labels


def _write_cifar100(folder: Path, per_class: int = 30) -> np.ndarray:
    folder.mkdir(parents=True)
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(3), per_class))
    _dump(folder / "train", {
        b"fine_labels": labels.tolist(),
        b"coarse_labels": [0] * len(labels),
        b"data": _rows(np.arange(len(labels))),
    }, protocol=pickle.HIGHEST_PROTOCOL)
    _dump(folder / "test", {
        b"fine_labels": [2, 1, 0], b"coarse_labels": [0, 0, 0], b"data": _rows(np.arange(500, 503)),
    })
    _dump(folder / "meta", {b"fine_label_names": NAMES, b"coarse_label_names": [b"all"]})
    return labels


def test_cifar10_lt_reads_pickles_and_builds_splits(tmp_path: Path) -> None:
    labels = _write_cifar10(tmp_path)
    ds = cifar10_lt(tmp_path, n_max=20, imbalance_factor=4, val_per_class=5, seed=0)
    assert ds.classes == ("apple", "bus", "cat")
    # 20 · 4^(−c/2): 20, 10, 5.
    assert ds.class_counts().tolist() == [20, 10, 5]
    assert np.bincount(ds.val.labels, minlength=3).tolist() == [5, 5, 5]
    train_ids, val_ids = _tag(ds.train.images), _tag(ds.val.images)
    assert not set(train_ids.tolist()) & set(val_ids.tolist())
    assert np.array_equal(labels[train_ids], ds.train.labels)
    assert np.array_equal(labels[val_ids], ds.val.labels)
    assert ds.test.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert _tag(ds.test.images).tolist() == list(range(1000, 1006))
    assert ds.train.images.shape[1:] == (32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.params["name"] == "cifar10_lt"
    assert set(ds.params["source_sha256"]) == {
        "batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))
    }


def test_channel_layout_is_row_major_chw(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    ds = cifar10_lt(tmp_path, n_max=30, imbalance_factor=10)
    raw = _rows(np.arange(1000, 1006))
    image = ds.test.images[4]
    for c in range(3):
        for y in (0, 7, 31):
            for x in (0, 13, 31):
                assert image[y, x, c] == raw[4, c * 1024 + y * 32 + x]


def test_published_defaults_leave_val_empty(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    ds = cifar10_lt(tmp_path, n_max=30, imbalance_factor=10)
    assert ds.class_counts().tolist() == [30, 9, 3]  # 30 · 10^(−1/2) = 9.49
    assert len(ds.val) == 0 and ds.val.images.shape == (0, 32, 32, 3)
    with pytest.raises(DatasetError, match="class 0 has only 0 training images left .* lower"):
        cifar10_lt(tmp_path, n_max=30, imbalance_factor=10, val_per_class=1)


def test_cifar100_lt_fine_labels_and_folder_as_root(tmp_path: Path) -> None:
    labels = _write_cifar100(tmp_path / "cifar-100-python")
    a = cifar100_lt(tmp_path, n_max=24, imbalance_factor=8, val_per_class=2, seed=4)
    b = cifar100_lt(tmp_path / "cifar-100-python", n_max=24, imbalance_factor=8, val_per_class=2,
                    seed=4)
    assert a.class_counts().tolist() == [24, 8, 3]  # 24 · 8^(−1/2) = 8.49
    assert np.array_equal(_tag(a.train.images), _tag(b.train.images))
    assert np.array_equal(labels[_tag(a.train.images)], a.train.labels)
    assert a.test.labels.tolist() == [2, 1, 0]
    assert a.params["source_sha256"] == b.params["source_sha256"]


def test_legacy_numpy_module_names_load(tmp_path: Path) -> None:
    # The real files were pickled by numpy 1.x under Python 2: they name numpy.core.multiarray.
    path = tmp_path / "legacy"
    blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    batch, _ = load_cifar_pickle(path)
    assert batch["data"].tolist() == [0, 1, 2, 3, 4, 5]


class _Sneaky:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_pickle_with_foreign_globals_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": _Sneaky()}))
    with pytest.raises(DatasetError, match="evil: not a readable CIFAR pickle .*getcwd is not"):
        load_cifar_pickle(path)


def test_damaged_and_missing_files(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="data_batch_3: not a readable CIFAR pickle"):
        cifar10_lt(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetFilesMissing, match="data_batch_3: no such file"):
        cifar10_lt(tmp_path)
    with pytest.raises(DatasetFilesMissing, match="no cifar-100-python/meta under"):
        cifar100_lt(tmp_path)
    with pytest.raises(DatasetFilesMissing, match="needs dataset.root="):
        cifar10_lt(None)


def test_wrong_shape_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder)
    _dump(folder / "test", {b"fine_labels": [0], b"data": np.zeros((1, 1024), dtype=np.uint8)})
    with pytest.raises(DatasetError, match=r"test: 'data' must be N×3072 uint8, got \(1, 1024\)"):
        cifar100_lt(tmp_path)
