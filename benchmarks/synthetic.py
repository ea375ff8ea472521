"""ImageNet-LT-like synthetic features and a base classifier, for the benchmarks.

The real ImageNet-LT features are not needed to measure speed: what matters is the
shape of the problem (1,000 classes; 115.8k training samples with 1,280 down to 5 per
class; a balanced 20k validation and 50k test split; d = 2048) and that it is
learnable, so that AlphaNet's training and model selection do real work.

Features are drawn around hierarchical class centres (classes of one super-class lie
close together, so nearest neighbours mean something), and the base classifier is the
Gaussian Bayes rule with the long-tailed training prior: it under-predicts the few
classes on the balanced test set, as a cRT/CE base does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from explore.methods.prototypes import class_means
from explore.splits import SplitThresholds
from explore.store import FeatureSet, FeatureSplit
from explore.training.posthoc import (
    LinearClassifier,
    PosthocInputs,
    build_posthoc_inputs,
)


@dataclass(frozen=True)
class LongTailSize:
    """Shape of a synthetic long-tailed feature set (defaults: ImageNet-LT)."""

    num_classes: int = 1000
    train_total: int = 115_846
    """Training samples over all classes (ImageNet-LT: 115,846)."""
    n_max: int = 1280
    n_min: int = 5
    val_per_class: int = 20
    test_per_class: int = 50
    d: int = 2048

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.d < 1:
            raise ValueError(f"need num_classes >= 2 and d >= 1, got {self.num_classes}, {self.d}")
        if not 1 <= self.n_min <= self.n_max:
            raise ValueError(f"need 1 <= n_min <= n_max, got n_min={self.n_min}, n_max={self.n_max}")
        lo, hi = self.num_classes * self.n_min, self.num_classes * self.n_max
        if not lo < self.train_total < hi:
            raise ValueError(f"train_total={self.train_total} must lie strictly between {lo} and {hi}")
        if self.val_per_class < 1 or self.test_per_class < 1:
            raise ValueError("val_per_class and test_per_class must be >= 1")

    def scaled(self, num_classes: int) -> LongTailSize:
        """The same profile with ``num_classes`` classes and proportionally many samples."""
        total = round(self.train_total * num_classes / self.num_classes)
        return LongTailSize(num_classes, total, self.n_max, self.n_min, self.val_per_class,
                            self.test_per_class, self.d)

    @property
    def features_bytes(self) -> int:
        rows = self.train_total + self.num_classes * (self.val_per_class + self.test_per_class)
        return rows * self.d * 4


IMAGENET_LT = LongTailSize()
NOISE = 0.5
"""Per-dimension feature noise: the base classifier gets roughly 50–60% top-1 overall."""
PRIOR_WEIGHT = 4.0
"""Weight of log(training prior) in the base biases: > 1 under-predicts few classes, like a CE base."""


SPLIT_FRACTIONS = (0.385, 0.479, 0.136)
"""ImageNet-LT's share of many (>100), medium (20–100) and few (<20) classes: 385/479/136."""


def imagenet_lt_counts(num_classes: int, total: int, n_max: int = 1280, n_min: int = 5) -> np.ndarray:
    """Sorted long-tailed counts (largest first) with ImageNet-LT's split composition.

    Few classes fall geometrically from 19 to ``n_min`` and medium ones from 100 to 20;
    the many classes follow a Pareto/Zipf head ``n_max (1 + i/s)^(−a)`` from ``n_max``
    down to 101, its scale ``s`` found by bisection so that the counts sum to ``total``.
    A single power law through (n_max, n_min) cannot match ImageNet-LT: with the same
    sum it makes ~44% of the classes few instead of 13.6%.
    """
    n_few = round(SPLIT_FRACTIONS[2] * num_classes)
    n_med = round(SPLIT_FRACTIONS[1] * num_classes)
    n_many = num_classes - n_few - n_med
    if min(n_few, n_med, n_many) < 1:
        raise ValueError(f"num_classes={num_classes} is too small for many, medium and few classes")
    few = np.geomspace(19, n_min, n_few)
    med = np.geomspace(100, 20, n_med)
    i = np.arange(n_many, dtype=np.float64)

    def head(s: float) -> np.ndarray:
        a = np.log(n_max / 101) / np.log1p(max(n_many - 1, 1) / s)
        return n_max * (1 + i / s) ** (-a)

    def counts(s: float) -> np.ndarray:
        raw = np.concatenate([head(s), med, few])
        return np.clip(np.round(raw), n_min, n_max).astype(np.int64)

    lo, hi = 1e-6, 1e9  # the sum grows with s (flatter head)
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        if counts(mid).sum() < total:
            lo = mid
        else:
            hi = mid
    return counts(hi)


def make_feature_set(size: LongTailSize = IMAGENET_LT, seed: int = 0, *, classes_per_group: int = 10,
                     noise: float = NOISE) -> FeatureSet:
    """Features around hierarchical class centres; labels in class-index order.

    centre_c = 2.5·g_{group(c)} + 2.0·u_c with g, u random unit vectors; a sample is its
    centre plus N(0, noise²·I).
    """
    rng = np.random.default_rng(seed)
    d, C = size.d, size.num_classes
    _, centres = _centres(rng, C, d, classes_per_group)
    counts = imagenet_lt_counts(C, size.train_total, size.n_max, size.n_min)
    # Few and many classes spread over the groups, as in real data.
    counts = counts[rng.permutation(C)]

    def draw(per_class: np.ndarray) -> FeatureSplit:
        return _draw(rng, centres, per_class, noise)

    splits = {
        "train": draw(counts),
        "val": draw(np.full(C, size.val_per_class)),
        "test": draw(np.full(C, size.test_per_class)),
    }
    meta = {"synthetic": "hierarchical-gaussian", "seed": seed, "d": d, "num_classes": C,
            "train_total": int(counts.sum()), "noise": noise}
    return FeatureSet(splits, tuple(f"class{c:04d}" for c in range(C)), meta)


