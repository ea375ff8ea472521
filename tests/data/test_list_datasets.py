"""ImageNet-LT / Places-LT from published-style split lists (explore/data/list_datasets.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explore.data.list_datasets import imagenet_lt, load_image, load_images, places_lt
from explore.data.types import DatasetError, DatasetFilesMissing

COLORS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}


def _write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _write_lists(root: Path, prefix: str) -> dict[str, list[tuple[str, int]]]:
    """Images under root/images, lists under root/lists; train is long-tailed 4/2/1."""
    entries = {
        "train": [(f"train/c{c}/{i}.png", c) for c, n in ((0, 4), (1, 2), (2, 1))
                  for i in range(n)],
        "val": [(f"val/{c}.png", c) for c in range(3)],
        "test": [(f"test/{c}_{i}.jpg", c) for c in range(3) for i in range(2)],
    }
    for split, rows in entries.items():
        for rel, label in rows:
            _write_image(root / "images" / rel, COLORS[label])
        (root / "lists").mkdir(exist_ok=True)
        text = "".join(f"{rel} {label}\n" for rel, label in rows)
        (root / "lists" / f"{prefix}_{split}.txt").write_text(text + "\n")
    return entries


def test_imagenet_lt_keeps_the_lists_exactly(tmp_path: Path) -> None:
    entries = _write_lists(tmp_path, "ImageNet_LT")
    ds = imagenet_lt(tmp_path / "images", tmp_path / "lists", image_size=4)
    assert ds.name == "imagenet_lt"
    assert ds.class_counts().tolist() == [4, 2, 1]
    for split in ("train", "val", "test"):
        got = getattr(ds, split)
        assert got.images is None
        assert got.paths == tuple(str(tmp_path / "images" / rel) for rel, _ in entries[split])
        assert got.labels.tolist() == [label for _, label in entries[split]]
        assert all(Path(p).is_absolute() for p in got.paths)
    assert ds.classes == ("class_0", "class_1", "class_2")
    assert ds.params["image_size"] == 4
    assert ds.params["split_sizes"] == {"train": 7, "val": 3, "test": 6}
    assert set(ds.params["source_sha256"]) == {
        "ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"
    }
    decoded = load_images(ds.train.paths, 4)
    assert decoded.shape == (7, 4, 4, 3)
    assert (decoded[ds.train.labels == 1] == np.array(COLORS[1], dtype=np.uint8)).all()


def test_places_lt_class_names_and_digest(tmp_path: Path) -> None:
    _write_lists(tmp_path, "Places_LT")
    (tmp_path / "lists" / "classes.txt").write_text("abbey\nairport\nalley\n")
    ds = places_lt(tmp_path / "images", tmp_path / "lists")
    assert ds.classes == ("abbey", "airport", "alley")
    assert "classes.txt" in ds.params["source_sha256"]

    with (tmp_path / "lists" / "Places_LT_val.txt").open("a") as f:
        f.write("val/0.png 0\n")
    changed = places_lt(tmp_path / "images", tmp_path / "lists")
    assert len(changed.val) == 4
    old, new = ds.params["source_sha256"], changed.params["source_sha256"]
    assert new["Places_LT_val.txt"] != old["Places_LT_val.txt"]
    assert new["Places_LT_train.txt"] == old["Places_LT_train.txt"]

    (tmp_path / "lists" / "classes.txt").write_text("abbey\nairport\n")
    with pytest.raises(DatasetError, match="classes.txt must name every class"):
        places_lt(tmp_path / "images", tmp_path / "lists")


def test_list_dir_defaults_to_image_root(tmp_path: Path) -> None:
    _write_lists(tmp_path, "ImageNet_LT")
    for split in ("train", "val", "test"):
        name = f"ImageNet_LT_{split}.txt"
        (tmp_path / "lists" / name).rename(tmp_path / "images" / name)
    assert len(imagenet_lt(tmp_path / "images").train) == 7


def test_list_errors(tmp_path: Path) -> None:
    _write_lists(tmp_path, "ImageNet_LT")
    images, lists = tmp_path / "images", tmp_path / "lists"
    with pytest.raises(DatasetFilesMissing, match="Places_LT_train.txt not found"):
        places_lt(images, lists)
    with pytest.raises(DatasetFilesMissing, match="image root .*nowhere is not a directory"):
        imagenet_lt(tmp_path / "nowhere", lists)
    with pytest.raises(DatasetFilesMissing, match=r"line 1 of ImageNet_LT_train.txt\) does not"):
        imagenet_lt(lists, lists)
    with pytest.raises(DatasetFilesMissing, match="needs dataset.root="):
        imagenet_lt(None, lists)
    (lists / "ImageNet_LT_val.txt").write_text("val/0.png 0\nval/1.png one\n")
    with pytest.raises(DatasetError, match=r"ImageNet_LT_val.txt:2: expected '<relative image"):
        imagenet_lt(images, lists)


def test_load_image_resizes_and_centre_crops(tmp_path: Path) -> None:
    # 12×4 image: left half red, right half blue. Shorter side is already 4, so the
    # centre 4×4 crop spans columns 4..7: two red columns, then two blue ones.
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, :6] = COLORS[0]
    pixels[:, 6:] = COLORS[2]
    Image.fromarray(pixels).save(tmp_path / "halves.png")
    full = load_image(tmp_path / "halves.png")
    assert np.array_equal(full, pixels)
    crop = load_image(tmp_path / "halves.png", 4)
    assert crop.shape == (4, 4, 3) and crop.dtype == np.uint8
    assert (crop[:, :2] == COLORS[0]).all() and (crop[:, 2:] == COLORS[2]).all()

    Image.new("L", (10, 20), 77).save(tmp_path / "gray.png")
    gray = load_image(tmp_path / "gray.png", 5)
    assert gray.shape == (5, 5, 3) and (gray == 77).all()

    _write_image(tmp_path / "green.jpg", COLORS[1], size=(16, 16))
    jpeg = load_image(tmp_path / "green.jpg", 8)
    assert jpeg.shape == (8, 8, 3)
    assert abs(int(jpeg[..., 1].mean()) - 255) < 8 and jpeg[..., 0].mean() < 8


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetFilesMissing, match="missing.png not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match="bad.jpg cannot be decoded"):
        load_image(tmp_path / "bad.jpg")
    _write_image(tmp_path / "ok.png", COLORS[0])
    with pytest.raises(DatasetError, match="image size must be a positive integer"):
        load_image(tmp_path / "ok.png", 0)
