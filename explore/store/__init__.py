"""Feature cache on local disk or S3: Arrow IPC shards by cache key, manifest-last, build-once.

Public surface: ``FeatureStore`` and its data types, ``feature_key`` to name an entry,
the storage errors, URI helpers (also as ``explore.store.uri``), and the importer for
user-supplied feature directories.

Modules: ``feature_store`` (the ``FeatureStore`` facade), ``feature_set`` (data types),
``keys`` (cache keys, names), ``shards`` (feature entries), ``artifacts`` (small arrays
and JSON), ``uri`` (URIs to pyarrow filesystems), ``errors``, ``imported``; private:
``_io`` (raw reads and writes), ``_locks`` (build-once locks), ``_owner`` (lock
owners).
"""

from explore.store._locks import LockHeldError, take_exclusive
from explore.store.errors import (
    CorruptShardError,
    EntryNotFoundError,
    LockTimeoutError,
    StorageError,
    StoragePermanentError,
    StorageUnreachableError,
    StorageURIError,
)
from explore.store.feature_set import REQUIRED_SPLITS, FeatureSet, FeatureSplit
from explore.store.feature_store import FeatureStore
from explore.store.imported import (
    FeatureImportError,
    digest_feature_dir,
    import_feature_dir,
    imported_feature_key,
)
from explore.store.keys import FORMAT_VERSION, feature_key
from explore.store.uri import (
    check_reachable,
    describe_failure,
    is_s3,
    join,
    redact,
    resolve,
)

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_SPLITS",
    "CorruptShardError",
    "EntryNotFoundError",
    "FeatureImportError",
    "FeatureSet",
    "FeatureSplit",
    "FeatureStore",
    "LockHeldError",
    "LockTimeoutError",
    "StorageError",
    "StoragePermanentError",
    "StorageURIError",
    "StorageUnreachableError",
    "check_reachable",
    "describe_failure",
    "digest_feature_dir",
    "feature_key",
    "import_feature_dir",
    "imported_feature_key",
    "is_s3",
    "join",
    "redact",
    "resolve",
    "take_exclusive",
]
