"""Feature cache on local disk or S3: Arrow IPC shards by cache key, manifest-last, build-once.

Public surface: ``FeatureStore`` and its data types, ``feature_key`` to name an entry,
URI helpers, and the importer for user-supplied feature directories.
"""

from explore.store.feature_store import (
    FORMAT_VERSION,
    REQUIRED_SPLITS,
    CorruptShardError,
    EntryNotFoundError,
    FeatureSet,
    FeatureSplit,
    FeatureStore,
    LockTimeoutError,
    feature_key,
)
from explore.store.imported import (
    Classifier,
    FeatureImportError,
    digest_feature_dir,
    import_feature_dir,
    imported_feature_key,
)
from explore.store.uri import (
    StorageError,
    StorageUnreachableError,
    check_reachable,
    join,
    resolve,
)

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_SPLITS",
    "Classifier",
    "CorruptShardError",
    "EntryNotFoundError",
    "FeatureImportError",
    "FeatureSet",
    "FeatureSplit",
    "FeatureStore",
    "LockTimeoutError",
    "StorageError",
    "StorageUnreachableError",
    "check_reachable",
    "digest_feature_dir",
    "feature_key",
    "import_feature_dir",
    "imported_feature_key",
    "join",
    "resolve",
]
