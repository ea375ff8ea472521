"""Sweep configuration: Hydra composes ``search_spaces/NAME.yaml``; this module turns
the result into typed, validated dataclasses. Config flows one way, from here to code.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from explore.backbone.train_config import BackboneTrainConfig
from explore.data.registry import DatasetConfig
from explore.recipes.bases import BaseSpec
from explore.splits import SplitThresholds
from explore.training.head_config import HeadTrainConfig

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
"""The Hydra config root (must be absolute for ``initialize_config_dir``)."""


class ConfigError(ValueError):
    """A configuration the user must fix; the message says what to change."""


def list_spaces(spaces_dir: Path = SPACES_DIR) -> list[str]:
    """Search-space names: the top-level YAML files (``_``-prefixed ones are shared parts)."""
    return sorted(p.stem for p in spaces_dir.glob("*.yaml") if not p.stem.startswith("_"))


SWITCHES = ("dry_run", "verbose", "resume_force_unlock")
"""Top-level flags of one command, not of the sweep: accepted whether or not a space's
YAML declares them, never stored with the sweep."""


def compose(name: str, overrides: list[str], spaces_dir: Path = SPACES_DIR) -> DictConfig:
    """Compose ``search_spaces/<name>.yaml`` with Hydra overrides (``key=value``). A bad
    override is a one-line ``ConfigError`` naming the closest valid key or option."""
    from hydra.errors import HydraException

    known = list_spaces(spaces_dir)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown search space {name!r}{hint}; known spaces: {', '.join(known)}")
    overrides = [_switch(o) for o in overrides]
    try:
        return _hydra_compose(name, overrides, spaces_dir)
    except HydraException as exc:
        first_line = str(exc).strip().splitlines()[0]
        named = _override_hint(name, overrides, spaces_dir)
        raise ConfigError(f"bad override for {name}: {named or first_line}") from None


def _hydra_compose(name: str, overrides: list[str], spaces_dir: Path) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(spaces_dir), version_base="1.3", job_name="explore"):
        return hydra_compose(config_name=name, overrides=list(overrides))


def _switch(override: str) -> str:
    """``dry_run=true`` works without the key in the YAML (Hydra's ``++``: add or set)."""
    key = override.partition("=")[0]
    return f"++{override}" if key in SWITCHES and "=" in override else override


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a plain config, inner nodes included."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            out.append(path)
            out += _flat_keys(value, path + ".")
    return out


def _override_hint(name: str, overrides: list[str], spaces_dir: Path) -> str | None:
    """The first override Hydra cannot apply, said in one line with the closest valid key
    (or config-group option); None when no override is to blame."""
    from hydra.errors import HydraException

    try:
        plain = OmegaConf.to_container(_hydra_compose(name, [], spaces_dir), resolve=False)
    except HydraException:
        return None
    keys = _flat_keys(plain)
    groups = sorted(p.name for p in spaces_dir.iterdir() if p.is_dir())
    for override in overrides:
        if "=" not in override:
            return (f"{override!r} is not an override: write key=value, e.g. num_samples=20 "
                    f"(python -m explore.sweep {name} --help lists the keys)")
        key, _, value = override.partition("=")
        if key.startswith("+"):
            continue  # an addition: the typed config checks it
        key = key.lstrip("~")
        if key in groups:
            options = sorted(p.stem for p in (spaces_dir / key).glob("*.yaml"))
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                hint = f" (did you mean {key}={close[0]}?)" if close else ""
                return f"no {key} {value!r}{hint}; options: {', '.join(options)}"
            continue
        if key in keys:
            continue
        if key.startswith("space."):
            return (f"{key} is not a knob of {name} (its knobs: "
                    f"{', '.join(k for k in keys if k.count('.') == 1 and k.startswith('space.'))}"
                    f"); add a knob with +{override}")
        tail = key.rsplit(".", 1)[-1]  # the right name in the wrong place: epochs → backbone.epochs
        close = [k for k in keys if k != key and k.rsplit(".", 1)[-1] == tail][:3]
        close = close or difflib.get_close_matches(key, keys, n=1)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"no key {key!r}{hint}"
    return None


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
            low, high = self.range()
            return list(range(int(low), int(high) + 1))
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "fixed":
            return [self.value]
        raise ConfigError(f"space.{self.name}: a float range cannot be searched by grid; use choices")

    def bounds(self) -> list[Any]:
        """The extreme values, for validating a knob's whole range before the sweep."""
        if self.type in ("int", "float"):
            cast = int if self.type == "int" else float
            return [cast(bound) for bound in self.range()]
        return self.values()

    def range(self) -> tuple[float, float]:
        """(low, high) of an int or float knob."""
        if self.low is None or self.high is None:
            raise ConfigError(f"space.{self.name}: a {self.type} knob has no range")
        return float(self.low), float(self.high)


@dataclass(frozen=True)
class SearchConfig:
    objective: Literal["val_overall", "val_few", "few_within", "pareto"] = "val_overall"
    """What the search optimises — means over seeds on the balanced validation split, never
    test: val_overall, val_few, few_within (val few subject to val overall >= the
    reference's minus ``tolerance`` points: Optuna's constraints) or pareto (few and overall
    as two objectives: Optuna's multi-objective sampling)."""
    tolerance: float = 1.0
    """few_within: how many points of validation overall a configuration may lose."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    n_startup_trials: int = 6
    max_concurrent_trials: int = 2
    scheduler: Literal["fifo", "asha"] = "fifo"
    """fifo: every trial trains to its end. asha: Ray Tune's ASHA stops trials whose
    per-epoch validation top-1 trails at a rung (needs objective=val_overall)."""
    grace_period: int = 5
    """asha: epochs (counted over a trial's seeds, which train in turn) before a trial can
    be stopped; the first rung."""
    reduction_factor: float = 3.0
    """asha: 1/reduction_factor of the trials at a rung go on to the next; rungs are
    grace_period · reduction_factor^k epochs."""

    def __post_init__(self) -> None:
        _choice("search.objective", self.objective,
                ("val_overall", "val_few", "few_within", "pareto"))
        _choice("search.sampler", self.sampler, ("tpe", "random", "grid"))
        _choice("search.scheduler", self.scheduler, ("fifo", "asha"))
        _count("search.grace_period", self.grace_period, 1)
        if not (isinstance(self.reduction_factor, (int, float)) and self.reduction_factor > 1):
            raise ConfigError(f"search.reduction_factor={self.reduction_factor!r} must be a number > 1")
        if self.scheduler == "asha" and self.objective != "val_overall":
            raise ConfigError(
                f"search.scheduler=asha compares trials on each epoch's validation top-1, so it "
                f"needs search.objective=val_overall (got {self.objective})")
        _count("search.n_startup_trials", self.n_startup_trials, 0)
        _count("search.max_concurrent_trials", self.max_concurrent_trials, 1)
        if not 0 < self.tolerance < 100:
            raise ConfigError(f"search.tolerance={self.tolerance!r} must be in (0, 100) points")

    @property
    def metrics(self) -> list[str]:
        """The result metrics the search optimises (all maximised)."""
        if self.objective == "pareto":
            return ["val_acc_few", "val_acc_overall"]
        return ["val_acc_overall" if self.objective == "val_overall" else "val_acc_few"]

    @property
    def metric(self) -> str:
        """The first (for progress and Tune's bookkeeping)."""
        return self.metrics[0]

    @property
    def mode(self) -> Literal["max", "min"]:
        return "max"


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
    gpus_per_worker: float | None = None
    """GPUs each Ray Train worker of ``mode=full`` requests (fractional allowed); None: 1
    when ``backbone.use_gpu`` else 0 (:meth:`worker_gpus`)."""
    trial_runner: Literal["auto", "workers", "tune"] = "auto"
    """Who runs the trials. workers: warm trial workers (Ray actors that keep the inputs
    they loaded) fed by the Optuna searcher in the driver, no Tune run; tune: one Ray Tune
    run, which ASHA, ``mode=full`` and ``head_placement=ray_train`` need; auto: workers
    where they can run the sweep, else tune."""
    worker_idle_s: float = 600.0
    """On a running cluster (``RAY_ADDRESS``), warm trial workers outlive the sweep and
    stay up this many seconds after their last trial, holding their CPU/GPU, so that the
    next sweep on the same code starts no process and reloads nothing; 0: they end with
    the sweep. (A sweep that starts its own cluster ends its workers with it.)"""

    def __post_init__(self) -> None:
        _choice("runner.head_placement", self.head_placement, ("in_trial", "ray_train"))
        _choice("runner.trial_runner", self.trial_runner, ("auto", "workers", "tune"))
        if not self.worker_idle_s >= 0 or math.isinf(self.worker_idle_s):
            raise ConfigError(f"runner.worker_idle_s={self.worker_idle_s!r} must be a number of "
                              "seconds >= 0")
        if not self.cpus_per_trial > 0 or self.gpus_per_trial < 0:
            raise ConfigError("runner: cpus_per_trial must be > 0 and gpus_per_trial >= 0")
        _count("runner.max_failures", self.max_failures, -1)
        g = self.gpus_per_worker
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float))
                              or not g >= 0 or math.isinf(g)):
            raise ConfigError(f"runner.gpus_per_worker={g!r} must be a number >= 0 (fractional "
                              "allowed) or null (1 with backbone.use_gpu, else 0)")

    def worker_gpus(self, use_gpu: bool) -> float:
        """GPUs per full-mode Train worker: ``gpus_per_worker``, or 1 with ``use_gpu`` else 0."""
        if self.gpus_per_worker is None:
            return 1.0 if use_gpu else 0.0
        return float(self.gpus_per_worker)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}{hint}")


