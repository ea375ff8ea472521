"""Small artifacts derived from a cache key: named arrays and JSON documents.

Base classifiers, backbone weights, text embeddings and pipeline records live here::

    <root>/artifacts/<key>/<name>.npz        uncompressed arrays
    <root>/artifacts/<key>/<name>.npz.json   sidecar written last: sha256, shapes, dtypes, meta
    <root>/artifacts/<key>/<name>.json       a JSON document with its own sha256

Every object is written atomically and verified on read (``CorruptShardError`` otherwise).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from explore.store._io import Storage, sha256_hex
from explore.store.errors import CorruptShardError, EntryNotFoundError
from explore.store.keys import FORMAT_VERSION, canonical_json, check_name

__all__ = ["Artifacts"]


class Artifacts:
    """The artifacts under a store root."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def _base(self, key: str) -> str:
        return self.storage.path("artifacts", check_name(key, "cache key"))

    def put_arrays(
        self,
        key: str,
        name: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Store named arrays as ``<name>.npz`` plus its sidecar, written last."""
        check_name(name, "artifact name")
        if not isinstance(arrays, Mapping) or not arrays:
            raise ValueError("arrays must be a non-empty dict of name -> numpy array")
        clean = {}
        for k, v in arrays.items():
            check_name(k, "array name")
            if k in ("file", "allow_pickle"):  # np.savez's own parameter names
                raise ValueError(f"array name {k!r} is reserved by np.savez; rename it")
            a = np.asarray(v)
            if a.dtype.hasobject:
                raise ValueError(
                    f"array {k!r} has dtype object; store numeric or fixed-width arrays"
                )
            clean[k] = a
        meta = dict(meta or {})
        canonical_json(meta, "artifact meta")
        buf = io.BytesIO()
        np.savez(buf, **clean)  # type: ignore[arg-type]  # stubs type **kwds like allow_pickle
        data = buf.getvalue()
        base = self._base(key)
        self.storage.mkdir(base)
        self.storage.write_bytes(f"{base}/{name}.npz", data, atomic=True)
        sidecar = {
            "format": "explore-arrays",
            "version": FORMAT_VERSION,
            "key": key,
            "file": f"{name}.npz",
            "bytes": len(data),
            "sha256": sha256_hex(data),
            "meta": meta,
            "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in clean.items()},
        }
        self.storage.write_bytes(
            f"{base}/{name}.npz.json", json.dumps(sidecar, indent=1).encode(), atomic=True
        )

    def has_arrays(self, key: str, name: str) -> bool:
        return self.storage.exists(f"{self._base(key)}/{check_name(name, 'artifact name')}.npz.json")

    def get_arrays(self, key: str, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)`` stored by ``put_arrays``, checksum verified."""
        base = f"{self._base(key)}/{check_name(name, 'artifact name')}"
        sidecar = self._read_document(f"{base}.npz.json", f"arrays {name!r} for key {key}")
        path = f"{base}.npz"
        shown = self.storage.uri_of(path)
        try:
            data = self.storage.read_bytes(path)
        except FileNotFoundError:
            raise CorruptShardError(f"{shown} is listed in its sidecar but missing") from None
        if data.size != sidecar.get("bytes") or sha256_hex(data) != sidecar.get("sha256"):
            raise CorruptShardError(f"{shown} fails its size/sha256 check; put it again")
        with np.load(io.BytesIO(data.to_pybytes()), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        expected = sidecar.get("arrays", {})
        got = {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}
        if got != expected:
            raise CorruptShardError(f"{shown} holds {got}, sidecar says {expected}")
        return arrays, dict(sidecar.get("meta", {}))

    def put_json(self, key: str, name: str, value: Any) -> None:
        """Store a small JSON document (with its own sha256), atomically."""
        text = canonical_json(value, f"JSON artifact {name!r}")
        doc = {
            "format": "explore-json",
            "version": FORMAT_VERSION,
            "key": key,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "value": value,
        }
        base = self._base(key)
        self.storage.mkdir(base)
        self.storage.write_bytes(
            f"{base}/{check_name(name, 'artifact name')}.json",
            json.dumps(doc, indent=1, allow_nan=False).encode(),
            atomic=True,
        )

    def has_json(self, key: str, name: str) -> bool:
        return self.storage.exists(f"{self._base(key)}/{check_name(name, 'artifact name')}.json")

    def get_json(self, key: str, name: str) -> Any:
        """The value stored by ``put_json``, checksum verified."""
        path = f"{self._base(key)}/{check_name(name, 'artifact name')}.json"
        doc = self._read_document(path, f"JSON {name!r} for key {key}")
        value = doc.get("value")
        text = canonical_json(value, "stored JSON")
        if hashlib.sha256(text.encode()).hexdigest() != doc.get("sha256"):
            raise CorruptShardError(
                f"{self.storage.uri_of(path)} fails its sha256 check; put it again"
            )
        return value

    def _read_document(self, path: str, what: str) -> dict[str, Any]:
        """A JSON object written by this module (sidecar or document), format checked."""
        shown = self.storage.uri_of(path)
        try:
            raw = self.storage.read_bytes(path)
        except FileNotFoundError:
            raise EntryNotFoundError(f"no {what} under {self.storage.uri}") from None
        try:
            doc = json.loads(raw.to_pybytes())
        except ValueError:
            raise CorruptShardError(f"{shown} is not valid JSON; put it again") from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise CorruptShardError(f"{shown} has an unknown format; put it again")
        return doc
