"""Fashion-MNIST-LT: the bundled real dataset (docs/methods.md#fashion-mnist-lt).

Source: Xiao et al. 2017, 10 classes, 60 000 train / 10 000 test grayscale 28×28 images in
IDX files. Debian ships them in the package ``dataset-fashion-mnist`` under
``/usr/share/datasets/fashion-mnist``.

Project defaults (explore's choice; the papers do not use this dataset):

* long-tail train split by the exponential profile with ``n_max = 1000``, ``IF = 200``:
  ``[1000, 555, 308, 170, 94, 52, 29, 16, 9, 5]`` training images per class, i.e. with the
  default thresholds (many > 100, few < 20) 4 many, 3 medium and 3 few classes, 7 base
  classes. Class order is the official label order, so class 0 (T-shirt/top) is the head.
* validation: 100 images per class, drawn from the 60k train images the long-tail split
  did not keep;
* test: the official, balanced t10k set (1000 per class).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from explore.data.longtail import SPLIT_ALGORITHM, exponential_profile, long_tail_split
from explore.data.types import (
    DatasetError,
    DatasetFilesMissing,
    ImageSplit,
    LongTailDataset,
)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_N_MAX = 1000
DEFAULT_IMBALANCE_FACTOR = 200.0
DEFAULT_VAL_PER_CLASS = 100

# Base file names (each may also be stored gzipped, with a .gz suffix).
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# IDX magic numbers: two zero bytes, a type code, the number of dimensions.
IDX_MAGIC_IMAGES = 0x00000803  # uint8, 3 dims
IDX_MAGIC_LABELS = 0x00000801  # uint8, 1 dim

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(DatasetError):
    """An IDX file is truncated, corrupt or not the kind of IDX file expected."""


def read_idx_bytes(path: str | Path) -> bytes:
    """The uncompressed IDX bytes of ``path``, gunzipped if the file is gzip (by content)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFilesMissing(f"{path}: no such file") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip file ({err}); re-download it")


def parse_idx(data: bytes, source: str, expected_magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``source`` names the file in errors."""
    if len(data) < 4:
        raise IdxFormatError(f"{source}: truncated IDX file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise IdxFormatError(f"{source}: not an IDX file (magic number 0x{magic:08x})")
    if expected_magic is not None and magic != expected_magic:
        raise IdxFormatError(
            f"{source}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(wrong file for this role?)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[data[2]]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise IdxFormatError(
            f"{source}: truncated IDX file: shape {shape} needs {expected} data bytes, "
            f"found {found}"
        )
    if found > expected:
        raise IdxFormatError(
            f"{source}: corrupt IDX file: {found - expected} bytes after the data of shape {shape}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # A writable, native-endian copy: frombuffer over bytes is read-only.
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw), checking its magic number, header and length."""
    return parse_idx(read_idx_bytes(path), str(path), expected_magic)


def _candidate_dirs(root: Path) -> tuple[Path, ...]:
    # torchvision's FashionMNIST(download=True) writes to <root>/FashionMNIST/raw.
    return (root, root / "FashionMNIST" / "raw")


def find_fashion_mnist_files(root: str | Path) -> dict[str, Path] | None:
    """Path of each of the four IDX files under ``root`` (gzip preferred), or None if any
    is missing."""
    root = Path(root)
    for directory in _candidate_dirs(root):
        found = {}
        for name in _FILES:
            for candidate in (directory / f"{name}.gz", directory / name):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(_FILES):
            return found
    return None


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        raise DatasetFilesMissing(
            f"Fashion-MNIST files not found under {root} and download=True needs torchvision, "
            f"which is not installed: apt-get install dataset-fashion-mnist, or set dataset.root="
        ) from None
    try:
        for train in (True, False):
            FashionMNIST(root=str(root), train=train, download=True)
    except Exception as err:  # network and disk errors of any kind end up here
        raise DatasetFilesMissing(
            f"downloading Fashion-MNIST into {root} failed ({err}); "
            f"apt-get install dataset-fashion-mnist, or set dataset.root="
        ) from err


def locate_fashion_mnist(root: str | Path | None = None, download: bool = False) -> dict[str, Path]:
    """The four IDX files under ``root`` (default: the Debian location), downloading them
    with torchvision first when they are missing and ``download`` is true."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    files = find_fashion_mnist_files(root)
    if files is None and download:
        _download(root)
        files = find_fashion_mnist_files(root)
    if files is None:
        raise DatasetFilesMissing(
            f"Fashion-MNIST not found under {root} (need {', '.join(_FILES)}, optionally .gz): "
            f"apt-get install dataset-fashion-mnist, or set dataset.root= to a directory "
            f"holding them (dataset.download=true fetches them when torchvision is installed)"
        )
    return files


def read_fashion_mnist(
    root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """``(train_images, train_labels, test_images, test_labels, sha256_by_file)``.

    Images are uint8 N×28×28, labels int64. The digests are of the uncompressed IDX bytes,
    so a gzip and a raw copy of the same file give the same digest.
    """
    files = locate_fashion_mnist(root, download)
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for name, path in files.items():
        data = read_idx_bytes(path)
        digests[name] = hashlib.sha256(data).hexdigest()
        magic = IDX_MAGIC_IMAGES if "images" in name else IDX_MAGIC_LABELS
        arrays[name] = parse_idx(data, str(path), magic)
    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images, labels = arrays[images_name], arrays[labels_name]
        if len(images) != len(labels):
            raise DatasetError(
                f"{files[images_name]} holds {len(images)} images but {files[labels_name]} "
                f"holds {len(labels)} labels"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"{files[labels_name]}: label {labels.max()} is not in 0..9")
    return (
        arrays[TRAIN_IMAGES],
        arrays[TRAIN_LABELS].astype(np.int64),
        arrays[TEST_IMAGES],
        arrays[TEST_LABELS].astype(np.int64),
        digests,
    )


def fashion_mnist_lt(
    root: str | Path | None = None,
    *,
    n_max: int = DEFAULT_N_MAX,
    imbalance_factor: float = DEFAULT_IMBALANCE_FACTOR,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    seed: int = 0,
    download: bool = False,
) -> LongTailDataset:
    """Fashion-MNIST-LT: exponential-profile train split, balanced val held out from the
    unused train images, the official t10k test set. Deterministic in ``seed``."""
    train_x, train_y, test_x, test_y, digests = read_fashion_mnist(root, download)
    num_classes = len(FASHION_MNIST_CLASSES)
    counts = exponential_profile(n_max, imbalance_factor, num_classes)
    train_idx, val_idx = long_tail_split(train_y, counts, val_per_class, seed)
    params = {
        "name": "fashion_mnist_lt",
        "n_max": int(n_max),
        "imbalance_factor": float(imbalance_factor),
        "val_per_class": int(val_per_class),
        "seed": int(seed),
        "split_algorithm": SPLIT_ALGORITHM,
        "num_classes": num_classes,
        "train_counts": counts.tolist(),
        "source_sha256": dict(sorted(digests.items())),
    }
    return LongTailDataset(
        name="fashion_mnist_lt",
        classes=FASHION_MNIST_CLASSES,
        train=ImageSplit(labels=train_y[train_idx], images=train_x[train_idx]),
        val=ImageSplit(labels=train_y[val_idx], images=train_x[val_idx]),
        test=ImageSplit(labels=test_y, images=test_x),
        params=params,
    )
