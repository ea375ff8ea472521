"""Feature cache: backbone features extracted once, stored as Arrow IPC shards by cache key.

Layout under a store root (local directory or ``s3://bucket/prefix``)::

    <root>/features/<key>/<split>-<i:05d>.arrow  shards: features FixedSizeList<float32, d>,
                                                labels int64; key + split in schema metadata
    <root>/features/<key>/manifest.json         written LAST; each shard's path/rows/bytes/xxh3-128 checksum
    <root>/features/<key>/.lock                  exclusive build lock (owner + timestamps)
    <root>/artifacts/<key>/<name>.npz(.json)     small derived arrays + checksum sidecar
    <root>/artifacts/<key>/<name>.json           small JSON documents with a checksum

Rules that make the cache safe to share between processes and Ray workers:

* A reader trusts only shards listed in a manifest, and checks each one's size, checksum and
  schema metadata, so a half-written or damaged entry is either invisible or a loud
  ``CorruptShardError`` -- never silently wrong features.
* The manifest is written last and atomically (temp file + rename locally; a single
  object PUT on S3, which becomes visible all at once).
* ``get_or_build`` builds at most once per key across processes: the builder holds
  ``.lock``, created exclusively (``O_CREAT|O_EXCL`` locally; ``PUT`` with
  ``If-None-Match: *`` on S3), refreshed by a heartbeat; waiters poll for the manifest and
  break a lock whose heartbeat stopped (its owner died).

Reads use one sized read per object (RAY_NOTES §4: unsized stream reads are ~100x slower
on S3) and hand back numpy views of the Arrow buffers where possible; arrays returned by
``read`` may therefore be read-only -- copy before writing into them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from explore.store.uri import (
    StorageError,
    check_reachable,
    describe_failure,
    join,
    redact,
    resolve,
    s3_settings,
)

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_SPLITS",
    "CorruptShardError",
    "EntryNotFoundError",
    "LockTimeoutError",
    "FeatureSplit",
    "FeatureSet",
    "FeatureStore",
    "feature_key",
]

log = logging.getLogger(__name__)

try:  # boto3 errors from the S3 lock are storage errors too
    from botocore.exceptions import BotoCoreError, ClientError

    _BACKEND_ERRORS: tuple[type[BaseException], ...] = (
        OSError,
        pa.ArrowException,
        BotoCoreError,
        ClientError,
    )
except ImportError:  # pragma: no cover - boto3 is a dependency, but local stores do not need it
    _BACKEND_ERRORS = (OSError, pa.ArrowException)

FORMAT_VERSION = 1
"""Bumped when the on-disk layout changes; readers refuse other versions."""
REQUIRED_SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "manifest.json"
LOCK = ".lock"
META_KEY = b"explore.cache_key"
META_SPLIT = b"explore.split"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


class CorruptShardError(StorageError):
    """A stored object does not match its manifest (size, sha256, schema or cache key)."""


class EntryNotFoundError(StorageError, LookupError):
    """No complete entry (no manifest) for the requested key or name."""


class LockTimeoutError(StorageError, TimeoutError):
    """Waited longer than ``wait_timeout_s`` for another process's build to finish."""


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


def _canonical_json(value: Any, what: str) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be plain JSON (dict/list/str/int/float/bool/None, no NaN): {exc}"
        ) from None


