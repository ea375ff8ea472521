"""Feature entries: a ``FeatureSet`` stored as Arrow IPC shards plus a manifest.

Layout of one entry (``<root>/features/<key>/``)::

    <split>-<i:05d>.arrow  features FixedSizeList<float32, d>, labels int64;
                           key and split in the schema metadata
    manifest.json          written LAST: each shard's path, rows, bytes and xxh3-128
    .lock                  the build lock (see ``_locks``), left alone here

An entry is written whole by one process (``write``) or shard by shard by many
(``write_shard`` on each worker, then ``write_manifest`` by the one holding the lock). A
shard written that way gets a ``<shard>.done`` record (its rows, bytes and checksum) next to
it, so a build that resumes can tell a finished shard from one whose writer died;
``write_manifest`` removes the records and every other unlisted file, leaving the same
layout as ``write``.

A reader trusts only shards listed in a manifest and checks each one's size, checksum and
schema metadata, so a half-written or damaged entry is either invisible or a loud
``CorruptShardError`` -- never silently wrong features. Arrays handed back are views of
the Arrow buffers where possible, so they may be read-only.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import ipc

from explore.store._io import Storage, sha256_hex
from explore.store.errors import CorruptShardError, EntryNotFoundError
from explore.store.feature_set import FeatureSet, FeatureSplit
from explore.store.keys import FORMAT_VERSION, check_name

__all__ = ["LOCK", "MANIFEST", "SHARD_CHECKSUM", "Shards", "ShardedEntry", "shard_name"]

MANIFEST = "manifest.json"
LOCK = ".lock"
DONE = ".done"
"""Suffix of a finished shard's record while its entry is being built shard by shard."""
META_KEY = b"explore.cache_key"
META_SPLIT = b"explore.split"

SHARD_CHECKSUM = "xxh3_128"
"""Shards are checked on every read, so their checksum must cost little next to the read
itself: xxh3-128 runs at ~16 GB/s here, sha256 at ~1.7 GB/s (10× slower than a local read
from the page cache). It detects corruption and truncation; it is not a signature.
Manifests written with sha256 (before) are still verified with sha256."""


def _xxh3_128(data: Any) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(memoryview(data))


def _checksum_ok(data: Any, shard: dict[str, Any]) -> bool:
    if SHARD_CHECKSUM in shard:
        return _xxh3_128(data) == shard[SHARD_CHECKSUM]
    return sha256_hex(data) == shard.get("sha256")


def _single_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _write_ipc(sink: Any, key: str, split: str, part: FeatureSplit) -> None:
    """One split chunk as an Arrow IPC file tagged with its key and split, into ``sink``."""
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
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _shard_bytes(key: str, split: str, part: FeatureSplit) -> pa.Buffer:
    """One split chunk as an Arrow IPC file in memory."""
    sink = pa.BufferOutputStream()
    _write_ipc(sink, key, split, part)
    return sink.getvalue()


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split`` inside its entry."""
    return f"{split}-{index:05d}.arrow"


def _record(name: str, rows: int, data: Any) -> dict[str, Any]:
    return {"path": name, "rows": rows, "bytes": data.size, SHARD_CHECKSUM: _xxh3_128(data)}


@dataclass(frozen=True)
class ShardedEntry:
    """What the manifest of an entry built shard by shard says besides its shards' records."""

    d: int
    classes: tuple[str, ...]
    meta: dict[str, Any]
    shards: dict[str, list[dict[str, Any]]]
    """Per split, in order: each shard's record (``write_shard``'s or ``finished_shard``'s)."""


