"""The methods a sweep can run: name → params dataclass + how to train it.

Every entry trains all seeds of one configuration and returns one ``SeedResult``
per seed; ``tests/test_head_methods.py::test_registry_matches_search_spaces`` checks
this table against ``search_spaces/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from explore.methods.alphanet import AlphaNetParams
from explore.results.schema import KNOB_COLUMNS
from explore.splits import SplitThresholds
from explore.store.feature_store import FeatureSet
from explore.training.alphanet_fit import fit_alphanet
from explore.training.lfm_fit import LFMHeadParams, fit_lfm, require_text_encoder
from explore.training.ns_fit import NSHeadParams, fit_neighbor_silencing
from explore.training.outcome import SeedResult
from explore.training.posthoc import PosthocInputs
from explore.training.swrm_fit import (
    DySWRMHeadParams,
    SWRMHeadParams,
    check_window,
    fit_dyswrm,
    fit_swrm,
)


@dataclass(frozen=True)
class DataFacts:
    """What knob validation needs to know about the data."""

    num_classes: int
    counts: np.ndarray
    thresholds: SplitThresholds
    aux_classes: tuple[str, ...] = ()
    """Classes of the auxiliary pool (the feature split ``aux``), if the data has one."""

    @property
    def num_base_classes(self) -> int:
        return int((~self.thresholds.few_mask(self.counts)).sum())


@dataclass(frozen=True)
class TrialInputs:
    features: FeatureSet
    posthoc: PosthocInputs | None
    thresholds: SplitThresholds


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: type
    run: Callable[[TrialInputs, Any, list[int]], list[SeedResult]]
    posthoc: bool = False
    """Corrects a base model's classifier (needs ``base``)."""
    check: Callable[[Any, DataFacts], None] = lambda params, facts: None
    """Raises ValueError when params do not fit the data (e.g. k > base classes)."""
    limits: Callable[[DataFacts], dict[str, int]] = lambda facts: {}
    """Data-dependent upper limits of integer knobs; sweep ranges are capped to them."""

    def make_params(self, settings: dict[str, Any]) -> Any:
        allowed = {f.name for f in dataclasses.fields(self.params)}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
            )
        return self.params(**settings)

    @property
    def knobs(self) -> tuple[str, ...]:
        """The result-schema knob columns this method has."""
        names = {f.name for f in dataclasses.fields(self.params)}
        return tuple(k for k in KNOB_COLUMNS if k in names)


def _run_alphanet(inputs: TrialInputs, params: AlphaNetParams, seeds: list[int]) -> list[SeedResult]:
    assert inputs.posthoc is not None
    return fit_alphanet(inputs.posthoc, params, seeds)


def _check_neighbor_silencing(params: NSHeadParams, facts: DataFacts) -> None:
    if not facts.aux_classes:
        raise ValueError(
            "neighbor_silencing needs an auxiliary pool and this data has none: use "
            "dataset=fashion_mnist_lt_open, or features= with aux.npz and aux_classes.txt"
        )
    if params.neighbor_map is None and params.neighbor_source == "text":
        require_text_encoder("neighbor_silencing with neighbor_source=text")


def _check_lfm(params: LFMHeadParams, facts: DataFacts) -> None:
    if facts.num_classes < 2:
        raise ValueError("lfm needs at least 2 classes to pair")
    require_text_encoder("lfm")


METHODS: dict[str, MethodSpec] = {
    "alphanet": MethodSpec(
        "alphanet",
        AlphaNetParams,
        _run_alphanet,
        posthoc=True,
        check=lambda p, facts: p.check_against(facts.num_base_classes),
        limits=lambda facts: {"k": facts.num_base_classes},
    ),
    "swrm": MethodSpec(
        "swrm",
        SWRMHeadParams,
        fit_swrm,
        check=lambda p, facts: check_window(p, facts.num_classes),
        limits=lambda facts: {"W": facts.num_classes},
    ),
    "dyswrm": MethodSpec(
        "dyswrm",
        DySWRMHeadParams,
        fit_dyswrm,
        check=lambda p, facts: check_window(p, facts.num_classes),
        limits=lambda facts: {"W": facts.num_classes},
    ),
    "neighbor_silencing": MethodSpec(
        "neighbor_silencing",
        NSHeadParams,
        fit_neighbor_silencing,
        check=_check_neighbor_silencing,
    ),
    "lfm": MethodSpec(
        "lfm",
        LFMHeadParams,
        fit_lfm,
        check=_check_lfm,
    ),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
