"""CIFAR-10-LT and CIFAR-100-LT (Cao et al. 2019; Cui et al. 2019) from the python pickles.

Input: the "python version" archives of Krizhevsky's CIFAR, unpacked, i.e.
``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<root>/cifar-100-python/{train, test, meta}`` (``root`` may also be that folder itself).
Each batch is a pickled dict with byte-string keys: ``b'data'`` (N×3072 uint8, each row the
red, green then blue 32×32 plane), ``b'labels'`` (CIFAR-10) or ``b'fine_labels'``
(CIFAR-100). Images are returned as N×32×32×3 uint8.

Long-tail train split by the exponential profile, published defaults: CIFAR-10-LT
``n_max = 5000``, CIFAR-100-LT ``n_max = 500``, ``IF = 100``. The official test set is the
test split.

Validation: the papers use none (AlphaNet then keeps the last epoch), and with the published
``n_max`` the head class keeps *all* its training images, so no balanced hold-out from
unused images exists. Hence ``val_per_class`` defaults to 0 (an empty validation split);
to get one, lower ``n_max`` to at most ``images per class − val_per_class`` (e.g.
CIFAR-100-LT ``n_max=480, val_per_class=20``).

The pickles are read with an unpickler that only rebuilds numpy arrays and builtin
containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explore.data.longtail import SPLIT_ALGORITHM, exponential_profile, long_tail_split
from explore.data.types import DatasetError, DatasetFilesMissing, ImageSplit, LongTailDataset

DEFAULT_IMBALANCE_FACTOR = 100.0
DEFAULT_VAL_PER_CLASS = 0


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which keys it uses."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: str
    names_key: str
    default_n_max: int


CIFAR10 = CifarLayout(
    name="cifar10_lt",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    labels_key="labels",
    names_key="label_names",
    default_n_max=5000,
)
CIFAR100 = CifarLayout(
    name="cifar100_lt",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    labels_key="fine_labels",
    names_key="fine_label_names",
    default_n_max=500,
)

# Globals a CIFAR pickle may reference: numpy's array rebuilders (numpy 1.x and 2.x module
# names; protocol 2 and protocol 5 forms) and the codec Python uses for bytes in protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _key(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def load_cifar_pickle(path: Path) -> tuple[dict[str, Any], str]:
    """One CIFAR pickle as a dict with ``str`` keys, and the sha256 of the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFilesMissing(f"{path}: no such file") from None
    try:
        # encoding="bytes" keeps the Python 2 str payloads of the real files as bytes.
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # pickle raises many kinds of error on damaged input
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({err})") from err
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {_key(k): v for k, v in obj.items()}, hashlib.sha256(data).hexdigest()


def _batch_arrays(
    batch: dict[str, Any], labels_key: str, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", labels_key):
        if key not in batch:
            raise DatasetError(f"{path}: no '{key}' entry (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[labels_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: 'data' must be N×3072 uint8, got {data.shape} {data.dtype}"
        )
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but {labels.size} labels")
    # Rows are channel-major (R plane, G plane, B plane): N×3×32×32 → N×32×32×3.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _find_folder(root: str | Path | None, layout: CifarLayout) -> Path:
    if root is None:
        raise DatasetFilesMissing(
            f"{layout.name} needs dataset.root= pointing at the directory that holds "
            f"{layout.folder}/ (the CIFAR 'python version' archive, unpacked)"
        )
    root = Path(root)
    for folder in (root / layout.folder, root):
        if (folder / layout.meta_file).is_file():
            return folder
    raise DatasetFilesMissing(
        f"{layout.name}: no {layout.folder}/{layout.meta_file} under {root}; set dataset.root= "
        f"to the directory holding {layout.folder}/ (the CIFAR 'python version', unpacked)"
    )


def read_cifar(
    root: str | Path | None, layout: CifarLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], dict[str, str]]:
    """``(train_images, train_labels, test_images, test_labels, class_names, sha256_by_file)``
    of one CIFAR variant; images N×32×32×3 uint8, labels int64."""
    folder = _find_folder(root, layout)
    digests: dict[str, str] = {}

    meta, digests[layout.meta_file] = load_cifar_pickle(folder / layout.meta_file)
    if layout.names_key not in meta:
        raise DatasetError(f"{folder / layout.meta_file}: no '{layout.names_key}' entry")
    classes = tuple(_text(n) for n in meta[layout.names_key])

    def read(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for name in files:
            batch, digests[name] = load_cifar_pickle(folder / name)
            x, y = _batch_arrays(batch, layout.labels_key, folder / name)
            if y.size and (y.min() < 0 or y.max() >= len(classes)):
                raise DatasetError(
                    f"{folder / name}: labels must lie in [0, {len(classes)}), found "
                    f"[{y.min()}, {y.max()}]"
                )
            images.append(x)
            labels.append(y)
        return np.concatenate(images), np.concatenate(labels)

    train_x, train_y = read(layout.train_files)
    test_x, test_y = read((layout.test_file,))
    return train_x, train_y, test_x, test_y, classes, dict(sorted(digests.items()))


def cifar_lt(
    root: str | Path | None,
    layout: CifarLayout,
    *,
    n_max: int | None = None,
    imbalance_factor: float = DEFAULT_IMBALANCE_FACTOR,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    seed: int = 0,
) -> LongTailDataset:
    """A CIFAR-LT dataset: exponential-profile train split (class 0 the head), balanced val
    from the unused train images, official test set. ``n_max`` defaults to the layout's."""
    n_max = layout.default_n_max if n_max is None else n_max
    train_x, train_y, test_x, test_y, classes, digests = read_cifar(root, layout)
    counts = exponential_profile(n_max, imbalance_factor, len(classes))
    train_idx, val_idx = long_tail_split(train_y, counts, val_per_class, seed)
    params = {
        "name": layout.name,
        "n_max": int(n_max),
        "imbalance_factor": float(imbalance_factor),
        "val_per_class": int(val_per_class),
        "seed": int(seed),
        "split_algorithm": SPLIT_ALGORITHM,
        "num_classes": len(classes),
        "train_counts": counts.tolist(),
        "source_sha256": digests,
    }
    return LongTailDataset(
        name=layout.name,
        classes=classes,
        train=ImageSplit(labels=train_y[train_idx], images=train_x[train_idx]),
        val=ImageSplit(labels=train_y[val_idx], images=train_x[val_idx]),
        test=ImageSplit(labels=test_y, images=test_x),
        params=params,
    )


def cifar10_lt(root: str | Path | None, **kwargs: Any) -> LongTailDataset:
    """CIFAR-10-LT (n_max 5000, IF 100 by default); keyword arguments as :func:`cifar_lt`."""
    return cifar_lt(root, CIFAR10, **kwargs)


def cifar100_lt(root: str | Path | None, **kwargs: Any) -> LongTailDataset:
    """CIFAR-100-LT (n_max 500, IF 100 by default); keyword arguments as :func:`cifar_lt`."""
    return cifar_lt(root, CIFAR100, **kwargs)
