"""Fashion-MNIST IDX reading and the Fashion-MNIST-LT splits (explore/data/fashion_mnist.py)."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from explore.data.fashion_mnist import (
    DEFAULT_ROOT,
    FASHION_MNIST_CLASSES,
    IdxFormatError,
    fashion_mnist_lt,
    read_fashion_mnist,
    read_idx,
)
from explore.data.types import DatasetFilesMissing
from explore.splits import SplitThresholds


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array, written from the format spec (not the reader)."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _tagged_images(n: int) -> np.ndarray:
    """n distinct 28×28 images; image i carries i in its first two pixels."""
    images = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    return images


def _tag(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0].astype(np.int64) + 256 * images[:, 0, 1].astype(np.int64)


def _write_tiny_fashion(root: Path, train_per_class: int = 12, test_per_class: int = 2) -> tuple:
    rng = np.random.default_rng(1)
    train_labels = rng.permutation(np.repeat(np.arange(10), train_per_class)).astype(np.uint8)
    test_labels = np.repeat(np.arange(10), test_per_class).astype(np.uint8)
    train_images = _tagged_images(len(train_labels))
    test_images = _tagged_images(len(test_labels))
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", train_images, gz=True)
    _write_idx(root / "train-labels-idx1-ubyte.gz", train_labels, gz=True)
    _write_idx(root / "t10k-images-idx3-ubyte", test_images, gz=False)
    _write_idx(root / "t10k-labels-idx1-ubyte", test_labels, gz=False)
    return train_images, train_labels, test_images, test_labels


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = _write_idx(tmp_path / "x-idx3-ubyte", images, gz)
    got = read_idx(path, expected_magic=0x803)
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    assert np.array_equal(got, images)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    assert read_idx(_write_idx(tmp_path / "y", labels, gz), 0x801).tolist() == [3, 1, 4, 1, 5]


def test_read_idx_rejects_truncated_and_corrupt_files(tmp_path: Path) -> None:
    images = np.zeros((4, 5, 5), dtype=np.uint8)
    data = _idx_bytes(images)

    raw = tmp_path / "short-idx3-ubyte"
    raw.write_bytes(data[:-7])
    message = r"short-idx3-ubyte: truncated IDX.*100 data bytes, found 93"
    with pytest.raises(IdxFormatError, match=message):
        read_idx(raw)

    long = tmp_path / "long-idx3-ubyte"
    long.write_bytes(data + b"\x00\x00")
    with pytest.raises(IdxFormatError, match="long-idx3-ubyte: corrupt IDX file: 2 bytes after"):
        read_idx(long)

    gz = tmp_path / "cut-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(IdxFormatError, match="cut-idx3-ubyte.gz: corrupt or truncated gzip"):
        read_idx(gz)

    junk = tmp_path / "junk"
    junk.write_bytes(b"PK\x03\x04" + bytes(50))
    with pytest.raises(IdxFormatError, match="junk: not an IDX file"):
        read_idx(junk)

    header_only = tmp_path / "hdr"
    header_only.write_bytes(data[:6])
    with pytest.raises(IdxFormatError, match="hdr: truncated IDX header"):
        read_idx(header_only)

    labels = _write_idx(tmp_path / "labels", np.zeros(3, dtype=np.uint8), gz=False)
    with pytest.raises(IdxFormatError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(labels, expected_magic=0x803)


def test_fashion_mnist_lt_on_tiny_files(tmp_path: Path) -> None:
    _train_x, train_y, test_x, test_y = _write_tiny_fashion(tmp_path)
    ds = fashion_mnist_lt(tmp_path, n_max=8, imbalance_factor=4, val_per_class=3, seed=2)

    # 8 · 4^(−c/9): hand-computed 8, 6.85, 5.88, 5.04, 4.32, 3.70, 3.17, 2.72, 2.33, 2.
    assert ds.class_counts().tolist() == [8, 6, 5, 5, 4, 3, 3, 2, 2, 2]
    assert ds.classes == FASHION_MNIST_CLASSES and ds.num_classes == 10
    assert np.bincount(ds.val.labels, minlength=10).tolist() == [3] * 10

    train_ids, val_ids = _tag(ds.train.images), _tag(ds.val.images)
    assert not set(train_ids.tolist()) & set(val_ids.tolist())
    assert len(set(train_ids.tolist())) == len(train_ids)
    # Each image keeps its own label.
    assert np.array_equal(train_y[train_ids], ds.train.labels)
    assert np.array_equal(train_y[val_ids], ds.val.labels)
    assert np.array_equal(ds.test.images, test_x) and np.array_equal(ds.test.labels, test_y)

    again = fashion_mnist_lt(tmp_path, n_max=8, imbalance_factor=4, val_per_class=3, seed=2)
    assert np.array_equal(_tag(again.train.images), train_ids)
    assert np.array_equal(_tag(again.val.images), val_ids)
    other = fashion_mnist_lt(tmp_path, n_max=8, imbalance_factor=4, val_per_class=3, seed=3)
    assert not np.array_equal(_tag(other.train.images), train_ids)

    assert ds.params["seed"] == 2 and ds.params["n_max"] == 8
    assert ds.params["imbalance_factor"] == 4.0 and ds.params["val_per_class"] == 3
    assert set(ds.params["source_sha256"]) == {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    }


def test_digest_is_of_content_not_compression(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_tiny_fashion(a)
    _write_tiny_fashion(b)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (b / f"{name}.gz").unlink()
        (b / name).write_bytes(gzip.decompress((a / f"{name}.gz").read_bytes()))
    assert read_fashion_mnist(a)[4] == read_fashion_mnist(b)[4]


def test_missing_files_error_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetFilesMissing, match="apt-get install dataset-fashion-mnist.*root="):
        fashion_mnist_lt(tmp_path / "nowhere")


def test_download_without_torchvision_is_a_clear_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed; downloading would need the network")
    with pytest.raises(DatasetFilesMissing, match="needs torchvision"):
        fashion_mnist_lt(tmp_path, download=True)


def test_val_larger_than_leftover_is_a_clear_error(tmp_path: Path) -> None:
    _write_tiny_fashion(tmp_path)
    with pytest.raises(ValueError, match="class 0 has only 4 training images left"):
        fashion_mnist_lt(tmp_path, n_max=8, imbalance_factor=4, val_per_class=5)


@pytest.mark.skipif(
    not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_lt() -> None:
    train_x, train_y, test_x, test_y, _ = read_fashion_mnist()
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10

    start = time.perf_counter()
    ds = fashion_mnist_lt()
    assert time.perf_counter() - start < 5.0

    counts = ds.class_counts()
    assert counts.tolist() == [1000, 555, 308, 170, 94, 52, 29, 16, 9, 5]
    split = SplitThresholds().split_of_class(counts)
    n_many, n_medium, n_few = (int((split == s).sum()) for s in ("many", "medium", "few"))
    assert (n_many, n_medium, n_few) == (4, 3, 3)
    assert n_many + n_medium >= 5
    assert np.bincount(ds.val.labels).tolist() == [100] * 10
    assert len(ds.test) == 10000
    assert ds.train.images.shape[1:] == (28, 28)
