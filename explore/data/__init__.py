"""Long-tail image datasets: readers, split construction and the name → reader registry.

``load_dataset(DatasetConfig(name=...))`` returns a :class:`LongTailDataset` (long-tail
train split, class-balanced validation split, balanced test set) whose ``params`` hold
everything that determines the splits.
"""

from explore.data.cifar import cifar10_lt, cifar100_lt
from explore.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    IdxFormatError,
    fashion_mnist_lt,
    read_idx,
)
from explore.data.list_datasets import (
    imagenet_lt,
    load_image,
    load_images,
    places_lt,
    read_split_list,
)
from explore.data.longtail import (
    balanced_holdout,
    exponential_profile,
    long_tail_split,
    subsample_long_tail,
)
from explore.data.registry import DATASETS, LIST_DEFINED, DatasetConfig, load_dataset
from explore.data.types import (
    DatasetError,
    DatasetFilesMissing,
    ImageSplit,
    LongTailDataset,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "LIST_DEFINED",
    "DatasetConfig",
    "DatasetError",
    "DatasetFilesMissing",
    "IdxFormatError",
    "ImageSplit",
    "LongTailDataset",
    "balanced_holdout",
    "cifar100_lt",
    "cifar10_lt",
    "exponential_profile",
    "fashion_mnist_lt",
    "imagenet_lt",
    "load_dataset",
    "load_image",
    "load_images",
    "long_tail_split",
    "places_lt",
    "read_idx",
    "read_split_list",
    "subsample_long_tail",
]
