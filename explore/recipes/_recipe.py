"""The protocol every method recipe implements (one module per method in this package).

A recipe holds everything specific to its method: the typed, validated trial parameters
(a frozen dataclass built once from the ``method`` config group plus the trial's knobs),
its knob columns, its data-dependent limits and checks, its head-mode fit and its
full-mode plan. Generic code (the sweep, the trial, the training loops, the results) only
ever talks to a recipe through this class, so adding a method or a knob touches the
method's recipe, its YAML and a test, and no generic module.

A :class:`BaseRecipe` is a recipe whose product is one linear classifier per seed (cRT,
LWS, τ-norm, ...): it is swept like any method, and it is what a sweep's reference and a
post-hoc method's base are made of (:class:`ReferenceRecipe`: a recipe and its params).
"""

from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from explore.classifier import LinearClassifier
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import DataFacts, TrialInputs, splits_of
from explore.training.outcome import Fit, SeedResult

if TYPE_CHECKING:  # torch is imported where a recipe trains, not to declare one
    import torch

    from explore.training.full import FullPlan, FullSetup

__all__ = ["NO_NAMES", "BaseRecipe", "P", "Recipe", "RecipeError", "ReferenceRecipe", "Splits",
           "cpu_unless", "evaluate_classifier", "evaluate_classifiers"]

Splits = dict[str, tuple[np.ndarray, np.ndarray]]
"""Split name → (features N×d, labels N)."""

P = TypeVar("P")

MAX_MAGNITUDE = 1e6
"""No number a method takes is larger in magnitude (or not finite): the maths runs in
float32, where e.g. β = 1e308 makes every margin infinite and every trial fail."""


class RecipeError(ValueError):
    """Parameters that do not fit the method or the data; the message names the knob."""


NO_NAMES = ("{what} needs the classes' names, and these features have only numbers: add "
            "classes.txt (one name per line, in label order) beside the features")
"""The refusal of a method that reads the class names' text (format ``what``)."""


def cpu_unless(device: torch.device | None) -> torch.device:
    """``device``, or the CPU when None: the recipes' default device (a default argument
    of ``torch.device("cpu")`` would import torch with the recipe)."""
    import torch

    return torch.device("cpu") if device is None else device


class Recipe(Generic[P]):
    """Base class of the method recipes. Subclasses set the class attributes and
    implement :meth:`fit_head` (and :meth:`full_plan` when the method has a full mode)."""

    name: ClassVar[str]
    params_type: ClassVar[type]
    """A frozen dataclass whose ``__post_init__`` validates what needs no data."""
    knobs: ClassVar[tuple[str, ...]]
    """The params fields that become result columns (named exactly so)."""
    posthoc: ClassVar[bool] = False
    """Corrects a base model's classifier (its trials need the base model's logits)."""

    def params(self, settings: Mapping[str, Any]) -> P:
        """Typed params from config values; one error line for unknown keys or bad values."""
        allowed = {f.name for f in dataclasses.fields(self.params_type)}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise RecipeError(f"{self.name}: unknown parameter(s) {unknown}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        for key, value in settings.items():
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and not abs(value) <= MAX_MAGNITUDE):
                raise RecipeError(f"{self.name}: {key}={value!r} must be a finite number of "
                                  f"magnitude <= {MAX_MAGNITUDE:g}")
        try:
            return typing.cast(P, self.params_type(**settings))
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{self.name}: {exc}") from None

    def own_reference(self, params: P) -> ReferenceRecipe | None:
        """The method's own reference, when it defines one (e.g. LFM: the same cosine
        classifier trained with plain CE); None: the ``base`` group's recipe is the
        reference. Either way the reference trains on the sweep's seeds."""
        return None

    def limits(self, facts: DataFacts) -> dict[str, int]:
        """Data-dependent upper limits of integer knobs; sweep ranges are capped to them."""
        return {}

    def check(self, params: P, facts: DataFacts) -> None:
        """Raise :class:`RecipeError` when params do not fit the data (before any trial)."""

    def columns(self, params: P) -> dict[str, Any]:
        """The knob columns of this method's result rows."""
        return {name: getattr(params, name) for name in self.knobs}

    def fit_head(self, inputs: TrialInputs, params: P, seeds: Sequence[int]) -> Fit:
        """Train every seed on cached features (head mode)."""
        raise NotImplementedError

    @property
    def has_full_mode(self) -> bool:
        return type(self).full_plan is not Recipe.full_plan

    def full_plan(self, params: P, setup: FullSetup, seed: int) -> FullPlan:
        """One seed's backbone training with this method (full mode)."""
        from explore.training.full import FullModeError

        raise FullModeError(f"mode=full is not available for {self.name} (it needs no backbone "
                            "training); use mode=head")