def feature_key(spec: Mapping[str, Any]) -> str:
    """Cache key of the features that ``spec`` determines: 16 hex digits of a sha256.

    ``spec`` must hold everything the features depend on -- dataset parameters, backbone
    name and weights digest, preprocessing -- and nothing else (no paths, no seeds of later
    stages), so that equal inputs share one entry. Dict key order does not matter; value
    types do (``1`` and ``1.0`` give different keys).

    >>> feature_key({"b": 1, "a": [1, 2]}) == feature_key({"a": [1, 2], "b": 1})
    True
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError("feature spec must be a non-empty dict of what determines the features")
    text = _canonical_json(dict(spec), "feature spec")
    return hashlib.sha256(f"explore-features/v{FORMAT_VERSION}\n{text}".encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class FeatureSplit:
    """Features and labels of one split. Stored as C-contiguous float32 N×d and int64 N."""

    features: np.ndarray
    """float32, N×d, finite (other float dtypes are converted)."""
    labels: np.ndarray
    """int64, N, non-negative class indices (other integer dtypes are converted)."""

    def __post_init__(self) -> None:
        f, y = np.asarray(self.features), np.asarray(self.labels)
        if f.ndim != 2 or f.shape[1] < 1:
            raise ValueError(f"features must be 2-D N×d with d >= 1, got shape {f.shape}")
        if not np.issubdtype(f.dtype, np.floating):
            raise ValueError(f"features must be floating point, got dtype {f.dtype}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}"
            )
        if len(y) != len(f):
            raise ValueError(f"features have {len(f)} rows but labels have {len(y)}")
        f = np.ascontiguousarray(f, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        if not np.isfinite(f).all():
            raise ValueError(
                "features contain NaN or inf (after conversion to float32); fix the extractor"
            )
        if y.size and y.min() < 0:
            raise ValueError(f"labels must be >= 0, found {int(y.min())}")
        object.__setattr__(self, "features", f)
        object.__setattr__(self, "labels", y)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def d(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """All splits of one feature extraction, the class names, and provenance."""

    splits: dict[str, FeatureSplit]
    """At least 'train', 'val', 'test'; other names (e.g. 'aux') are allowed. All share d."""
    classes: tuple[str, ...]
    """Class names, indexed by label."""
    meta: dict[str, Any] = field(default_factory=dict)
    """JSON-able provenance (dataset params, backbone, extraction time, ...)."""

    def __post_init__(self) -> None:
        if not isinstance(self.splits, Mapping):
            raise ValueError("splits must be a dict of split name -> FeatureSplit")
        missing = [s for s in REQUIRED_SPLITS if s not in self.splits]
        if missing:
            raise ValueError(
                f"FeatureSet is missing split(s) {missing}; it needs {list(REQUIRED_SPLITS)}"
            )
        for name, split in self.splits.items():
            _check_name(name, "split name")
            if not isinstance(split, FeatureSplit):
                raise ValueError(
                    f"split {name!r} must be a FeatureSplit, got {type(split).__name__}"
                )
        dims = {name: s.d for name, s in self.splits.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"all splits must share the feature dimension d, got {dims}")
        classes = tuple(self.classes)
        if not classes or not all(isinstance(c, str) and c for c in classes):
            raise ValueError("classes must be a non-empty sequence of non-empty class names")
        if len(set(classes)) != len(classes):
            raise ValueError("class names must be unique")
        for name, split in self.splits.items():
            if len(split) and int(split.labels.max()) >= len(classes):
                raise ValueError(
                    f"split {name!r} has label {int(split.labels.max())} "
                    f"but only {len(classes)} classes"
                )
        if not isinstance(self.meta, Mapping):
            raise ValueError("meta must be a dict")
        _canonical_json(dict(self.meta), "FeatureSet.meta")
        object.__setattr__(self, "splits", dict(self.splits))
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def d(self) -> int:
        return next(iter(self.splits.values())).d

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train(self) -> FeatureSplit:
        return self.splits["train"]

    @property
    def val(self) -> FeatureSplit:
        return self.splits["val"]

    @property
    def test(self) -> FeatureSplit:
        return self.splits["test"]


# --------------------------------------------------------------------------- locks


class _Lock(Protocol):
    """An exclusive lock object; ``token`` identifies one version of its content."""

    def try_acquire(self, body: bytes) -> str | None: ...
    def peek(self) -> tuple[str, dict[str, Any]] | None: ...
    def refresh(self, token: str, body: bytes) -> str | None: ...
    def break_stale(self, token: str) -> bool: ...
    def release(self, token: str) -> None: ...


def _parse_lock(body: bytes) -> dict[str, Any]:
    try:
        info = json.loads(body)
    except ValueError:  # being written right now, or garbage
        return {}
    return info if isinstance(info, dict) else {}


class _LocalLock:
    """``O_CREAT|O_EXCL`` file; token = sha256 of its content."""

    def __init__(self, path: str) -> None:
        self.path = path

    def try_acquire(self, body: bytes) -> str | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return hashlib.sha256(body).hexdigest()

    def _read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def peek(self) -> tuple[str, dict[str, Any]] | None:
        body = self._read(self.path)
        return None if body is None else (hashlib.sha256(body).hexdigest(), _parse_lock(body))

    def refresh(self, token: str, body: bytes) -> str | None:
        current = self.peek()
        if current is None or current[0] != token:
            return None
        tmp = f"{self.path}.hb-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, self.path)
        return hashlib.sha256(body).hexdigest()

    def break_stale(self, token: str) -> bool:
        # Rename first (atomic, only one breaker wins), then check we took the stale
        # version and not a lock someone created meanwhile; if not, put it back.
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        body = self._read(aside) or b""
        if hashlib.sha256(body).hexdigest() != token:
            try:
                os.link(aside, self.path)  # fails if yet another lock exists: then theirs wins
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def release(self, token: str) -> None:
        current = self.peek()
        if current is not None and current[0] == token:
            os.unlink(self.path)


class _S3Lock:
    """Conditional PUT (``If-None-Match: *``); token = ETag; deletes are ``If-Match``."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def try_acquire(self, body: bytes) -> str | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*"
            )
        except ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise
        return str(out["ETag"])

    def peek(self) -> tuple[str, dict[str, Any]] | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return str(out["ETag"]), _parse_lock(out["Body"].read())

    def refresh(self, token: str, body: bytes) -> str | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=token)
        except ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                return None
            raise
        return str(out["ETag"])

    def _delete(self, token: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def break_stale(self, token: str) -> bool:
        return self._delete(token)

    def release(self, token: str) -> None:
        self._delete(token)


class _Heartbeat:
    """Rewrites the held lock every ``every_s``, so waiters tell a live builder from a dead one."""

    def __init__(self, lock: _Lock, token: str, owner: str, created: float, every_s: float) -> None:
        self.lock, self.token, self.owner, self.created = lock, token, owner, created
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(every_s,), daemon=True, name="explore-store-lock-heartbeat"
        )
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                token = self.lock.refresh(self.token, _lock_body(self.owner, self.created))
            except Exception as exc:  # transient storage error: try again next beat
                log.warning("feature-store lock heartbeat failed: %s", redact(str(exc)))
                continue
            if token is None:
                log.warning(
                    "feature-store lock %s was taken from this builder (judged stale)", self.owner
                )
                return
            self.token = token

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        return self.token


