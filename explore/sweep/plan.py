"""One sweep plan: what a sweep will run, checked before any trial, that ``dry_run=true``
prints and a run executes.

The data facts come from reading only (:func:`explore.pipeline.plan`, a dry run) or from
the prepared, cached inputs (:func:`explore.pipeline.prepare`, a run); everything else —
the method's mode, the checked space, the validation split the objective needs, the
number of configurations, where trials go — is decided here, once.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from explore.config import ConfigError, KnobSpace, SweepConfig
from explore.recipes import RECIPES, Recipe, RecipeError
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.store import uri as storage
from explore.sweep import scheduling, search
from explore.training.inputs import DataFacts

__all__ = ["DataSummary", "SweepPlan", "check_mode", "checked_space", "plan_sweep"]

log = logging.getLogger("explore")


@dataclass(frozen=True)
class DataSummary:
    """What the plan needs to know of the data, read or prepared."""

    dataset_name: str
    facts: DataFacts
    has_val: bool
    reference: str
    samples: dict[str, int] = dataclasses.field(default_factory=dict)
    """Samples per split (a dry run reports them)."""
    steps: tuple[tuple[str, bool, str], ...] = ()
    """(step, cached, what) before the first trial (a dry run reports them)."""


@dataclass(frozen=True)
class SweepPlan:
    cfg: SweepConfig
    recipe: Recipe
    layout: SweepLayout
    resuming: bool
    data: DataSummary
    space: dict[str, KnobSpace]
    num_samples: int
    """Configurations the whole sweep has (a resume counts the finished ones in)."""
    finite: int | None
    """Configurations the space has, when no knob is continuous."""
    finished: int
    """Trials an earlier run of this sweep finished (kept, never rerun)."""

    @property
    def searched(self) -> bool:
        """Some knob is swept (else Tune runs the one configuration, with no searcher)."""
        return any(knob.type != "fixed" for knob in self.space.values())

    @property
    def to_run(self) -> int:
        """Configurations left to run; a space smaller than ``num_samples`` runs once each."""
        total = self.num_samples if self.finite is None else min(self.num_samples, self.finite)
        return max(total - self.finished, 0)

    def render(self) -> str:
        """The dry run's report."""
        cfg, facts, layout = self.cfg, self.data.facts, self.layout
        lines = [f"dry run of {cfg.space_name}: nothing is trained or written", "",
                 f"  storage    {_storage_note(layout.storage_uri)}",
                 f"  data       {self.data.dataset_name}: {facts.num_classes} classes ("
                 f"{facts.num_base_classes} with >= {cfg.splits.few_below} training samples), "
                 + ", ".join(f"{n} {k}" for k, n in self.data.samples.items()),
                 f"  method     {self.recipe.name} (mode={cfg.mode}), against the reference "
                 f"{self.data.reference}",
                 "  knobs      " + "; ".join(f"{n} {_range(k)}" for n, k in self.space.items())]
        search_line = (f"{cfg.search.sampler}, objective {cfg.search.objective} "
                       f"({', '.join(cfg.search.metrics)})" if self.searched
                       else "none (every knob pinned)")
        lines.append(f"  search     {search_line}")
        size = (f" (the space has {self.finite})"
                if self.finite is not None and self.finite < self.num_samples else "")
        lines.append(f"  trials     {self.to_run} configuration(s){size} × {cfg.repeats} seeds "
                     f"({', '.join(map(str, cfg.seeds))}) = {self.to_run * cfg.repeats} runs"
                     + (f"; resuming {layout.sweep_id}: {self.finished} finished trial(s) kept"
                        if self.resuming else ""))
        lines.append(f"  placement  {scheduling.placement_summary(cfg)}")
        lines.append("  before the first trial (each step cached in the store):")
        for step, cached, what in self.data.steps:
            lines.append(f"    {step:<10} {'cached   ' if cached else 'would run'}  {what}")
        lines.append(f"  results    {layout.results}"
                     + ("" if self.resuming else " (a new sweep id each run)"))
        return "\n".join(lines)


