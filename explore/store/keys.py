"""Cache keys and the names allowed inside a store (keys, splits, artifacts).

A key is a digest of everything an entry depends on, so equal inputs share one entry and
any changed input gives a new one -- an entry is never updated in place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FORMAT_VERSION", "canonical_json", "check_name", "feature_key"]

FORMAT_VERSION = 1
"""Bumped when the on-disk layout changes; readers refuse other versions."""
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe path component (no '/', no '..'), else a ``ValueError``."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


def canonical_json(value: Any, what: str) -> str:
    """``value`` as JSON with sorted keys and no whitespace: equal values, equal text."""
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
    text = canonical_json(dict(spec), "feature spec")
    return hashlib.sha256(f"explore-features/v{FORMAT_VERSION}\n{text}".encode()).hexdigest()[:16]