def _centres(rng: np.random.Generator, C: int, d: int, classes_per_group: int,
             ) -> tuple[np.ndarray, np.ndarray]:
    """(super-group directions g, class centres 2.5·g_{group(c)} + 2.0·u_c)."""
    groups = -(-C // classes_per_group)
    g = _unit_rows(rng, groups, d)
    u = _unit_rows(rng, C, d)
    return g, (2.5 * g[np.arange(C) // classes_per_group] + 2.0 * u).astype(np.float32)


def _draw(rng: np.random.Generator, centres: np.ndarray, per_class: np.ndarray,
          noise: float) -> FeatureSplit:
    labels = np.repeat(np.arange(len(centres)), per_class)
    x = np.empty((len(labels), centres.shape[1]), dtype=np.float32)
    for start in range(0, len(labels), 8192):  # in blocks: no N×d temporaries
        y = labels[start : start + 8192]
        block = rng.standard_normal((len(y), centres.shape[1]), dtype=np.float32)
        block *= np.float32(noise)
        block += centres[y]
        x[start : start + len(y)] = block
    return FeatureSplit(x, labels)


class AuxPool(NamedTuple):
    split: FeatureSplit
    """``per_class`` samples of each auxiliary class, labels 0..num_aux−1."""
    names: tuple[str, ...]
    parents: np.ndarray
    """The target class whose super-group each auxiliary class was drawn in."""


def make_aux_split(size: LongTailSize = IMAGENET_LT, seed: int = 0, *, num_aux: int = 500,
                   per_class: int = 60, classes_per_group: int = 10,
                   noise: float = NOISE) -> AuxPool:
    """An auxiliary pool for neighbor silencing next to ``make_feature_set(size, seed)``:
    ``num_aux`` open-set classes of ``per_class`` samples each.

    Auxiliary class a is a new class of the super-group of a random target class: centre
    2.5·g_{group} + 2.0·u'_a with a fresh unit u'_a, so it is as close to that group's
    targets as they are to each other (the fine-grained neighbours the method silences).
    The super-group directions are those of ``make_feature_set`` (the same draws replayed).
    """
    if num_aux < 1 or per_class < 1:
        raise ValueError(f"need num_aux >= 1 and per_class >= 1, got {num_aux}, {per_class}")
    d, C = size.d, size.num_classes
    g, _ = _centres(np.random.default_rng(seed), C, d, classes_per_group)
    rng = np.random.default_rng([seed, 1])  # independent of the target splits' stream
    parents = rng.integers(0, C, size=num_aux)
    centres = (2.5 * g[parents // classes_per_group] + 2.0 * _unit_rows(rng, num_aux, d))
    split = _draw(rng, centres.astype(np.float32), np.full(num_aux, per_class), noise)
    return AuxPool(split, tuple(f"aux{a:04d}" for a in range(num_aux)), parents)


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def bayes_classifier(features: np.ndarray, labels: np.ndarray, num_classes: int, noise: float = NOISE,
                     prior_weight: float = PRIOR_WEIGHT) -> LinearClassifier:
    """Gaussian Bayes rule with the training prior, from class means of ``features``.

    logit_c = (μ_c·x − ½‖μ_c‖²)/σ² + log π_c with σ² the per-dimension noise variance;
    the prior term favours classes with many training samples, so few classes are
    under-predicted on a balanced test set (what AlphaNet corrects).
    """
    d = features.shape[1]
    means = class_means(features, labels, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    var = noise**2
    weight = means / var
    # ‖μ̂‖² overestimates ‖μ‖² by d·σ²/n; without the correction the smallest classes
    # would get biases hundreds of logits too low and never be predicted.
    sq_norm = (means**2).sum(1) - d * var / counts
    bias = -0.5 * sq_norm / var + prior_weight * np.log(counts / counts.sum())
    return LinearClassifier(weight.astype(np.float32), bias.astype(np.float32))


def as_splits(fset: FeatureSet) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``splits`` argument of ``build_posthoc_inputs``."""
    return {name: (fset.splits[name].features, fset.splits[name].labels) for name in ("train", "val", "test")}


@dataclass
class Problem:
    """A synthetic feature set, its base classifier and (built on first use) its
    post-hoc inputs, shared by the benchmarks that run on the same size."""

    size: LongTailSize
    features: FeatureSet
    classifier: LinearClassifier
    _inputs: PosthocInputs | None = None

    @classmethod
    def make(cls, size: LongTailSize, seed: int = 0) -> Problem:
        fset = make_feature_set(size, seed)
        return cls(size, fset, bayes_classifier(fset.train.features, fset.train.labels, size.num_classes))

    @property
    def inputs(self) -> PosthocInputs:
        if self._inputs is None:
            self._inputs = build_posthoc_inputs(as_splits(self.features), self.classifier,
                                                self.size.num_classes, SplitThresholds())
        return self._inputs

    def drop_inputs(self) -> None:
        """Free the post-hoc inputs (the base logits of every split) until next use."""
        self._inputs = None