def _count(name: str, value: Any, minimum: int) -> int:
    """An integer setting: ``2.5`` or ``"3"`` is an error, never silently truncated."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


MAX_SEED = 2**32 - 1
"""The largest seed every consumer takes (scikit-learn's t-SNE ``random_state``)."""

TOP_LEVEL = ("storage_uri", "features", "resume", "mode", "num_samples", "repeats", "seed",
             "splits", "search", "runner", "head", "dataset", "backbone", "base", "method",
             "space", "dry_run", "verbose", "resume_force_unlock")
"""Every key a composed config may hold; anything else (e.g. ``+num_sample=3``) is a typo."""


@dataclass(frozen=True)
class SweepConfig:
    """A sweep's whole configuration, every group typed and checked once, here."""

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
    head: HeadTrainConfig
    """How every head on cached features trains (method heads and base/reference models)."""
    dataset: DatasetConfig | None
    """None when ``features=`` replaces dataset and backbone."""
    backbone: BackboneTrainConfig
    base: BaseSpec
    method: str
    method_settings: dict[str, Any]
    """The ``method`` group without its name; the recipe validated them (see :func:`sweep_config`)."""
    space: dict[str, KnobSpace] = field(default_factory=dict)
    dry_run: bool = False
    """Check everything, print what would run and what is cached, train and write nothing."""
    verbose: bool = False
    """Show Ray's, Tune's and Optuna's own output (banners, hints, worker logs)."""
    resume_force_unlock: bool = False
    """Break the sweep's ``resume.lock`` whatever its state (its owner is known gone)."""

    def __post_init__(self) -> None:
        for name in SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        _count("num_samples", self.num_samples, 1)
        _count("repeats", self.repeats, 1)
        _count("seed", self.seed, 0)
        _choice("mode", self.mode, ("head", "full"))
        if self.seeds[-1] > MAX_SEED:
            raise ConfigError(
                f"seed={self.seed} repeats={self.repeats}: the seeds run to {self.seeds[-1]}, past "
                f"{MAX_SEED} (2**32 - 1), the largest seed numpy and scikit-learn accept; lower seed")

    @property
    def seeds(self) -> list[int]:
        """The same seeds for every configuration, so configurations compare paired."""
        return [self.seed + r for r in range(self.repeats)]


def _absolute(uri: str | None, what: str) -> str | None:
    """Local paths become absolute (Ray workers run in other working directories); a
    URI with a scheme must have the shape the store accepts."""
    if uri is None:
        return None
    from explore.store import uri as storage

    try:
        _, path = storage.resolve(uri)  # checks the URI's shape; touches no storage
    except (ValueError, storage.StorageError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return uri if storage.is_s3(uri) else path


def _typed(cls: type, values: dict[str, Any], where: str) -> Any:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def sweep_config(cfg: DictConfig, space_name: str) -> SweepConfig:
    """Typed view of a composed config (interpolations resolved). Every group becomes its
    typed class here, before Ray starts or anything is written."""
    from explore.recipes import get_recipe

    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)  # a composed config is a mapping at the top
    unknown = sorted(set(raw) - set(TOP_LEVEL) - {"space_name", "sweep_id", "overrides"})
    if unknown:
        hints = [difflib.get_close_matches(k, TOP_LEVEL, n=1) for k in unknown]
        named = ", ".join(f"{k}" + (f" (did you mean {h[0]}?)" if h else "") for k, h in zip(unknown, hints))
        raise ConfigError(f"unknown setting(s): {named}")
    space = {name: KnobSpace.parse(name, spec) for name, spec in (raw.get("space") or {}).items()}
    head = _typed(HeadTrainConfig, raw.get("head") or {}, "head")
    method = dict(raw["method"])
    method_name = str(method.pop("name", ""))
    try:
        recipe = get_recipe(method_name)
        recipe.params(method)  # every method setting checked now
        fields = {f.name for f in dataclasses.fields(recipe.params_type)}
        for name, knob in space.items():  # both ends of every knob, as far as no data decides
            for value in knob.bounds() if name in fields else ():
                try:
                    recipe.params({**method, name: value})
                except ValueError as exc:
                    raise ConfigError(f"space.{name}={value!r}: {exc}") from None
        base = BaseSpec.from_mapping(dict(raw["base"]), head)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    features = _absolute(raw.get("features"), "features")
    dataset = None if features else _typed(DatasetConfig, dict(raw["dataset"]), "dataset")
    resume = raw.get("resume")
    return SweepConfig(
        space_name=space_name,
        storage_uri=str(_absolute(str(raw["storage_uri"]), "storage_uri")),
        features=features,
        resume=_absolute(resume, "resume") if resume and "/" in str(resume) else resume,
        mode=raw.get("mode", "head"),
        num_samples=raw["num_samples"],
        repeats=raw["repeats"],
        seed=raw.get("seed", 0),
        search=_typed(SearchConfig, raw.get("search") or {}, "search"),
        runner=_typed(RunnerConfig, raw.get("runner") or {}, "runner"),
        splits=_typed(SplitThresholds, raw.get("splits") or {}, "splits"),
        head=head,
        dataset=dataset,
        backbone=_backbone(raw["backbone"]),
        base=base,
        method=method_name,
        method_settings=method,
        space=space,
        dry_run=raw.get("dry_run", False),
        verbose=raw.get("verbose", False),
        resume_force_unlock=raw.get("resume_force_unlock", False),
    )


def _backbone(values: dict[str, Any]) -> BackboneTrainConfig:
    try:
        return BackboneTrainConfig.from_mapping(dict(values))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backbone: {exc}" if not str(exc).startswith("backbone") else str(exc)) from None


def load(argv: list[str]) -> SweepConfig:
    """``argv = [space_name, *overrides]`` → validated SweepConfig."""
    if not argv:
        raise ConfigError("name a search space, e.g. `python -m explore.sweep alphanet_k` (--list shows them)")
    name, overrides = argv[0], argv[1:]
    return sweep_config(compose(name, overrides), name)