def plan_sweep(cfg: SweepConfig, recipe: Recipe, layout: SweepLayout, resuming: bool,
               data: DataSummary) -> SweepPlan:
    check_mode(cfg, recipe)
    space = checked_space(cfg, recipe, data.facts)
    if cfg.search.metric.startswith("val_") and not data.has_val:
        raise ConfigError(
            f"search.metric={cfg.search.metric} needs a validation split, and this data has "
            "none: set dataset.val_per_class (and lower dataset.n_max) or give features with "
            "val.npz")
    finished = len(writer.finished_trials(layout)) if resuming else 0
    return SweepPlan(cfg, recipe, layout, resuming, data, space, _count(cfg, space),
                     _finite_size(space), finished)


def check_mode(cfg: SweepConfig, recipe: Recipe) -> None:
    """mode=full: the method has a full mode and the data are images."""
    if cfg.mode != "full":
        return
    if cfg.features:
        raise ConfigError("mode=full trains the backbone on images: drop features= and give a dataset")
    if not recipe.has_full_mode:
        with_full = ", ".join(sorted(name for name, r in RECIPES.items() if r.has_full_mode))
        raise ConfigError(f"mode=full is not available for {recipe.name} (full mode covers "
                          f"{with_full}); use mode=head")
    if cfg.backbone.use_gpu and cfg.runner.gpus_per_worker == 0:
        raise ConfigError("runner.gpus_per_worker=0 gives the Train workers no GPU, but "
                          "backbone.use_gpu=true: raise it (e.g. 1 or 0.5) or set "
                          "backbone.use_gpu=false")


def checked_space(cfg: SweepConfig, recipe: Recipe, facts: DataFacts) -> dict[str, KnobSpace]:
    """Every knob must be a parameter of the method and valid at both ends of its range,
    before any trial runs. A range reaching past a data-dependent limit (k above the number
    of base classes, W above the number of classes) is capped, with a note; a fixed value
    past it is an error."""
    params0 = recipe.params(cfg.method_settings)
    limits = recipe.limits(facts)
    fields = {f.name for f in dataclasses.fields(recipe.params_type)}
    out = {}
    for name, knob in cfg.space.items():
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f" (did you mean space.{close[0]}?)" if close else ""
            raise ConfigError(f"space.{name} is not a parameter of method {recipe.name}{hint}")
        if knob.type == "int" and name in limits and knob.range()[1] > limits[name] >= knob.range()[0]:
            log.warning("space.%s: range %g..%g capped at %d for this dataset", name, knob.low,
                        knob.high, limits[name])
            knob = dataclasses.replace(knob, high=limits[name])
        for value in knob.bounds():
            try:
                recipe.check(recipe.params({**cfg.method_settings, name: value}), facts)
            except ValueError as exc:
                raise ConfigError(f"space.{name}={value!r}: {exc}") from None
        out[name] = knob
    try:
        recipe.check(params0, facts)
    except RecipeError as exc:
        raise ConfigError(str(exc)) from None
    return out


def _count(cfg: SweepConfig, space: dict[str, KnobSpace]) -> int:
    if all(knob.type == "fixed" for knob in space.values()):
        log.info("every knob is fixed: one configuration")
        return 1
    if cfg.search.sampler == "grid":
        size = search.grid_size(space)
        log.info("grid search: %d configurations", size)
        return size
    return cfg.num_samples


def _finite_size(space: dict[str, KnobSpace]) -> int | None:
    """How many configurations a space without a continuous knob has (None: unbounded)."""
    values = search.space_values(space)
    return None if values is None else math.prod(len(v) for v in values.values())


def _range(knob: KnobSpace) -> str:
    if knob.type in ("int", "float"):
        low, high = knob.range()
        return f"{knob.type} {low:g}..{high:g}" + (" (log)" if knob.log else "")
    if knob.type == "categorical":
        return " | ".join(str(c) for c in knob.choices)
    return f"= {knob.value} (pinned)"


def _storage_note(uri: str) -> str:
    """Reachable (the store's own check ran already); locally: writable, or creatable."""
    if storage.is_s3(uri):
        return f"{uri}: bucket reachable"
    path = Path(storage.resolve(uri)[1])
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise storage.StorageError(f"storage_uri {uri}: {existing} is not writable")
    return f"{path}: " + ("exists, writable" if path.exists() else
                          f"would be created (under {existing}, writable)")
