"""Bring your own features: a directory of ``.npz`` files instead of a backbone run.

Layout (local directory or ``s3://bucket/prefix``)::

    train.npz, val.npz, test.npz   arrays ``features`` (float, N×d) and ``labels`` (int, N)
    classes.txt                    optional: one class name per line
    classifier.npz                 optional: ``weight`` (C×d) and ``bias`` (C) of a base classifier
    aux.npz                        optional: open-set auxiliary features (neighbor silencing):
                                   ``features`` (A-pool N×d) and ``labels`` 0..A−1
    aux_classes.txt                optional with aux.npz: one auxiliary class name per line

C is the number of lines of classes.txt when given, else the largest label + 1. Every
class must have at least one training sample (the long-tail methods need a per-class
count and prototype). Every check fails with a one-line message that says what to fix.

The auxiliary pool becomes the FeatureSet split ``"aux"`` and ``meta["aux_classes"]`` (A
names; ``aux_0..`` without aux_classes.txt), exactly what a backbone run of an open-set
dataset produces. Auxiliary classes are outside the target label space: their names must
differ from the targets'.

Cache usage -- the key is a digest of the bytes of every file above that is present, so
re-importing the same files (from any location) hits the cache, and replacing any of them
(a new classifier.npz too) gives a new key::

    key = imported_feature_key(uri)
    fset = store.get_or_build(key, lambda: import_feature_dir(uri)[0])
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import zipfile

import numpy as np
import pyarrow.fs as pafs

from explore.classifier import LinearClassifier
from explore.store.feature_set import REQUIRED_SPLITS, FeatureSet, FeatureSplit
from explore.store.keys import feature_key
from explore.store.uri import describe_failure, join, resolve

__all__ = [
    "FeatureImportError",
    "digest_feature_dir",
    "import_classifier",
    "import_feature_dir",
    "imported_feature_key",
]

CLASSES_FILE = "classes.txt"
CLASSIFIER_FILE = "classifier.npz"
AUX_FILE = "aux.npz"
AUX_CLASSES_FILE = "aux_classes.txt"
_SPLIT_FILES = tuple(f"{s}.npz" for s in REQUIRED_SPLITS)
# Every input file is in the key, so replacing any of them never hits a stale entry. Absent
# files are left out of the digest, so adding a file name here keeps the keys of
# directories without it.
_KEY_FILES = _SPLIT_FILES + (CLASSES_FILE, CLASSIFIER_FILE, AUX_FILE, AUX_CLASSES_FILE)


class FeatureImportError(ValueError):
    """An imported feature directory is incomplete or inconsistent."""


def _read(fs: pafs.FileSystem, path: str, uri: str) -> bytes | None:
    """The whole file (one sized read), or None when it does not exist."""
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_file(path) as f:
            return f.read_buffer(f.size()).to_pybytes()
    except OSError as exc:
        raise describe_failure(exc, uri, "reading an imported feature file") from None


def _check_claimed_sizes(data: bytes, required: tuple[str, ...]) -> None:
    """Each array's header (shape × item size) against the bytes the member holds, before
    anything is allocated: a header claiming a huge array is an error, not a MemoryError."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in required:
            try:
                info = archive.getinfo(f"{name}.npy")
            except KeyError:
                continue  # reported as missing by the caller
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    continue  # np.load checks what it reads
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
                claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                held = info.file_size - f.tell()
            if claimed > held:
                raise ValueError(f"array {name!r} claims shape {shape} of {dtype} = {claimed} "
                                 f"bytes but holds {held}: a damaged or forged header")


