"""Every error the feature store raises: one line each, naming the URI and what to check,
never a secret."""

from __future__ import annotations

__all__ = [
    "CorruptShardError",
    "EntryNotFoundError",
    "LockTimeoutError",
    "StorageError",
    "StoragePermanentError",
    "StorageURIError",
    "StorageUnreachableError",
]


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to check, never a secret."""


class StoragePermanentError(StorageError):
    """The storage refused an operation for a reason retrying will not fix: no space left,
    a read-only filesystem, no permission. Trials report it instead of being retried."""


class StorageUnreachableError(StorageError):
    """The storage endpoint could not be reached (connection refused, timeout, DNS)."""


class StorageURIError(StorageError, ValueError):
    """A storage URI is malformed (bad scheme, no bucket, credentials in it).

    Also a ``ValueError``: it is bad input, caught wherever bad settings are."""


class CorruptShardError(StorageError):
    """A stored object does not match its manifest (size, checksum, schema or cache key)."""


class EntryNotFoundError(StorageError, LookupError):
    """No complete entry (no manifest) for the requested key or name."""


class LockTimeoutError(StorageError, TimeoutError):
    """Waited longer than ``wait_timeout_s`` for another process's build to finish."""
