"""ImageNet-LT and Places-LT from their published split lists (Liu et al. 2019, "OLTR").

The lists define the splits; explore never re-samples them (docs/methods.md#published-split-lists). Each list is a
text file, one image per line, ``relative/path/to/image.JPEG <label>``, named
``ImageNet_LT_{train,val,test}.txt`` or ``Places_LT_{train,val,test}.txt``; the paths are
relative to the image root (the ImageNet / Places-365 images). Published sizes:
ImageNet-LT 1000 classes, 115.8k train images (5–1280 per class), 20 val and 50 test
images per class; Places-LT 365 classes, 62.5k train images (5–4980 per class), 20 val and
100 test images per class.

Splits hold absolute ``paths``; :func:`load_image` decodes one on demand. Class names come
from an optional ``classes.txt`` beside the lists (line ``i`` names class ``i``), else
``class_<i>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explore.data.types import DatasetError, DatasetFilesMissing, ImageSplit, LongTailDataset

CLASS_NAMES_FILE = "classes.txt"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ListLayout:
    """How one list-defined dataset names its files."""

    name: str
    prefix: str
    """List files are ``<prefix>_<split>.txt``."""
    published_num_classes: int

    def list_file(self, split: str) -> str:
        return f"{self.prefix}_{split}.txt"


IMAGENET_LT = ListLayout(name="imagenet_lt", prefix="ImageNet_LT", published_num_classes=1000)
PLACES_LT = ListLayout(name="places_lt", prefix="Places_LT", published_num_classes=365)


def read_split_list(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(relative_paths, labels)`` of one OLTR list file. Blank lines are skipped; the
    label is the last whitespace-separated field, so paths may contain spaces."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFilesMissing(f"split list {path} not found; set dataset.list_dir=")
    paths: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            fields = line.rsplit(maxsplit=1)
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise DatasetError(
                    f"{path}:{line_no}: expected '<relative image path> <integer label>', "
                    f"got {line!r}"
                )
            label = int(fields[1])
            if label < 0:
                raise DatasetError(f"{path}:{line_no}: negative label {label}")
            paths.append(fields[0])
            labels.append(label)
    if not paths:
        raise DatasetError(f"split list {path} is empty")
    return tuple(paths), np.asarray(labels, dtype=np.int64)


def read_class_names(list_dir: Path, num_classes: int) -> tuple[str, ...]:
    """Names from ``list_dir/classes.txt`` when present (one per line), else ``class_<i>``."""
    names_file = list_dir / CLASS_NAMES_FILE
    if not names_file.is_file():
        return tuple(f"class_{i}" for i in range(num_classes))
    names = names_file.read_text(encoding="utf-8").rstrip("\n").split("\n")
    names = [n.strip() for n in names]
    if len(names) < num_classes or any(not n for n in names):
        raise DatasetError(
            f"{names_file} must name every class, one non-empty name per line: it has "
            f"{len(names)} lines, the lists use {num_classes} classes"
        )
    return tuple(names)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def list_lt(
    image_root: str | Path | None,
    layout: ListLayout,
    list_dir: str | Path | None = None,
    image_size: int | None = None,
) -> LongTailDataset:
    """A list-defined long-tail dataset. ``list_dir`` defaults to ``image_root``.

    Checks that the image root exists and that the first image of every list is there
    (a cheap guard against a wrong root); other images are only opened when decoded.
    ``image_size`` is recorded in ``params`` for the decoder (see :func:`load_image`).
    """
    if image_root is None:
        raise DatasetFilesMissing(
            f"{layout.name} needs dataset.root= (the image directory the paths in "
            f"{layout.list_file('train')} are relative to)"
        )
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise DatasetFilesMissing(f"{layout.name}: image root {image_root} is not a directory")
    list_dir = Path(list_dir) if list_dir is not None else image_root
    if image_size is not None and (int(image_size) != image_size or image_size < 1):
        raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")

    rel_paths: dict[str, tuple[str, ...]] = {}
    labels: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for split in SPLITS:
        list_path = list_dir / layout.list_file(split)
        rel_paths[split], labels[split] = read_split_list(list_path)
        digests[list_path.name] = _sha256(list_path)
        first = image_root / rel_paths[split][0]
        if not first.is_file():
            raise DatasetFilesMissing(
                f"{layout.name}: {first} (line 1 of {list_path.name}) does not exist; set "
                f"dataset.root= to the directory the listed paths are relative to"
            )

    num_classes = 1 + max(int(y.max()) for y in labels.values())
    if (list_dir / CLASS_NAMES_FILE).is_file():
        digests[CLASS_NAMES_FILE] = _sha256(list_dir / CLASS_NAMES_FILE)
    classes = read_class_names(list_dir, num_classes)

    def split_of(name: str) -> ImageSplit:
        paths = tuple(str(image_root / p) for p in rel_paths[name])
        return ImageSplit(labels=labels[name], paths=paths)

    params = {
        "name": layout.name,
        "split_algorithm": "published-lists",
        "num_classes": len(classes),
        "image_size": None if image_size is None else int(image_size),
        "split_sizes": {s: int(len(labels[s])) for s in SPLITS},
        "source_sha256": digests,
    }
    return LongTailDataset(
        name=layout.name,
        classes=classes,
        train=split_of("train"),
        val=split_of("val"),
        test=split_of("test"),
        params=params,
    )


def imagenet_lt(
    image_root: str | Path | None,
    list_dir: str | Path | None = None,
    image_size: int | None = None,
) -> LongTailDataset:
    """ImageNet-LT from ``ImageNet_LT_{train,val,test}.txt``; see :func:`list_lt`."""
    return list_lt(image_root, IMAGENET_LT, list_dir, image_size)


def places_lt(
    image_root: str | Path | None,
    list_dir: str | Path | None = None,
    image_size: int | None = None,
) -> LongTailDataset:
    """Places-LT from ``Places_LT_{train,val,test}.txt``; see :func:`list_lt`."""
    return list_lt(image_root, PLACES_LT, list_dir, image_size)


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode one image to uint8 H×W×3 RGB.

    With ``size``, the shorter side is resized to ``size`` (bilinear) and the centre
    ``size``×``size`` crop is kept — the usual evaluation transform, so that every image
    of a split stacks into one N×size×size×3 array.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if size is not None and (int(size) != size or size < 1):
        raise DatasetError(f"image size must be a positive integer, got {size!r}")
    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
        if size is not None:
            w, h = rgb.size
            scale = size / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            rgb = rgb.crop((left, top, left + size, top + size))
        return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetFilesMissing(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"image {path} cannot be decoded ({err})") from err


def load_images(paths: Sequence[str | Path], size: int) -> np.ndarray:
    """Decode several images to one uint8 N×size×size×3 array (see :func:`load_image`)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = load_image(path, size)
    return out
