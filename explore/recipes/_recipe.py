"""The protocol every method recipe implements (one module per method in this package).

A recipe holds everything specific to its method: the typed, validated trial parameters
(a frozen dataclass built once from the ``method`` config group plus the trial's knobs),
its knob columns, its data-dependent limits and checks, its head-mode fit and its
full-mode plan. Generic code (the sweep, the trial, the training loops, the results) only
ever talks to a recipe through this class, so adding a method or a knob touches the
method's recipe, its YAML and a test, and no generic module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from explore.training.full import FullModeError, FullPlan, FullSetup
from explore.training.inputs import DataFacts, TrialInputs
from explore.training.outcome import Fit

__all__ = ["P", "Recipe", "RecipeError"]

P = TypeVar("P")

MAX_MAGNITUDE = 1e6
"""No number a method takes is larger in magnitude (or not finite): the maths runs in
float32, where e.g. β = 1e308 makes every margin infinite and every trial fail."""


class RecipeError(ValueError):
    """Parameters that do not fit the method or the data; the message names the knob."""


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
            return self.params_type(**settings)  # type: ignore[no-any-return, unused-ignore]
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{self.name}: {exc}") from None

    reference_name: ClassVar[str | None] = None
    """Set when the method defines its own reference (e.g. LFM: the same cosine classifier
    trained with plain CE): its rows are then trained by :meth:`reference_params` on the
    sweep's seeds, instead of by the ``base`` group's model."""

    def reference_params(self, params: P) -> P:
        """The params of this method's own reference (see :attr:`reference_name`)."""
        raise NotImplementedError

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
        raise FullModeError(f"mode=full is not available for {self.name} (it needs no backbone "
                            "training); use mode=head")
