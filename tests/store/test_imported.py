"""Bring-your-own features: a directory of npz files, validated with one-line errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from explore.classifier import LinearClassifier
from explore.store import (
    FeatureImportError,
    FeatureStore,
    digest_feature_dir,
    feature_key,
    import_feature_dir,
    imported_feature_key,
)

D = 5


def write_dir(
    root: Path,
    *,
    classes: list[str] | None = None,
    classifier: bool = False,
    labels: dict[str, list[int]] | None = None,
) -> Path:
    rng = np.random.default_rng(3)
    labels = labels or {"train": [0, 0, 0, 1, 1, 2], "val": [0, 1, 2], "test": [2, 1, 0, 0]}
    root.mkdir(parents=True, exist_ok=True)
    for split, y in labels.items():
        np.savez(
            root / f"{split}.npz",
            features=rng.standard_normal((len(y), D)),
            labels=np.array(y, dtype=np.int32),
        )
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    if classifier:
        c = len(classes) if classes else 3
        np.savez(root / "classifier.npz", weight=rng.standard_normal((c, D)), bias=np.zeros(c))
    return root


def test_valid_dir_with_classes_and_classifier(tmp_path):
    root = write_dir(tmp_path / "d", classes=["ant", "bee", "cow"], classifier=True)
    fset, clf = import_feature_dir(str(root))
    assert fset.classes == ("ant", "bee", "cow") and fset.d == D
    with np.load(root / "train.npz") as z:
        np.testing.assert_array_equal(fset.train.features, z["features"].astype(np.float32))
        np.testing.assert_array_equal(fset.train.labels, z["labels"])
    assert fset.train.features.dtype == np.float32 and fset.test.labels.dtype == np.int64
    with np.load(root / "classifier.npz") as z:
        np.testing.assert_array_equal(clf.weight, z["weight"].astype(np.float32))
    # The one linear-classifier type of the pipeline: what the base recipes produce.
    assert isinstance(clf, LinearClassifier) and clf.bias.shape == (3,) and clf.num_classes == 3
    np.testing.assert_array_equal(clf.logits(fset.test.features),
                                  fset.test.features @ clf.weight.T + clf.bias)
    # The key is a digest of the bytes: the same files elsewhere hit the same cache entry.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert imported_feature_key(str(root)) == imported_feature_key(str(copy))
    assert imported_feature_key(str(root)) == feature_key(
        {"source": "imported", "files": fset.meta["files"]}
    )
    (copy / "classes.txt").write_text("ant\nbee\ncat\n")
    assert imported_feature_key(str(root)) != imported_feature_key(str(copy))


def test_without_classes_txt_c_is_max_label_plus_one(tmp_path):
    fset, clf = import_feature_dir(str(write_dir(tmp_path / "d")))
    assert fset.classes == ("0", "1", "2") and clf is None


def test_import_through_the_cache_builds_once(tmp_path):
    root = str(write_dir(tmp_path / "d", classes=["a", "b", "c"]))
    store = FeatureStore(str(tmp_path / "store"))
    calls = []

    def build():
        calls.append(1)
        return import_feature_dir(root)[0]

    key = imported_feature_key(root)
    first = store.get_or_build(key, build)
    second = store.get_or_build(key, build)
    assert calls == [1]
    np.testing.assert_array_equal(first.val.features, second.val.features)


def _bad(tmp_path: Path, case: str) -> Path:
    root = tmp_path / case
    if case == "missing_file":
        write_dir(root).joinpath("test.npz").unlink()
    elif case == "missing_array":
        write_dir(root)
        np.savez(root / "val.npz", features=np.zeros((3, D)))
    elif case == "features_1d":
        write_dir(root)
        np.savez(root / "val.npz", features=np.zeros(3), labels=np.zeros(3, int))
    elif case == "n_mismatch":
        write_dir(root)
        np.savez(root / "val.npz", features=np.zeros((3, D)), labels=np.zeros(4, int))
    elif case == "d_mismatch":
        write_dir(root)
        np.savez(root / "test.npz", features=np.zeros((3, D + 1)), labels=np.zeros(3, int))
    elif case == "label_out_of_range":
        write_dir(root, classes=["a", "b"])  # labels go up to 2
    elif case == "negative_label":
        write_dir(root, labels={"train": [0, 1, 2], "val": [0, -1], "test": [0]})
    elif case == "class_without_train_samples":
        write_dir(root, classes=["a", "b", "c", "d"])  # class 3 appears nowhere
    elif case == "gap_in_labels":
        write_dir(root, labels={"train": [0, 2], "val": [0], "test": [1]})
    elif case == "classifier_shape":
        write_dir(root, classes=["a", "b", "c"])
        np.savez(root / "classifier.npz", weight=np.zeros((3, D + 1)), bias=np.zeros(3))
    elif case == "bias_shape":
        write_dir(root, classes=["a", "b", "c"])
        np.savez(root / "classifier.npz", weight=np.zeros((3, D)), bias=np.zeros(4))
    elif case == "classifier_not_finite":
        write_dir(root, classes=["a", "b", "c"])
        np.savez(root / "classifier.npz", weight=np.full((3, D), np.nan), bias=np.zeros(3))
    elif case == "duplicate_classes":
        write_dir(root, classes=["a", "b", "a"])
    return root


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_file", r"lacks \['test.npz'\]"),
        ("missing_array", r"val.npz lacks array\(s\) \['labels'\]"),
        ("features_1d", r"val.npz: features must be 2-D"),
        ("n_mismatch", r"val.npz: features have 3 rows but labels have 4"),
        ("d_mismatch", r"different feature dimensions .*'test': 6"),
        ("label_out_of_range", r"labels go up to 2 but classes.txt names 2 classes"),
        ("negative_label", r"val.npz: labels must lie in \[0, 3\), found -1"),
        ("class_without_train_samples", r"train.npz: class\(es\) \[3\] have no training samples"),
        ("gap_in_labels", r"train.npz: class\(es\) \[1\] have no training samples"),
        ("classifier_not_finite", r"classifier.npz: classifier weight/bias contain NaN or inf"),
        ("classifier_shape", r"classifier.npz: weight must be \(C, d\) = \(3, 5\)"),
        ("bias_shape", r"bias \(3,\), got \(3, 5\) and \(4,\)"),
        ("duplicate_classes", r"duplicate class names"),
    ],
)
def test_bad_dirs_give_one_line_errors(tmp_path, case, message):
    root = _bad(tmp_path, case)
    with pytest.raises(FeatureImportError, match=message) as info:
        import_feature_dir(str(root))
    assert "\n" not in str(info.value)


@pytest.mark.s3
def test_import_from_s3(s3_bucket, tmp_path):
    import boto3

    root = write_dir(tmp_path / "d", classes=["ant", "bee", "cow"], classifier=True)
    s3 = boto3.client("s3")
    for f in root.iterdir():
        s3.upload_file(str(f), s3_bucket, f"byo/{f.name}")
    fset, clf = import_feature_dir(f"s3://{s3_bucket}/byo")
    local, _ = import_feature_dir(str(root))
    np.testing.assert_array_equal(fset.test.features, local.test.features)
    assert clf is not None and fset.classes == local.classes
    assert imported_feature_key(f"s3://{s3_bucket}/byo") == imported_feature_key(str(root))


def test_replacing_the_classifier_gives_a_new_key_never_a_stale_hit(tmp_path):
    root = write_dir(tmp_path / "d", classes=["ant", "bee", "cow"], classifier=True)  # A
    store = FeatureStore(str(tmp_path / "store"))
    calls = []

    def build() -> object:
        calls.append(1)
        return import_feature_dir(str(root))[0]

    key_a = imported_feature_key(str(root))
    store.get_or_build(key_a, build)
    weight_b = np.arange(3 * D, dtype=np.float32).reshape(3, D)
    np.savez(root / "classifier.npz", weight=weight_b, bias=np.array([1.0, 2.0, 3.0]))  # B

    key_b = imported_feature_key(str(root))
    assert key_b != key_a and not store.has(key_b)
    stored = store.get_or_build(key_b, build)
    assert calls == [1, 1]  # built again, not served from A's entry
    digest_b = hashlib.sha256((root / "classifier.npz").read_bytes()).hexdigest()
    assert stored.meta["files"]["classifier.npz"] == digest_b
    assert store.read(key_b).meta["files"]["classifier.npz"] == digest_b
    _, clf = import_feature_dir(str(root))
    np.testing.assert_array_equal(clf.weight, weight_b)
    np.testing.assert_array_equal(clf.bias, np.array([1, 2, 3], np.float32))


@pytest.mark.parametrize(
    "name", ["train.npz", "val.npz", "test.npz", "classes.txt", "classifier.npz", "aux.npz",
             "aux_classes.txt"]
)
def test_every_input_file_is_in_the_key(tmp_path, name):
    root = write_dir(tmp_path / "d")
    keys = {imported_feature_key(str(root))}
    for content in (b"one", b"two"):
        (root / name).write_bytes(content)
        keys.add(imported_feature_key(str(root)))
    assert len(keys) == 3
    assert set(digest_feature_dir(str(root))) >= {"train.npz", "val.npz", "test.npz", name}


def test_a_file_or_missing_path_is_named_as_such(tmp_path):
    root = write_dir(tmp_path / "d")
    for uri, problem in [(root / "train.npz", "is a file"), (tmp_path / "nowhere", "does not exist")]:
        expected = f"features={uri} {problem}; give the directory holding train.npz, val.npz, test.npz"
        for call in (import_feature_dir, imported_feature_key):
            with pytest.raises(FeatureImportError) as info:
                call(str(uri))
            assert str(info.value) == expected
