"""Feature cache: backbone features extracted once, stored as Arrow IPC shards by cache key.

Layout under a store root (local directory or ``s3://bucket/prefix``)::

    <root>/features/<key>/   shards + manifest.json + .lock    (``shards``, ``_locks``)
    <root>/artifacts/<key>/  small arrays and JSON documents   (``artifacts``)

Rules that make the cache safe to share between processes and Ray workers:

* A reader trusts only shards listed in a manifest, and checks each one's size, checksum and
  schema metadata, so a half-written or damaged entry is either invisible or a loud
  ``CorruptShardError`` -- never silently wrong features.
* The manifest is written last and atomically (temp file + rename locally; a single
  object PUT on S3, which becomes visible all at once).
* ``get_or_build`` builds at most once per key across processes: the builder holds the
  entry's ``.lock``, refreshed by a heartbeat; waiters poll for the manifest and break a
  lock whose owner died.

Reads use one sized read per object and hand back numpy views of the Arrow buffers where
possible; arrays returned by ``read`` may therefore be read-only -- copy before writing
into them.

One copy per node: an entry that cannot be handed out as memory-mapped files as it is (an
S3 entry, or a split of several shards, which would have to be concatenated) is read
through a node-local copy (``node_cache``): fetched and verified once per node under a file
lock, stored as one shard per split, then memory-mapped by every process that reads it, so
N trial processes on a node share one page-cache copy instead of holding N private ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from explore.store._io import Storage
from explore.store._locks import BuildLock, HeldLock, LockPolicy
from explore.store.artifacts import Artifacts
from explore.store.errors import CorruptShardError, EntryNotFoundError, StoragePermanentError
from explore.store.feature_set import FeatureSet
from explore.store.keys import canonical_json, check_name
from explore.store.shards import LOCK, MANIFEST, ShardedEntry, Shards
from explore.store.uri import join

__all__ = ["NODE_CACHE_ENV", "FeatureStore", "node_cache_dir"]

log = logging.getLogger(__name__)

NODE_CACHE_ENV = "EXPLORE_NODE_CACHE"
"""Directory of the node-local feature copies (``off`` turns them off); by default
``explore-node-cache-<uid>`` in the system's temporary directory."""
_ONE_SHARD = 2**62
"""Rows per shard of a node-local copy: one shard per split, so it maps without a copy."""