class Shards:
    """The feature entries under a store root, ``max_rows_per_shard`` rows per shard."""

    def __init__(self, storage: Storage, max_rows_per_shard: int) -> None:
        self.storage = storage
        self.max_rows_per_shard = max_rows_per_shard

    def entry(self, key: str) -> str:
        """Filesystem path of ``key``'s entry directory."""
        return self.storage.path("features", check_name(key, "cache key"))

    def has(self, key: str) -> bool:
        return self.storage.exists(f"{self.entry(key)}/{MANIFEST}")

    def manifest(self, key: str) -> dict[str, Any]:
        path = f"{self.entry(key)}/{MANIFEST}"
        shown = self.storage.uri_of(path)
        try:
            raw = self.storage.read_bytes(path)
        except FileNotFoundError:
            raise EntryNotFoundError(
                f"no features for key {key} under {self.storage.uri} (no {MANIFEST}); "
                "build them with FeatureStore.get_or_build"
            ) from None
        try:
            manifest = json.loads(raw.to_pybytes())
        except ValueError:
            raise CorruptShardError(f"{shown} is not valid JSON; delete the entry") from None
        if not isinstance(manifest, dict) or manifest.get("version") != FORMAT_VERSION:
            raise CorruptShardError(
                f"{shown} has format version "
                f"{manifest.get('version') if isinstance(manifest, dict) else None}, "
                f"this code reads {FORMAT_VERSION}; rebuild the entry"
            )
        if manifest.get("key") != key:
            raise CorruptShardError(f"{shown} belongs to key {manifest.get('key')}, not {key}")
        return manifest

    def write(self, key: str, fset: FeatureSet) -> None:
        """Store ``fset`` under ``key``, replacing any previous entry; manifest last."""
        if not isinstance(fset, FeatureSet):
            raise ValueError(  # noqa: TRY004 - bad input is a ValueError throughout
                f"write() needs a FeatureSet, got {type(fset).__name__}"
            )
        entry = self.entry(key)
        self.clear(key)
        self.storage.mkdir(entry)
        records: dict[str, list[dict[str, Any]]] = {}
        for name, part in fset.splits.items():
            records[name] = []
            for i, start in enumerate(range(0, len(part), self.max_rows_per_shard)):
                stop = min(start + self.max_rows_per_shard, len(part))
                chunk = FeatureSplit(part.features[start:stop], part.labels[start:stop])
                data = _shard_bytes(key, name, chunk)
                fname = shard_name(name, i)
                self.storage.write_bytes(f"{entry}/{fname}", data, atomic=False)
                records[name].append(_record(fname, stop - start, data))
        self._write_manifest(key, ShardedEntry(fset.d, fset.classes, fset.meta, records))

    def _write_manifest(self, key: str, entry: ShardedEntry) -> None:
        manifest = {
            "format": "explore-feature-store",
            "version": FORMAT_VERSION,
            "key": key,
            "d": entry.d,
            "classes": list(entry.classes),
            "meta": entry.meta,
            "splits": {name: {"rows": sum(r["rows"] for r in shards), "shards": shards}
                       for name, shards in entry.shards.items()},
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.storage.write_bytes(
            f"{self.entry(key)}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), atomic=True
        )

    # ----------------------------------------------------------- shard by shard

    def write_shard(self, key: str, split: str, index: int, part: FeatureSplit) -> dict[str, Any]:
        """Write one shard of an entry built shard by shard (by any process) and its
        ``.done`` record; returns the record for the manifest. Both writes are atomic, so a
        writer killed midway leaves no shard that looks finished."""
        entry, name = self.entry(key), shard_name(check_name(split, "split name"), index)
        self.storage.mkdir(entry)
        path = f"{entry}/{name}"
        if self.storage.is_s3:
            data = _shard_bytes(key, split, part)
            record = _record(name, len(part), data)
            self.storage.write_bytes(path, data, atomic=True)
        else:  # straight to the file, not through a second copy in memory
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with self.storage.errors("writing", path):
                with pa.OSFile(tmp, "wb") as sink:
                    _write_ipc(sink, key, split, part)
                record = _record(name, len(part), self.storage.read_bytes(tmp))
                os.replace(tmp, path)
        self.storage.write_bytes(f"{path}{DONE}", json.dumps(record).encode(), atomic=True)
        return record

    def finished_shard(self, key: str, split: str, index: int, rows: int,
                       d: int) -> dict[str, Any] | None:
        """The record of shard ``index`` of ``split`` when a ``write_shard`` finished it and
        it still reads back whole (its size, checksum, schema and ``rows`` rows of width
        ``d``); None when it must be written (again)."""
        entry, name = self.entry(key), shard_name(split, index)
        try:
            record = json.loads(self.storage.read_bytes(f"{entry}/{name}{DONE}").to_pybytes())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("path") != name or record.get("rows") != rows:
            return None
        try:
            self._read_shard(key, split, d, entry, record)
        except CorruptShardError:
            return None
        return record

    def write_manifest(self, key: str, entry: ShardedEntry) -> None:
        """Finish an entry built shard by shard: its manifest (atomically, last), then every
        file it does not list (``.done`` records, temp files of killed writers) removed."""
        self._write_manifest(key, entry)
        listed = {MANIFEST} | {r["path"] for shards in entry.shards.values() for r in shards}
        for info in self.storage.list_files(self.entry(key)):
            name = os.path.basename(info.path)
            if name not in listed and not name.startswith(LOCK):
                self.storage.delete(info.path)

    def _read_shard(
        self, key: str, split: str, d: int, entry: str, shard: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        path = f"{entry}/{shard['path']}"
        shown = self.storage.uri_of(path)
        try:
            buf = self.storage.read_bytes(path)
        except FileNotFoundError:
            raise CorruptShardError(
                f"shard {shown} is listed in the manifest but missing"
            ) from None
        if buf.size != shard["bytes"]:
            raise CorruptShardError(
                f"shard {shown} has {buf.size} bytes, manifest says {shard['bytes']}"
            )
        if not _checksum_ok(buf, shard):
            raise CorruptShardError(f"shard {shown} fails its checksum (damaged or overwritten)")
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
        """The features under ``key``, every shard verified against the manifest."""
        manifest = self.manifest(key)
        splits = {name: self.read_split(key, manifest, name) for name in manifest["splits"]}
        return FeatureSet(splits=splits, classes=tuple(manifest["classes"]), meta=manifest["meta"])

    def read_split(self, key: str, manifest: dict[str, Any], name: str) -> FeatureSplit:
        """Split ``name`` of ``key`` (whose ``manifest`` the caller read), shards verified."""
        entry, d, info = self.entry(key), int(manifest["d"]), manifest["splits"][name]
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
                f"split {name} of {self.storage.uri_of(entry)} has {len(y)} rows, "
                f"manifest says {info['rows']}"
            )
        return FeatureSplit(x, y)

    def clear(self, key: str) -> None:
        """Delete ``key``'s entry, manifest first (so it turns invisible at once), keeping the
        lock. Also removes orphans of crashed writes (unlisted shards, ``.tmp-*`` files)."""
        entry = self.entry(key)
        self.storage.delete(f"{entry}/{MANIFEST}")
        for info in self.storage.list_files(entry):
            if not os.path.basename(info.path).startswith(LOCK):  # the lock and its temp files
                self.storage.delete(info.path)