@dataclass(frozen=True)
class ReferenceRecipe:
    """A recipe with its params, as the reference rows (or a post-hoc method's base) run it."""

    name: str
    """The reference rows' method name (``ce``, ``crt``, ``cosine_ce``, ...)."""
    recipe: Recipe[Any]
    params: Any


class BaseRecipe(Recipe[P]):
    """A recipe whose product is one linear classifier per seed. Subclasses implement
    :meth:`train_classifiers` (all seeds at once, so they can train stacked); head mode
    trains and evaluates them, and any base can be a sweep's reference (``base=``) or the
    classifier a post-hoc method corrects."""

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: P, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        """Each seed's classifier, trained on ``device`` (None: the CPU) with the ``head``
        settings."""
        raise NotImplementedError

    def train_classifier(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                         params: P, seed: int) -> LinearClassifier:
        """One seed's classifier (on the CPU)."""
        return self.train_classifiers(splits, num_classes, head, params, [seed])[0]

    def fit_head(self, inputs: TrialInputs, params: P, seeds: Sequence[int]) -> Fit:
        start = time.perf_counter()
        splits, num_classes = splits_of(inputs.features), inputs.features.num_classes
        classifiers = self.train_classifiers(splits, num_classes, inputs.head, params, seeds,
                                             inputs.device)
        seconds = (time.perf_counter() - start) / max(len(seeds), 1)
        results = evaluate_classifiers(classifiers, inputs.features, inputs.thresholds, seeds,
                                       inputs.device)
        for result in results:
            result.train_seconds = seconds
        return Fit(results)


def evaluate_classifier(classifier: LinearClassifier, fset: FeatureSet,
                        thresholds: SplitThresholds, seed: int) -> SeedResult:
    """Test (and validation) metrics of a linear classifier; ``best_epoch`` 0: the
    classifier's own training chose its epoch."""
    return evaluate_classifiers([classifier], fset, thresholds, [seed])[0]


def evaluate_classifiers(classifiers: Sequence[LinearClassifier], fset: FeatureSet,
                         thresholds: SplitThresholds, seeds: Sequence[int],
                         device: torch.device | None = None) -> list[SeedResult]:
    """:func:`evaluate_classifier` of each seed's classifier, the logits computed on
    ``device`` (None: the CPU), where the test and validation features go once."""
    import torch

    from explore.evaluation import evaluate_logits
    from explore.training.head import on_device
    from explore.training.tensors import to_device

    device = cpu_unless(device)
    counts = np.bincount(fset.train.labels, minlength=fset.num_classes)
    split_of_class = thresholds.split_of_class(counts)
    names = ["test"] + (["val"] if "val" in fset.splits and len(fset.val.labels) else [])
    rows = {name: on_device((fset.splits[name].features, fset.splits[name].labels), device)
            for name in names}
    results = []
    for classifier, seed in zip(classifiers, seeds, strict=True):
        weight = to_device(classifier.weight, device)
        bias = to_device(classifier.bias, device)
        metrics = {name: evaluate_logits(torch.addmm(bias, x, weight.T), y, split_of_class)
                   for name, (x, y) in rows.items()}
        results.append(SeedResult(seed=seed, best_epoch=0, test=metrics["test"],
                                  val=metrics.get("val", {})))
    return results