def _lock_body(owner: str, created: float) -> bytes:
    return json.dumps({"owner": owner, "created": created, "heartbeat": time.time()}).encode()


# --------------------------------------------------------------------------- store


def _single_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _sha256(data: Any) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


SHARD_CHECKSUM = "xxh3_128"
"""Shards are checked on every read, so their checksum must cost little next to the read
itself: xxh3-128 runs at ~16 GB/s here, sha256 at ~1.7 GB/s (10× slower than a local read
from the page cache). It detects corruption and truncation; it is not a signature.
Manifests written with sha256 (before) are still verified with sha256."""


def _xxh3_128(data: Any) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(memoryview(data))


def _shard_checksum_ok(data: Any, shard: dict[str, Any]) -> bool:
    if SHARD_CHECKSUM in shard:
        return _xxh3_128(data) == shard[SHARD_CHECKSUM]
    return _sha256(data) == shard.get("sha256")


class FeatureStore:
    """Feature cache at ``uri`` (local path or ``s3://bucket/prefix``); see the module docstring.

    >>> store = FeatureStore("/tmp/feature-cache")              # doctest: +SKIP
    >>> fset = store.get_or_build(feature_key(spec), lambda: extract(spec))  # doctest: +SKIP

    Picklable (Ray workers re-resolve the URI from their own AWS environment).
    """

    def __init__(
        self,
        uri: str,
        *,
        max_rows_per_shard: int = 65_536,
        lock_heartbeat_s: float = 10.0,
        lock_stale_after_s: float = 120.0,
        poll_s: float = 0.5,
        wait_timeout_s: float = 3600.0,
        check: bool = True,
    ) -> None:
        if max_rows_per_shard < 1:
            raise ValueError(f"max_rows_per_shard must be >= 1, got {max_rows_per_shard}")
        if not 0 < lock_heartbeat_s < lock_stale_after_s:
            raise ValueError(
                f"need 0 < lock_heartbeat_s ({lock_heartbeat_s}) < "
                f"lock_stale_after_s ({lock_stale_after_s})"
            )
        if poll_s <= 0 or wait_timeout_s <= 0:
            raise ValueError("poll_s and wait_timeout_s must be > 0")
        self.uri = uri.rstrip("/") or uri
        self.max_rows_per_shard = int(max_rows_per_shard)
        self.lock_heartbeat_s = float(lock_heartbeat_s)
        self.lock_stale_after_s = float(lock_stale_after_s)
        self.poll_s = float(poll_s)
        self.wait_timeout_s = float(wait_timeout_s)
        self._fs, self._root = resolve(self.uri)
        self._s3_client: Any = None
        if check:
            check_reachable(self._fs, self._root, self.uri)

    def __repr__(self) -> str:
        return f"FeatureStore({self.uri!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Never pickle the filesystem or boto3 client: re-resolve on the other side.
        kwargs = dict(
            max_rows_per_shard=self.max_rows_per_shard,
            lock_heartbeat_s=self.lock_heartbeat_s,
            lock_stale_after_s=self.lock_stale_after_s,
            poll_s=self.poll_s,
            wait_timeout_s=self.wait_timeout_s,
            check=False,
        )
        return (_rebuild_store, (self.uri, kwargs))

    # ----------------------------------------------------------- paths and raw I/O

    @property
    def is_s3(self) -> bool:
        return isinstance(self._fs, pafs.S3FileSystem)

    def entry_uri(self, key: str) -> str:
        """URI of the directory holding ``key``'s shards and manifest (for provenance)."""
        return join(self.uri, "features", _check_name(key, "cache key"))

    def _entry(self, key: str) -> str:
        return f"{self._root}/features/{_check_name(key, 'cache key')}"

    def _artifacts(self, key: str) -> str:
        return f"{self._root}/artifacts/{_check_name(key, 'cache key')}"

    def _uri_of(self, path: str) -> str:
        return join(self.uri, path[len(self._root) :]) if path.startswith(self._root) else path

    @contextmanager
    def _errors(self, what: str, path: str) -> Iterator[None]:
        try:
            yield
        except _BACKEND_ERRORS as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise describe_failure(exc, self._uri_of(path), what) from None

    def _mkdir(self, path: str) -> None:
        if not self.is_s3:  # S3 has no directories; creating markers would only add objects
            with self._errors("creating a directory", path):
                self._fs.create_dir(path, recursive=True)

    def _exists(self, path: str) -> bool:
        with self._errors("checking an object", path):
            return self._fs.get_file_info(path).type == pafs.FileType.File

    def _read_bytes(self, path: str) -> pa.Buffer:
        """The whole object: memory-mapped locally (no copy; the checksum is then the only
        pass over the bytes, and arrays are views of the page cache), one sized read on S3
        (fast there; see RAY_NOTES §4). Shards are never rewritten in place (an entry is
        deleted before it is written again), so a mapping never sees its file change."""
        with self._errors("reading", path):
            if isinstance(self._fs, pafs.LocalFileSystem):
                return pa.memory_map(path, "r").read_buffer()
            with self._fs.open_input_file(path) as f:
                return f.read_buffer(f.size())

    def _write_bytes(self, path: str, data: Any, *, atomic: bool) -> None:
        """Write ``data``; with ``atomic`` a reader sees the old object or the whole new one.

        Local: temp file + rename. S3: a single object upload is already all-or-nothing.
        """
        with self._errors("writing", path):
            if atomic and not self.is_s3:
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                with self._fs.open_output_stream(tmp) as f:
                    f.write(data)
                self._fs.move(tmp, path)
            else:
                with self._fs.open_output_stream(path) as f:
                    f.write(data)

    def _delete_file(self, path: str) -> None:
        with self._errors("deleting", path):
            try:
                self._fs.delete_file(path)
            except FileNotFoundError:
                pass

    def _list(self, path: str) -> list[pafs.FileInfo]:
        with self._errors("listing", path):
            return [
                i
                for i in self._fs.get_file_info(
                    pafs.FileSelector(path, allow_not_found=True, recursive=True)
                )
                if i.type == pafs.FileType.File
            ]

    # ----------------------------------------------------------- features

    def has(self, key: str) -> bool:
        """True when ``key`` has a manifest (shards are verified only by ``read``)."""
        return self._exists(f"{self._entry(key)}/{MANIFEST}")

    def _manifest(self, key: str) -> dict[str, Any]:
        path = f"{self._entry(key)}/{MANIFEST}"
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            raise EntryNotFoundError(
                f"no features for key {key} under {self.uri} (no {MANIFEST}); "
                "build them with FeatureStore.get_or_build"
            ) from None
        try:
            manifest = json.loads(raw.to_pybytes())
        except ValueError:
            raise CorruptShardError(
                f"{self._uri_of(path)} is not valid JSON; delete the entry"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("version") != FORMAT_VERSION:
            raise CorruptShardError(
                f"{self._uri_of(path)} has format version "
                f"{manifest.get('version') if isinstance(manifest, dict) else None}, "
                f"this code reads {FORMAT_VERSION}; rebuild the entry"
            )
        if manifest.get("key") != key:
            raise CorruptShardError(
                f"{self._uri_of(path)} belongs to key {manifest.get('key')}, not {key}"
            )
        return manifest

    def _shard_bytes(self, key: str, split: str, part: FeatureSplit) -> pa.Buffer:
        # Zero-copy: the flat float32 buffer becomes the FixedSizeList's child array.
        values = pa.array(part.features.reshape(-1), type=pa.float32())
        table = pa.Table.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(values, part.d),
                pa.array(part.labels, type=pa.int64()),
            ],
            schema=pa.schema(
                [("features", pa.list_(pa.float32(), part.d)), ("labels", pa.int64())],
                metadata={META_KEY: key.encode(), META_SPLIT: split.encode()},
            ),
        )
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    def write(self, key: str, fset: FeatureSet) -> None:
        """Store ``fset`` under ``key``, replacing any previous entry.

        Not a lock holder by itself: concurrent writers of one key should go through
        ``get_or_build``. The manifest goes last, so a crash leaves an invisible entry.
        """
        if not isinstance(fset, FeatureSet):
            raise ValueError(f"write() needs a FeatureSet, got {type(fset).__name__}")
        entry = self._entry(key)
        self._clear_entry(key)
        self._mkdir(entry)
        splits: dict[str, Any] = {}
        for name, part in fset.splits.items():
            shards = []
            for i, start in enumerate(range(0, len(part), self.max_rows_per_shard)):
                stop = min(start + self.max_rows_per_shard, len(part))
                chunk = FeatureSplit(part.features[start:stop], part.labels[start:stop])
                data = self._shard_bytes(key, name, chunk)
                fname = f"{name}-{i:05d}.arrow"
                self._write_bytes(f"{entry}/{fname}", data, atomic=False)
                shards.append(
                    {
                        "path": fname,
                        "rows": stop - start,
                        "bytes": data.size,
                        SHARD_CHECKSUM: _xxh3_128(data),
                    }
                )
            splits[name] = {"rows": len(part), "shards": shards}
        manifest = {
            "format": "explore-feature-store",
            "version": FORMAT_VERSION,
            "key": key,
            "d": fset.d,
            "classes": list(fset.classes),
            "meta": fset.meta,
            "splits": splits,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._write_bytes(
            f"{entry}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), atomic=True
        )

    def _read_shard(
        self, key: str, split: str, d: int, entry: str, shard: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        path = f"{entry}/{shard['path']}"
        shown = self._uri_of(path)
        try:
            buf = self._read_bytes(path)
        except FileNotFoundError:
            raise CorruptShardError(
                f"shard {shown} is listed in the manifest but missing"
            ) from None
        if buf.size != shard["bytes"]:
            raise CorruptShardError(
                f"shard {shown} has {buf.size} bytes, manifest says {shard['bytes']}"
            )
        if not _shard_checksum_ok(buf, shard):
            raise CorruptShardError(
                f"shard {shown} fails its checksum (damaged or overwritten)"
            )
        try:
            table = ipc.open_file(pa.BufferReader(buf)).read_all()
        except pa.ArrowException as exc:
            raise CorruptShardError(
                f"shard {shown} is not a readable Arrow IPC file: {exc}"
            ) from None
        meta = table.schema.metadata or {}
        if meta.get(META_KEY) != key.encode() or meta.get(META_SPLIT) != split.encode():
            raise CorruptShardError(
                f"shard {shown} carries key/split {meta.get(META_KEY)!r}/{meta.get(META_SPLIT)!r}, "
                f"expected {key}/{split}"
            )
        if (
            table.schema.field("features").type != pa.list_(pa.float32(), d)
            or table.schema.field("labels").type != pa.int64()
            or table.num_rows != shard["rows"]
        ):
            raise CorruptShardError(
                f"shard {shown} has schema {table.schema} / {table.num_rows} rows, "
                f"manifest says d={d}, {shard['rows']} rows"
            )
        # One record batch per shard, so each column is one chunk: take it as is
        # (combine_chunks would copy). flatten() honours offsets; to_numpy is a view.
        x = _single_chunk(table.column("features")).flatten().to_numpy(zero_copy_only=False)
        y = _single_chunk(table.column("labels")).to_numpy(zero_copy_only=False)
        return x.reshape(-1, d), y

    def read(self, key: str) -> FeatureSet:
        """The features stored under ``key``, every shard verified.

        Raises ``EntryNotFoundError`` without a manifest, ``CorruptShardError`` naming the
        first shard that does not match it.
        """
        manifest = self._manifest(key)
        entry, d = self._entry(key), int(manifest["d"])
        splits = {}
        for name, info in manifest["splits"].items():
            parts = [self._read_shard(key, name, d, entry, s) for s in info["shards"]]
            if not parts:
                x, y = np.empty((0, d), np.float32), np.empty(0, np.int64)
            elif len(parts) == 1:
                x, y = parts[0]
            else:
                x = np.concatenate([p[0] for p in parts])
                y = np.concatenate([p[1] for p in parts])
            if len(y) != info["rows"]:
                raise CorruptShardError(
                    f"split {name} of {self.entry_uri(key)} has {len(y)} rows, "
                    f"manifest says {info['rows']}"
                )
            splits[name] = FeatureSplit(x, y)
        return FeatureSet(splits=splits, classes=tuple(manifest["classes"]), meta=manifest["meta"])

    def _clear_entry(self, key: str) -> None:
        """Delete ``key``'s entry, manifest first (so it turns invisible at once), keeping the lock.

        Also removes orphans of crashed writes (unlisted shards, ``.tmp-*`` files).
        """
        entry = self._entry(key)
        self._delete_file(f"{entry}/{MANIFEST}")
        for info in self._list(entry):
            if not os.path.basename(info.path).startswith(LOCK):  # the lock and its temp files
                self._delete_file(info.path)

    def delete(self, key: str) -> None:
        """Remove ``key``'s features (not its artifacts)."""
        self._clear_entry(key)

    # ----------------------------------------------------------- build once

    def _boto3_client(self) -> Any:
        """boto3 S3 client from the same AWS chain, for what pyarrow.fs cannot do (conditional
        PUT/DELETE for the build lock)."""
        if self._s3_client is None:
            import boto3
            from botocore.config import Config

            settings = s3_settings()
            self._s3_client = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.endpoint_url,
                region_name=settings.region,
                config=Config(
                    connect_timeout=3,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        return self._s3_client

    def _lock(self, key: str) -> _Lock:
        path = f"{self._entry(key)}/{LOCK}"
        if self.is_s3:
            bucket, _, obj = path.partition("/")
            return _S3Lock(self._boto3_client(), bucket, obj)
        self._mkdir(self._entry(key))
        return _LocalLock(path)

    def _is_stale(self, info: dict[str, Any], unchanged_for_s: float) -> bool:
        # Unchanged content for the whole timeout on our own clock is immune to clock skew;
        # an old wall-clock heartbeat catches a lock left behind long ago at first sight.
        beat = info.get("heartbeat")
        old = isinstance(beat, (int, float)) and time.time() - beat > self.lock_stale_after_s
        return unchanged_for_s > self.lock_stale_after_s or old

    def get_or_build(self, key: str, build: Callable[[], FeatureSet]) -> FeatureSet:
        """The features under ``key``; built by ``build()`` and stored if missing or corrupt.

        Among concurrent callers (processes, Ray workers) only the one holding the lock
        builds; the others wait for its manifest. A failed build releases the lock and
        re-raises, so a waiter takes over.
        """
        _check_name(key, "cache key")
        deadline = time.monotonic() + self.wait_timeout_s
        lock_path = f"{self._entry(key)}/{LOCK}"
        while True:
            if self.has(key):
                try:
                    return self.read(key)
                except (CorruptShardError, EntryNotFoundError) as exc:
                    log.warning("rebuilding features %s: %s", key, exc)
            lock = self._lock(key)
            owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            created = time.time()
            with self._errors("taking the build lock", lock_path):
                token = lock.try_acquire(_lock_body(owner, created))
            if token is not None:
                return self._build_locked(key, build, lock, token, owner, created)
            self._wait_for_lock(key, lock, lock_path, deadline)

    def _wait_for_lock(self, key: str, lock: _Lock, lock_path: str, deadline: float) -> None:
        """Return once ``lock`` is gone (released, or broken here as stale).

        One small GET per poll: on a shared S3 endpoint waiters must not slow the builder.
        """
        seen: tuple[str, float] | None = None  # (lock token, monotonic time first seen)
        while True:
            with self._errors("reading the build lock", lock_path):
                state = lock.peek()
            if state is None:
                return
            now = time.monotonic()
            if seen is None or seen[0] != state[0]:
                seen = (state[0], now)
            if self._is_stale(state[1], now - seen[1]):
                with self._errors("breaking a stale build lock", lock_path):
                    broken = lock.break_stale(state[0])
                if broken:
                    log.warning(
                        "broke stale feature-store lock of %s on %s",
                        state[1].get("owner", "?"),
                        self.entry_uri(key),
                    )
                return
            if now > deadline:
                raise LockTimeoutError(
                    f"waited {self.wait_timeout_s:.0f}s for another process to build "
                    f"{self.entry_uri(key)}; delete its {LOCK} if no build is running"
                )
            time.sleep(self.poll_s)

    def _build_locked(
        self,
        key: str,
        build: Callable[[], FeatureSet],
        lock: _Lock,
        token: str,
        owner: str,
        created: float,
    ) -> FeatureSet:
        heartbeat = _Heartbeat(lock, token, owner, created, self.lock_heartbeat_s)
        try:
            # Someone may have finished between our check and our lock.
            if self.has(key):
                try:
                    return self.read(key)
                except (CorruptShardError, EntryNotFoundError) as exc:
                    log.warning("rebuilding features %s: %s", key, exc)
            self._clear_entry(key)
            fset = build()
            if not isinstance(fset, FeatureSet):
                raise TypeError(
                    f"build() for key {key} returned {type(fset).__name__}, not a FeatureSet"
                )
            self.write(key, fset)
            return fset
        finally:
            token = heartbeat.stop()
            with self._errors("releasing the build lock", f"{self._entry(key)}/{LOCK}"):
                lock.release(token)

    # ----------------------------------------------------------- small artifacts

    def put_arrays(
        self,
        key: str,
        name: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Store named arrays (e.g. a base classifier's weight and bias) derived from ``key``.

        Saved as an uncompressed ``.npz`` with a ``.npz.json`` sidecar (sha256, shapes,
        dtypes, meta) written last and atomically.
        """
        _check_name(name, "artifact name")
        if not isinstance(arrays, Mapping) or not arrays:
            raise ValueError("arrays must be a non-empty dict of name -> numpy array")
        clean = {}
        for k, v in arrays.items():
            _check_name(k, "array name")
            if k in ("file", "allow_pickle"):  # np.savez's own parameter names
                raise ValueError(f"array name {k!r} is reserved by np.savez; rename it")
            a = np.asarray(v)
            if a.dtype.hasobject:
                raise ValueError(
                    f"array {k!r} has dtype object; store numeric or fixed-width arrays"
                )
            clean[k] = a
        meta = dict(meta or {})
        _canonical_json(meta, "artifact meta")
        buf = io.BytesIO()
        np.savez(buf, **clean)  # type: ignore[arg-type]  # stubs type **kwds like allow_pickle
        data = buf.getvalue()
        base = self._artifacts(key)
        self._mkdir(base)
        self._write_bytes(f"{base}/{name}.npz", data, atomic=True)
        sidecar = {
            "format": "explore-arrays",
            "version": FORMAT_VERSION,
            "key": key,
            "file": f"{name}.npz",
            "bytes": len(data),
            "sha256": _sha256(data),
            "meta": meta,
            "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in clean.items()},
        }
        self._write_bytes(
            f"{base}/{name}.npz.json", json.dumps(sidecar, indent=1).encode(), atomic=True
        )

    def has_arrays(self, key: str, name: str) -> bool:
        return self._exists(f"{self._artifacts(key)}/{_check_name(name, 'artifact name')}.npz.json")

    def get_arrays(self, key: str, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)`` stored by ``put_arrays``, checksum verified."""
        base = f"{self._artifacts(key)}/{_check_name(name, 'artifact name')}"
        sidecar = self._read_json_object(f"{base}.npz.json", f"arrays {name!r} for key {key}")
        path = f"{base}.npz"
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            raise CorruptShardError(
                f"{self._uri_of(path)} is listed in its sidecar but missing"
            ) from None
        if data.size != sidecar.get("bytes") or _sha256(data) != sidecar.get("sha256"):
            raise CorruptShardError(
                f"{self._uri_of(path)} fails its size/sha256 check; put it again"
            )
        with np.load(io.BytesIO(data.to_pybytes()), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        expected = sidecar.get("arrays", {})
        got = {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}
        if got != expected:
            raise CorruptShardError(f"{self._uri_of(path)} holds {got}, sidecar says {expected}")
        return arrays, dict(sidecar.get("meta", {}))

    def put_json(self, key: str, name: str, value: Any) -> None:
        """Store a small JSON document (with its own sha256) derived from ``key``, atomically."""
        text = _canonical_json(value, f"JSON artifact {name!r}")
        doc = {
            "format": "explore-json",
            "version": FORMAT_VERSION,
            "key": key,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "value": value,
        }
        base = self._artifacts(key)
        self._mkdir(base)
        self._write_bytes(
            f"{base}/{_check_name(name, 'artifact name')}.json",
            json.dumps(doc, indent=1, allow_nan=False).encode(),
            atomic=True,
        )

    def has_json(self, key: str, name: str) -> bool:
        return self._exists(f"{self._artifacts(key)}/{_check_name(name, 'artifact name')}.json")

    def get_json(self, key: str, name: str) -> Any:
        """The value stored by ``put_json``, checksum verified."""
        path = f"{self._artifacts(key)}/{_check_name(name, 'artifact name')}.json"
        doc = self._read_json_object(path, f"JSON {name!r} for key {key}")
        value = doc.get("value")
        if hashlib.sha256(_canonical_json(value, "stored JSON").encode()).hexdigest() != doc.get(
            "sha256"
        ):
            raise CorruptShardError(f"{self._uri_of(path)} fails its sha256 check; put it again")
        return value

    def _read_json_object(self, path: str, what: str) -> dict[str, Any]:
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            raise EntryNotFoundError(f"no {what} under {self.uri}") from None
        try:
            doc = json.loads(raw.to_pybytes())
        except ValueError:
            raise CorruptShardError(
                f"{self._uri_of(path)} is not valid JSON; put it again"
            ) from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise CorruptShardError(f"{self._uri_of(path)} has an unknown format; put it again")
        return doc


def _rebuild_store(uri: str, kwargs: dict[str, Any]) -> FeatureStore:
    return FeatureStore(uri, **kwargs)