def node_cache_dir(option: str | bool = True) -> str | None:
    """The node-local copy directory for ``option``: a path, True (``$EXPLORE_NODE_CACHE``
    or the default) or False (none)."""
    if option is False:
        return None
    if isinstance(option, str):
        return os.path.abspath(option)
    value = os.environ.get(NODE_CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "false", "none"):
        return None
    return os.path.abspath(value) if value else os.path.join(
        tempfile.gettempdir(), f"explore-node-cache-{os.getuid()}")


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
        node_cache: str | bool = True,
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
        self._storage = Storage(self.uri, check=check)
        self._shards = Shards(self._storage, self.max_rows_per_shard)
        self._artifacts = Artifacts(self._storage)
        self.node_cache = node_cache
        """Where reads keep node-local copies (see the module docstring): a directory, True
        for :func:`node_cache_dir`'s default (resolved on each node), False for none."""

    def __repr__(self) -> str:
        return f"FeatureStore({self.uri!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Never pickle the filesystem or boto3 client: re-resolve on the other side.
        kwargs = {
            "max_rows_per_shard": self.max_rows_per_shard,
            "lock_heartbeat_s": self.lock_heartbeat_s,
            "lock_stale_after_s": self.lock_stale_after_s,
            "poll_s": self.poll_s,
            "wait_timeout_s": self.wait_timeout_s,
            "check": False,
            "node_cache": self.node_cache,
        }
        return (_rebuild_store, (self.uri, kwargs))

    @property
    def is_s3(self) -> bool:
        return self._storage.is_s3

    def entry_uri(self, key: str) -> str:
        """URI of the directory holding ``key``'s shards and manifest (for provenance)."""
        return join(self.uri, "features", check_name(key, "cache key"))

    # ----------------------------------------------------------- features

    def has(self, key: str) -> bool:
        """True when ``key`` has a manifest (shards are verified only by ``read``)."""
        return self._shards.has(key)

    def read(self, key: str) -> FeatureSet:
        """The features stored under ``key``, every shard verified.

        Memory-mapped: from the entry itself when it is local with one shard per split,
        else from this node's copy of it (made here if missing or damaged). Raises
        ``EntryNotFoundError`` without a manifest, ``CorruptShardError`` naming the
        first shard that does not match it.
        """
        node_dir = node_cache_dir(self.node_cache)
        if node_dir is None:
            return self._shards.read(key)
        manifest = self._shards.manifest(key)
        if not self.is_s3 and all(len(s["shards"]) <= 1 for s in manifest["splits"].values()):
            return self._shards.read(key)
        try:
            return self._node_copy(node_dir, key, manifest)
        except StoragePermanentError as exc:  # node-local disk full or not writable
            log.warning("reading features %s without a node-local copy: %s", key, exc)
            return self._shards.read(key)

    def _node_copy(self, node_dir: str, key: str, manifest: dict[str, Any]) -> FeatureSet:
        # Keyed by the manifest's content too: an entry rebuilt under the same key (after
        # a corrupt shard) is a new copy, never the old one.
        digest = hashlib.sha256(canonical_json(manifest, "manifest").encode()).hexdigest()[:16]
        copy_key = f"{key}-{digest}"
        local = FeatureStore(
            node_dir, max_rows_per_shard=_ONE_SHARD, lock_heartbeat_s=self.lock_heartbeat_s,
            lock_stale_after_s=self.lock_stale_after_s, poll_s=self.poll_s,
            wait_timeout_s=self.wait_timeout_s, check=False, node_cache=False,
        )

        def fetch() -> ShardedEntry:
            # Split by split, each written straight to its file: the process making the copy
            # holds at most one split's fetched shards (and their concatenation) at a time.
            shards = {}
            for name in manifest["splits"]:
                part = self._shards.read_split(key, manifest, name)
                shards[name] = [local._shards.write_shard(copy_key, name, 0, part)] if len(part) else []
                del part
                # Arrow's allocator keeps freed memory for reuse: hand it back now.
                pa.default_memory_pool().release_unused()
            return ShardedEntry(int(manifest["d"]), tuple(manifest["classes"]), manifest["meta"], shards)

        fset = local._get_or_build(copy_key, fetch, read_back=True, clear=False)
        for old in local._storage.list_dirs(local._storage.path("features")):
            name = os.path.basename(old)
            # An older copy of the key, unless someone builds it right now (its lock).
            if (name.startswith(f"{key}-") and name != copy_key
                    and not os.path.exists(os.path.join(old, LOCK))):
                shutil.rmtree(old, ignore_errors=True)  # mapped files stay valid until unmapped
        return fset

    # ----------------------------------------------------------- shard by shard

    def write_shard(self, key: str, split: str, index: int, features: np.ndarray,
                    labels: np.ndarray) -> dict[str, Any]:
        """Write shard ``index`` of ``split`` of an entry that many processes build shard by
        shard (see ``get_or_build_sharded``); returns its record for the manifest."""
        from explore.store.feature_set import FeatureSplit

        return self._shards.write_shard(key, split, index, FeatureSplit(features, labels))

    def finished_shard(self, key: str, split: str, index: int, rows: int,
                       d: int) -> dict[str, Any] | None:
        """The record of a shard ``write_shard`` finished and that still verifies (``rows``
        rows of width ``d``), or None when it must be written again."""
        return self._shards.finished_shard(key, split, index, rows, d)

    def get_or_build_sharded(self, key: str, build: Callable[[], ShardedEntry]) -> FeatureSet:
        """``get_or_build`` for an entry whose shards other processes write: ``build()``
        has every shard written (``write_shard``) and returns their records; the store
        then writes the manifest, last. Shards a killed build finished are kept, so
        ``build`` may skip them (``finished_shard``)."""
        return self._get_or_build(key, build, read_back=True, clear=False)

    def write(self, key: str, fset: FeatureSet) -> None:
        """Store ``fset`` under ``key``, replacing any previous entry.

        Not a lock holder by itself: concurrent writers of one key should go through
        ``get_or_build``. The manifest goes last, so a crash leaves an invisible entry.
        """
        self._shards.write(key, fset)

    def delete(self, key: str) -> None:
        """Remove ``key``'s features (not its artifacts)."""
        self._shards.clear(key)

    # ----------------------------------------------------------- build once

    def _build_lock(self, key: str) -> BuildLock:
        policy = LockPolicy(
            heartbeat_s=self.lock_heartbeat_s,
            stale_after_s=self.lock_stale_after_s,
            poll_s=self.poll_s,
            wait_timeout_s=self.wait_timeout_s,
        )
        path = f"{self._shards.entry(key)}/{LOCK}"
        return BuildLock(self._storage, path, policy, f"key {key} ({self.entry_uri(key)})")

    def get_or_build(self, key: str, build: Callable[[], FeatureSet]) -> FeatureSet:
        """The features under ``key``; built by ``build()`` and stored if missing or corrupt.

        Among concurrent callers (processes, Ray workers) only the one holding the lock
        builds; the others wait for its manifest. A failed build releases the lock and
        re-raises, so a waiter takes over.
        """
        return self._get_or_build(key, build)

    def _get_or_build(self, key: str, build: Callable[[], Any], *, read_back: bool = False,
                      clear: bool = True) -> FeatureSet:
        """``build()`` returns a FeatureSet (written here) or, for an entry built shard by
        shard, a ShardedEntry (its manifest written here). ``read_back``: return what the
        store holds (memory-mapped) rather than what ``build()`` returned; ``clear``: start
        from an empty entry rather than keep finished shards."""
        check_name(key, "cache key")
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            found = self._read_valid(key)
            if found is not None:
                return found
            lock = self._build_lock(key)
            held = lock.try_take()
            if held is not None:
                return self._build_locked(key, build, held, read_back, clear)
            lock.wait(deadline)

    def _read_valid(self, key: str) -> FeatureSet | None:
        """The entry if it is complete and intact, else None (a damaged one is logged)."""
        if self.has(key):
            try:
                return self.read(key)
            except (CorruptShardError, EntryNotFoundError) as exc:
                log.warning("rebuilding features %s: %s", key, exc)
        return None

    def _build_locked(self, key: str, build: Callable[[], Any], held: HeldLock,
                      read_back: bool, clear: bool) -> FeatureSet:
        try:
            found = self._read_valid(key)  # someone may have finished between check and lock
            if found is not None:
                return found
            if clear:
                self._shards.clear(key)
            else:  # invisible while it is rebuilt; its finished shards stay
                self._storage.delete(f"{self._shards.entry(key)}/{MANIFEST}")
            built = build()
            if isinstance(built, FeatureSet):
                self._shards.write(key, built)
            elif isinstance(built, ShardedEntry):
                self._shards.write_manifest(key, built)
            else:
                raise TypeError(
                    f"build() for key {key} returned {type(built).__name__}, not a FeatureSet"
                )
            return self.read(key) if read_back else built
        finally:
            held.release()

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
        self._artifacts.put_arrays(key, name, arrays, meta)

    def has_arrays(self, key: str, name: str) -> bool:
        return self._artifacts.has_arrays(key, name)

    def get_arrays(self, key: str, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)`` stored by ``put_arrays``, checksum verified."""
        return self._artifacts.get_arrays(key, name)

    def put_json(self, key: str, name: str, value: Any) -> None:
        """Store a small JSON document (with its own sha256) derived from ``key``, atomically."""
        self._artifacts.put_json(key, name, value)

    def has_json(self, key: str, name: str) -> bool:
        return self._artifacts.has_json(key, name)

    def get_json(self, key: str, name: str) -> Any:
        """The value stored by ``put_json``, checksum verified."""
        return self._artifacts.get_json(key, name)


def _rebuild_store(uri: str, kwargs: dict[str, Any]) -> FeatureStore:
    return FeatureStore(uri, **kwargs)
