"""Dataset names → readers, and the validated config that selects one.

``load_dataset(DatasetConfig(name="fashion_mnist_lt"))`` is the one entry point the rest of
explore uses; the Hydra ``dataset`` group maps onto :class:`DatasetConfig` field by field
(see :meth:`DatasetConfig.from_mapping`). A setting that does not apply to the chosen dataset
is an error rather than silently ignored, so a sweep never records a knob that did nothing.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from explore.data import cifar, fashion_mnist, list_datasets, open_set
from explore.data.types import DatasetError, LongTailDataset


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset to load and how its long-tail splits are drawn."""

    name: str
    """A key of :data:`DATASETS`, e.g. ``fashion_mnist_lt``."""
    root: str | None = None
    """Where the files are; None = the dataset's default (only Fashion-MNIST has one)."""
    n_max: int | None = None
    """Training images of the head class; None = the dataset's default (sampled datasets)."""
    imbalance_factor: float | None = None
    """n_max / n_min of the exponential profile; None = the dataset's default."""
    val_per_class: int | None = None
    """Validation images per class, held out from unused train images; None = default
    (Fashion-MNIST 100, CIFAR 0: with the published n_max the head class has none left)."""
    seed: int = 0
    """Seed of the long-tail subsampling (sampled datasets; list datasets have fixed splits)."""
    list_dir: str | None = None
    """Directory of the split lists (ImageNet-LT / Places-LT); None = ``root``."""
    image_size: int | None = None
    """Decode size of path-based images (ImageNet-LT / Places-LT), see ``load_image``."""
    download: bool = False
    """Fashion-MNIST only: fetch missing files with torchvision."""
    aux_per_class: int | None = None
    """Open-set datasets only (``fashion_mnist_lt_open``): auxiliary images per held-out
    class; None = the dataset's default (300)."""
    test_per_class: int | None = None
    """Open-set datasets only: a balanced seeded subset of the official test images per
    class, for quick runs; None = the whole test set."""

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise DatasetError(
                f"unknown dataset {self.name!r}; known datasets: {', '.join(sorted(DATASETS))}"
            )
        _check_int("n_max", self.n_max, minimum=1)
        _check_int("val_per_class", self.val_per_class, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        _check_int("image_size", self.image_size, minimum=1)
        for knob in ("aux_per_class", "test_per_class"):
            _check_int(knob, getattr(self, knob), minimum=1)
            if getattr(self, knob) is not None and self.name not in OPEN_SET:
                raise DatasetError(
                    f"dataset.{knob} applies only to {', '.join(sorted(OPEN_SET))}, "
                    f"not {self.name}; leave it unset"
                )
        if self.imbalance_factor is not None and not (
            isinstance(self.imbalance_factor, numbers.Real)
            and not isinstance(self.imbalance_factor, bool)
            and 1 <= self.imbalance_factor < float("inf")
        ):
            raise DatasetError(
                f"dataset.imbalance_factor must be a number >= 1, got {self.imbalance_factor!r}"
            )
        if self.name in LIST_DEFINED:
            for knob in ("n_max", "imbalance_factor", "val_per_class"):
                if getattr(self, knob) is not None:
                    raise DatasetError(
                        f"dataset.{knob} does not apply to {self.name}: its splits are the "
                        f"published lists; leave it unset"
                    )
        else:
            for knob in ("list_dir", "image_size"):
                if getattr(self, knob) is not None:
                    raise DatasetError(
                        f"dataset.{knob} applies only to {', '.join(sorted(LIST_DEFINED))}, "
                        f"not {self.name}; leave it unset"
                    )
        if self.download and self.name not in ("fashion_mnist_lt", "fashion_mnist_lt_open"):
            raise DatasetError(
                f"dataset.download applies only to fashion_mnist_lt(_open), not {self.name}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DatasetConfig:
        """Build from a plain mapping (e.g. the resolved Hydra ``dataset`` group);
        unknown keys are an error naming the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise DatasetError(
                f"unknown dataset setting(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
            )
        return cls(**dict(values))


def _check_int(knob: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DatasetError(f"dataset.{knob} must be an integer >= {minimum}, got {value!r}")


def _sampled_kwargs(cfg: DatasetConfig) -> dict[str, Any]:
    """The long-tail knobs the user set; unset ones fall back to the reader's defaults."""
    kwargs: dict[str, Any] = {"seed": cfg.seed}
    for knob in ("n_max", "imbalance_factor", "val_per_class"):
        if getattr(cfg, knob) is not None:
            kwargs[knob] = getattr(cfg, knob)
    return kwargs


def _fashion_mnist_lt(cfg: DatasetConfig) -> LongTailDataset:
    return fashion_mnist.fashion_mnist_lt(cfg.root, download=cfg.download, **_sampled_kwargs(cfg))


def _fashion_mnist_lt_open(cfg: DatasetConfig) -> LongTailDataset:
    kwargs = _sampled_kwargs(cfg)
    for knob in ("aux_per_class", "test_per_class"):
        if getattr(cfg, knob) is not None:
            kwargs[knob] = getattr(cfg, knob)
    return open_set.fashion_mnist_lt_open(cfg.root, download=cfg.download, **kwargs)


def _cifar10_lt(cfg: DatasetConfig) -> LongTailDataset:
    return cifar.cifar10_lt(cfg.root, **_sampled_kwargs(cfg))


def _cifar100_lt(cfg: DatasetConfig) -> LongTailDataset:
    return cifar.cifar100_lt(cfg.root, **_sampled_kwargs(cfg))


def _imagenet_lt(cfg: DatasetConfig) -> LongTailDataset:
    return list_datasets.imagenet_lt(cfg.root, cfg.list_dir, cfg.image_size)


def _places_lt(cfg: DatasetConfig) -> LongTailDataset:
    return list_datasets.places_lt(cfg.root, cfg.list_dir, cfg.image_size)


DATASETS: dict[str, Callable[[DatasetConfig], LongTailDataset]] = {
    "fashion_mnist_lt": _fashion_mnist_lt,
    "fashion_mnist_lt_open": _fashion_mnist_lt_open,
    "cifar10_lt": _cifar10_lt,
    "cifar100_lt": _cifar100_lt,
    "imagenet_lt": _imagenet_lt,
    "places_lt": _places_lt,
}
"""Every dataset explore can load, by the name used in configs and results."""

LIST_DEFINED: frozenset[str] = frozenset({"imagenet_lt", "places_lt"})
"""Datasets whose splits are published lists (never re-sampled)."""

OPEN_SET: frozenset[str] = frozenset({"fashion_mnist_lt_open"})
"""Datasets with an auxiliary (open-set) pool: ``LongTailDataset.aux``."""


def load_dataset(cfg: DatasetConfig) -> LongTailDataset:
    """Load the dataset ``cfg`` names. ``result.params`` determines its splits and belongs
    in the feature-cache key."""
    try:
        loader = DATASETS[cfg.name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {cfg.name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None
    return loader(cfg)
