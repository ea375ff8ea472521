"""Sweep configuration: Hydra composes ``search_spaces/NAME.yaml``; this module turns
the result into typed, validated dataclasses. Config flows one way, from here to code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from explore.splits import SplitThresholds

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
"""The Hydra config root (must be absolute for ``initialize_config_dir``)."""


class ConfigError(ValueError):
    """A configuration the user must fix; the message says what to change."""


def list_spaces(spaces_dir: Path = SPACES_DIR) -> list[str]:
    """Search-space names: the top-level YAML files (``_``-prefixed ones are shared parts)."""
    return sorted(p.stem for p in spaces_dir.glob("*.yaml") if not p.stem.startswith("_"))


def compose(name: str, overrides: list[str], spaces_dir: Path = SPACES_DIR) -> DictConfig:
    """Compose ``search_spaces/<name>.yaml`` with Hydra overrides (``key=value``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    known = list_spaces(spaces_dir)
    if name not in known:
        raise ConfigError(f"unknown search space {name!r}; known spaces: {', '.join(known)}")
    try:
        with initialize_config_dir(config_dir=str(spaces_dir), version_base="1.3", job_name="explore"):
            return hydra_compose(config_name=name, overrides=list(overrides))
    except HydraException as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ConfigError(f"bad override for {name}: {first_line}") from None


@dataclass(frozen=True)
class KnobSpace:
    """The range of one swept knob. ``type`` is int | float | categorical | fixed."""

    name: str
    type: Literal["int", "float", "categorical", "fixed"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None

    def __post_init__(self) -> None:
        if self.type in ("int", "float"):
            if self.low is None or self.high is None or self.low > self.high:
                raise ConfigError(f"space.{self.name}: needs low <= high, got low={self.low} high={self.high}")
            if self.log and self.low <= 0:
                raise ConfigError(f"space.{self.name}: a log range needs low > 0")
        elif self.type == "categorical":
            if not self.choices:
                raise ConfigError(f"space.{self.name}: categorical needs a non-empty choices list")
        elif self.type != "fixed":
            raise ConfigError(f"space.{self.name}: type must be int, float, categorical or fixed, not {self.type!r}")

    @classmethod
    def parse(cls, name: str, spec: Any) -> KnobSpace:
        if not isinstance(spec, dict):  # a bare value pins the knob
            return cls(name, "fixed", value=spec)
        spec = dict(spec)
        if "choices" in spec:
            spec["choices"] = tuple(spec["choices"])
        unknown = set(spec) - {"type", "low", "high", "log", "choices", "value"}
        if unknown:
            raise ConfigError(f"space.{name}: unknown field(s) {sorted(unknown)}")
        kind = spec.pop("type", "categorical" if "choices" in spec else "fixed")
        return cls(name, kind, **spec)

    def values(self) -> list[Any]:
        """Every value, for grid search (int ranges and categorical/fixed only)."""
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1))
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "fixed":
            return [self.value]
        raise ConfigError(f"space.{self.name}: a float range cannot be searched by grid; use choices")

    def bounds(self) -> list[Any]:
        """The extreme values, for validating a knob's whole range before the sweep."""
        if self.type in ("int", "float"):
            cast = int if self.type == "int" else float
            return [cast(self.low), cast(self.high)]
        return self.values()


@dataclass(frozen=True)
class SearchConfig:
    metric: str = "val_acc_overall"
    """Optimised metric: the mean over seeds of a validation metric (never test)."""
    mode: Literal["max", "min"] = "max"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    n_startup_trials: int = 6
    max_concurrent_trials: int = 2


@dataclass(frozen=True)
class RunnerConfig:
    head_placement: Literal["in_trial", "ray_train"] = "in_trial"
    """Where head trials on cached features train: inside the Tune trial (default:
    no Train start-up cost) or as a Ray Train job (one worker)."""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    """Fractional GPUs let several small head trials share one GPU."""
    max_failures: int = 2
    """A trial that fails (worker lost, node preempted) is retried this many times."""


@dataclass(frozen=True)
class SweepConfig:
    space_name: str
    storage_uri: str
    features: str | None
    resume: str | None
    mode: Literal["head", "full"]
    num_samples: int
    repeats: int
    seed: int
    search: SearchConfig
    runner: RunnerConfig
    splits: SplitThresholds
    dataset: dict[str, Any]
    backbone: dict[str, Any]
    base: dict[str, Any]
    method: dict[str, Any]
    space: dict[str, KnobSpace] = field(default_factory=dict)
    full: dict[str, Any] = field(default_factory=dict)
    """mode=full settings (``explore.training.full.FullModeConfig``)."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"num_samples={self.num_samples} must be >= 1")
        if self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats} must be >= 1")
        if self.mode not in ("head", "full"):
            raise ConfigError(f"mode={self.mode!r} must be 'head' or 'full'")

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    @property
    def seeds(self) -> list[int]:
        """The same seeds for every configuration, so configurations compare paired."""
        return [self.seed + r for r in range(self.repeats)]

    def method_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.method.items() if k != "name"}


def _absolute(uri: str | None) -> str | None:
    """Local paths become absolute here: Ray workers run in other working directories."""
    if uri is None or "://" in uri:
        return uri
    import os

    return os.path.abspath(os.path.expanduser(uri))


def _typed(cls: type, values: dict[str, Any], where: str) -> Any:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    return cls(**values)


def sweep_config(cfg: DictConfig, space_name: str) -> SweepConfig:
    """Typed view of a composed config (interpolations resolved)."""
    raw: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    space = {name: KnobSpace.parse(name, spec) for name, spec in (raw.get("space") or {}).items()}
    return SweepConfig(
        space_name=space_name,
        storage_uri=str(_absolute(str(raw["storage_uri"]))),
        features=_absolute(raw.get("features")),
        resume=raw.get("resume") if "/" not in str(raw.get("resume") or "") else _absolute(raw["resume"]),
        mode=raw.get("mode", "head"),
        num_samples=int(raw["num_samples"]),
        repeats=int(raw["repeats"]),
        seed=int(raw.get("seed", 0)),
        search=_typed(SearchConfig, raw.get("search") or {}, "search"),
        runner=_typed(RunnerConfig, raw.get("runner") or {}, "runner"),
        splits=_typed(SplitThresholds, raw.get("splits") or {}, "splits"),
        dataset=dict(raw["dataset"]),
        backbone=dict(raw["backbone"]),
        base=dict(raw["base"]),
        method=dict(raw["method"]),
        space=space,
        full=dict(raw.get("full") or {}),
    )


def load(argv: list[str]) -> SweepConfig:
    """``argv = [space_name, *overrides]`` → validated SweepConfig."""
    if not argv:
        raise ConfigError("name a search space, e.g. `python -m explore.sweep alphanet_k` (--list shows them)")
    name, overrides = argv[0], argv[1:]
    return sweep_config(compose(name, overrides), name)