def _load_npz(data: bytes, uri: str, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        _check_claimed_sizes(data, required)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [a for a in required if a not in npz.files]
            if missing:
                raise FeatureImportError(
                    f"{uri} lacks array(s) {missing} (has {sorted(npz.files)}); save it with "
                    f"np.savez(path, {', '.join(f'{a}=...' for a in required)})"
                )
            return {a: npz[a] for a in required}
    except (ValueError, OSError, zipfile.BadZipFile, MemoryError) as exc:
        if isinstance(exc, FeatureImportError):
            raise
        raise FeatureImportError(
            f"{uri} is not a readable .npz without pickled objects ({exc or type(exc).__name__})"
        ) from None


def _feature_dir(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of the directory ``uri``, which must not be a file."""
    fs, root = resolve(uri)
    try:
        kind = fs.get_file_info(root).type
    except OSError as exc:
        raise describe_failure(exc, uri, "reading an imported feature directory") from None
    if kind in (pafs.FileType.File, pafs.FileType.NotFound):
        problem = "is a file" if kind == pafs.FileType.File else "does not exist"
        raise FeatureImportError(
            f"features={uri} {problem}; give the directory holding {', '.join(_SPLIT_FILES)}"
        )
    return fs, root


def _digests(files: dict[str, bytes | None]) -> dict[str, str]:
    """sha256 of each present file among ``_KEY_FILES`` (``files`` maps name -> bytes), as
    ``digest_feature_dir`` computes them."""
    return {
        name: hashlib.sha256(data).hexdigest()
        for name in _KEY_FILES
        if (data := files.get(name)) is not None
    }


def digest_feature_dir(uri: str) -> dict[str, str]:
    """sha256 of each file that determines the imported features (absent files left out)."""
    fs, root = _feature_dir(uri)
    out = {}
    for name in _KEY_FILES:  # one file in memory at a time: train.npz may be large
        data = _read(fs, f"{root}/{name}", join(uri, name))
        if data is not None:
            out[name] = hashlib.sha256(data).hexdigest()
    return out


def imported_feature_key(uri: str) -> str:
    """Cache key of the features in the directory ``uri``: a digest of the files' bytes,
    independent of where they live, so re-importing the same files hits the cache."""
    digests = digest_feature_dir(uri)
    missing = [f for f in _SPLIT_FILES if f not in digests]
    if missing:
        raise FeatureImportError(
            f"{uri} lacks {missing}; an imported feature directory needs {list(_SPLIT_FILES)}"
        )
    return feature_key({"source": "imported", "files": digests})


def import_feature_dir(uri: str) -> tuple[FeatureSet, LinearClassifier | None]:
    """Read and validate the feature directory ``uri`` (see the module docstring)."""
    fs, root = _feature_dir(uri)
    files = {s: _read(fs, f"{root}/{s}.npz", join(uri, f"{s}.npz")) for s in REQUIRED_SPLITS}
    missing = [f"{s}.npz" for s, data in files.items() if data is None]
    if missing:
        raise FeatureImportError(
            f"{uri} lacks {missing}; an imported feature directory needs "
            f"{list(_SPLIT_FILES)} with arrays features, labels"
        )

    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, data in files.items():
        where = join(uri, f"{split}.npz")
        arrays = _load_npz(data or b"", where, ("features", "labels"))
        x, y = arrays["features"], arrays["labels"]
        if x.ndim != 2 or x.shape[1] < 1:
            raise FeatureImportError(f"{where}: features must be 2-D N×d, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise FeatureImportError(
                f"{where}: features must be floating point, got dtype {x.dtype}"
            )
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise FeatureImportError(
                f"{where}: labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}"
            )
        if len(x) != len(y):
            raise FeatureImportError(
                f"{where}: features have {len(x)} rows but labels have {len(y)}"
            )
        if len(y) == 0:
            raise FeatureImportError(f"{where} is empty; every split needs samples")
        raw[split] = (x, y)

    dims = {s: int(x.shape[1]) for s, (x, _) in raw.items()}
    if len(set(dims.values())) != 1:
        raise FeatureImportError(
            f"{uri}: splits have different feature dimensions {dims}; they must share d"
        )
    d = dims["train"]

    classes_data = _read(fs, f"{root}/{CLASSES_FILE}", join(uri, CLASSES_FILE))
    max_label = max(int(y.max()) for _, y in raw.values())
    if classes_data is not None:
        lines = _name_lines(classes_data, join(uri, CLASSES_FILE))
        classes = tuple(line.strip() for line in lines if line.strip())
        if len(classes) != len([line for line in lines if line.strip()]) or len(
            set(classes)
        ) != len(classes):
            raise FeatureImportError(
                f"{join(uri, CLASSES_FILE)} has duplicate class names; make them unique"
            )
        num_classes = len(classes)
        if max_label >= num_classes:
            raise FeatureImportError(
                f"{uri}: labels go up to {max_label} but {CLASSES_FILE} names {num_classes} "
                "classes; "
                f"labels must lie in [0, {num_classes})"
            )
    else:
        num_classes = max_label + 1
        classes = tuple(str(c) for c in range(num_classes))
    for split, (_, y) in raw.items():
        if int(y.min()) < 0:
            raise FeatureImportError(
                f"{join(uri, split + '.npz')}: labels must lie in [0, {num_classes}), "
                f"found {int(y.min())}"
            )
    counts = np.bincount(raw["train"][1], minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise FeatureImportError(
            f"{join(uri, 'train.npz')}: class(es) {empty[:10].tolist()}"
            f"{'...' if empty.size > 10 else ''} "
            "have no training samples; drop them (relabel) or add samples"
        )

    clf_data = _read(fs, f"{root}/{CLASSIFIER_FILE}", join(uri, CLASSIFIER_FILE))
    classifier = _classifier(clf_data, join(uri, CLASSIFIER_FILE), num_classes, d)

    aux_data = _read(fs, f"{root}/{AUX_FILE}", join(uri, AUX_FILE))
    aux_names_data = _read(fs, f"{root}/{AUX_CLASSES_FILE}", join(uri, AUX_CLASSES_FILE))
    aux_classes: tuple[str, ...] = ()
    if aux_data is not None:
        raw["aux"], aux_classes = _aux_pool(uri, aux_data, aux_names_data, d, classes)
    elif aux_names_data is not None:
        raise FeatureImportError(
            f"{join(uri, AUX_CLASSES_FILE)} is given without {AUX_FILE}; add the auxiliary "
            f"features or remove the file"
        )

    try:
        splits = {s: FeatureSplit(x, y) for s, (x, y) in raw.items()}
    except ValueError as exc:  # e.g. NaN features
        raise FeatureImportError(f"{uri}: {exc}") from None
    # The same digests as imported_feature_key's, from the bytes read here: the key and
    # the provenance cannot disagree.
    digests = _digests(
        {
            **{f"{s}.npz": files[s] for s in REQUIRED_SPLITS},
            CLASSES_FILE: classes_data,
            CLASSIFIER_FILE: clf_data,
            AUX_FILE: aux_data,
            AUX_CLASSES_FILE: aux_names_data,
        }
    )
    meta: dict[str, object] = {
        "source": "imported",
        "imported_from": uri,
        "files": digests,
        "classes_given": classes_data is not None,
    }
    if aux_classes:
        meta["aux_classes"] = list(aux_classes)
    return FeatureSet(splits=splits, classes=classes, meta=meta), classifier


def import_classifier(uri: str, num_classes: int, dim: int) -> LinearClassifier | None:
    """The directory's ``classifier.npz`` alone (None when there is none), checked against
    features of ``num_classes`` × ``dim``: what a cache hit needs, without reading the
    feature files again."""
    fs, root = _feature_dir(uri)
    data = _read(fs, f"{root}/{CLASSIFIER_FILE}", join(uri, CLASSIFIER_FILE))
    return _classifier(data, join(uri, CLASSIFIER_FILE), num_classes, dim)


def _classifier(data: bytes | None, where: str, num_classes: int, d: int) -> LinearClassifier | None:
    if data is None:
        return None
    arrays = _load_npz(data, where, ("weight", "bias"))
    w, b = arrays["weight"], arrays["bias"]
    if w.shape != (num_classes, d) or b.shape != (num_classes,):
        raise FeatureImportError(
            f"{where}: weight must be (C, d) = ({num_classes}, {d}) and bias ({num_classes},), "
            f"got {w.shape} and {b.shape}"
        )
    try:
        classifier = LinearClassifier(w, b)
    except ValueError as exc:
        raise FeatureImportError(f"{where}: {exc}") from None
    if not (np.isfinite(classifier.weight).all() and np.isfinite(classifier.bias).all()):
        raise FeatureImportError(f"{where}: classifier weight/bias contain NaN or inf")
    return classifier


def _name_lines(data: bytes, where: str) -> list[str]:
    """The lines of a class-names file, split on newlines only: a name holding another line
    break (U+2028, a form feed...) is an error naming the file, not two classes."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise FeatureImportError(f"{where} is not UTF-8 text") from None
    lines = [line.removesuffix("\r") for line in lines]
    for number, line in enumerate(lines, 1):
        odd = [c for c in line if c != "\t" and unicodedata.category(c) in ("Cc", "Zl", "Zp")]
        if odd:
            raise FeatureImportError(
                f"{where} line {number}: the class name {line.strip()!r} holds "
                f"U+{ord(odd[0]):04X} ({unicodedata.name(odd[0], 'a control character')}); "
                "one class name per line, lines ending in \\n")
    return lines


def _class_names(data: bytes, where: str) -> tuple[str, ...]:
    lines = [line.strip() for line in _name_lines(data, where) if line.strip()]
    if len(set(lines)) != len(lines):
        raise FeatureImportError(f"{where} has duplicate class names; make them unique")
    return tuple(lines)


def _aux_pool(
    uri: str, data: bytes, names_data: bytes | None, d: int, classes: tuple[str, ...]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """The checked auxiliary pool of aux.npz (+ aux_classes.txt): ((features, labels), names)."""
    where = join(uri, AUX_FILE)
    arrays = _load_npz(data, where, ("features", "labels"))
    x, y = arrays["features"], arrays["labels"]
    if x.ndim != 2 or x.shape[1] != d or not np.issubdtype(x.dtype, np.floating):
        raise FeatureImportError(
            f"{where}: features must be floating point N×{d} (the width of train.npz), got "
            f"shape {x.shape} dtype {x.dtype}"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        raise FeatureImportError(
            f"{where}: labels must be a 1-D integer array with one label per feature row, got "
            f"shape {y.shape} dtype {y.dtype} for {len(x)} rows"
        )
    if len(y) == 0:
        raise FeatureImportError(f"{where} is empty; drop the file or add auxiliary samples")
    if names_data is not None:
        names = _class_names(names_data, join(uri, AUX_CLASSES_FILE))
    else:
        names = tuple(f"aux_{a}" for a in range(int(y.max()) + 1))
    if int(y.min()) < 0 or int(y.max()) >= len(names):
        raise FeatureImportError(
            f"{where}: labels must lie in [0, {len(names)}) (one per auxiliary class), found "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    overlap = sorted(set(names) & set(classes))
    if overlap:
        raise FeatureImportError(
            f"{join(uri, AUX_CLASSES_FILE)}: {overlap} are also target classes; auxiliary "
            "classes must lie outside the target label space"
        )
    if len(names) > len(classes):
        # The FeatureSet checks every split's labels against the target classes.
        raise FeatureImportError(
            f"{where}: {len(names)} auxiliary classes but only {len(classes)} targets; the "
            "feature store keeps at most as many auxiliary classes as targets"
        )
    return (x, y), names
