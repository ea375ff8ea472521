"""Leaderboard configuration: Hydra composes ``search_spaces/board/NAME.yaml``; this module
types it and splits the command line between the board and its sweeps.

A board's own keys (:data:`BOARD_KEYS`) configure the board; every other override
(``features=``, ``dataset=``, ``storage_uri=``, ``search.objective=``, ``head.epochs=``,
...) goes to every entry's sweep, after the board's ``overrides`` list. The budget sets
each sweep's ``num_samples`` (configurations), ``repeats`` (tuning seeds) and ``seed``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from explore.config import SPACES_DIR, ConfigError, SweepConfig, compose, list_spaces, sweep_config

__all__ = ["BOARDS_DIR", "BOARD_KEYS", "BoardConfig", "Budget", "Entry", "list_boards",
           "load_board"]

BOARDS_DIR = SPACES_DIR / "board"
BOARD_KEYS = ("base", "entries", "budget", "budgets", "seed", "final_seeds", "final_seed",
              "resume", "overrides")
_SET_BY_BOARD = ("num_samples", "repeats", "seed", "resume", "dry_run")
"""Sweep keys the board sets itself (the budget, the seeds, resuming)."""


def list_boards() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.yaml") if not p.stem.startswith("_"))


@dataclass(frozen=True)
class Budget:
    """What one method's tuning may spend: configurations × tuning seeds."""

    configurations: int
    seeds: int

    def __post_init__(self) -> None:
        for name in ("configurations", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"budget.{name}={value!r} must be an integer >= 1")


@dataclass(frozen=True)
class Entry:
    """One row of the board: a search space, its budget and its composed sweep config."""

    name: str
    budget: Budget
    cfg: SweepConfig
    raw: dict[str, Any]
    """The composed config as plain values (stored with the sweep)."""
    overrides: tuple[str, ...]
    """The overrides its sweep was composed with."""


@dataclass(frozen=True)
class BoardConfig:
    name: str
    base: str
    entries: tuple[Entry, ...]
    seed: int
    final_seeds: int
    final_seed: int
    resume: str | None
    cli_overrides: tuple[str, ...] = field(default=())
    """The command line's overrides (stored with the board; a resume checks them)."""

    @property
    def storage_uri(self) -> str:
        return self.entries[0].cfg.storage_uri

    @property
    def fresh_seeds(self) -> tuple[int, ...]:
        return tuple(self.final_seed + r for r in range(self.final_seeds))

    def tuning_seeds(self, entry: Entry) -> tuple[int, ...]:
        return tuple(entry.cfg.seeds)

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)


def load_board(argv: list[str]) -> BoardConfig:
    """``argv = [board name, *overrides]`` → the typed board, every entry's sweep composed
    and checked (a bad override fails here, before Ray starts)."""
    if not argv:
        raise ConfigError("name a board, e.g. `python -m explore.board fashion_mnist` "
                          f"(boards: {', '.join(list_boards())})")
    name, overrides = argv[0], list(argv[1:])
    if name not in list_boards():
        close = difflib.get_close_matches(name, list_boards(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown board {name!r}{hint}; boards: {', '.join(list_boards())}")
    own = [o for o in overrides if _key(o).split(".")[0] in BOARD_KEYS]
    forwarded = [o for o in overrides if o not in own]
    for override in forwarded:
        if _key(override) in _SET_BY_BOARD:
            raise ConfigError(f"{override}: a board sets each sweep's {_key(override)} itself; "
                              "use budget.configurations=, budget.seeds=, seed= or resume=")
    raw = _compose_board(name, own)
    return board_config(name, raw, forwarded)


def board_config(name: str, raw: dict[str, Any], forwarded: list[str]) -> BoardConfig:
    """The typed board from its composed (or stored) plain config and the overrides that
    go to every sweep."""
    unknown = sorted(set(raw) - set(BOARD_KEYS))
    if unknown:
        raise ConfigError(f"board {name}: unknown key(s) {unknown}; keys: {', '.join(BOARD_KEYS)}")
    default = Budget(**_mapping(raw.get("budget"), "budget"))
    budgets = {k: Budget(**_mapping(v, f"budgets.{k}"))
               for k, v in _mapping(raw.get("budgets"), "budgets").items()}
    names = [str(e) for e in raw.get("entries") or ()]
    spaces = list_spaces()
    for entry in [*names, *budgets]:
        if entry not in spaces:
            close = difflib.get_close_matches(entry, spaces, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"board {name}: {entry!r} is not a search space{hint}")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"board {name}: entries must name each search space once")
    base = str(raw.get("base"))
    if base not in names:
        raise ConfigError(f"board {name}: base {base!r} must be one of its entries")
    seed = _integer(name, "seed", raw.get("seed", 0), 0)
    final_seeds = _integer(name, "final_seeds", raw.get("final_seeds"), 1)
    final_seed = _integer(name, "final_seed", raw.get("final_seed"), 0)
    board_overrides = [str(o) for o in raw.get("overrides") or ()]
    entries = []
    for entry in names:
        budget = budgets.get(entry, default)
        sweep_overrides = [*board_overrides, *forwarded, f"num_samples={budget.configurations}",
                           f"repeats={budget.seeds}", f"seed={seed}"]
        composed = compose(entry, sweep_overrides)
        cfg = sweep_config(composed, entry)
        if cfg.mode != "head":
            raise ConfigError(f"board {name}: {entry} has mode={cfg.mode}; a board compares "
                              "heads on one set of cached features (mode=head)")
        plain = OmegaConf.to_container(composed, resolve=True)
        assert isinstance(plain, dict)  # a composed config is a mapping
        entries.append(Entry(entry, budget, cfg, {str(k): v for k, v in plain.items()},
                             tuple(sweep_overrides)))
    storage = {e.cfg.storage_uri for e in entries}
    if len(storage) != 1:
        raise ConfigError(f"board {name}: its entries compose different storage_uri values "
                          f"{sorted(storage)}; give storage_uri= on the command line")
    tuning = {s for e in entries for s in e.cfg.seeds}
    fresh = set(range(final_seed, final_seed + final_seeds))
    if tuning & fresh:
        raise ConfigError(f"board {name}: final seeds {sorted(fresh)} overlap the tuning seeds "
                          f"{sorted(tuning)}; raise final_seed (the reported seeds must be fresh)")
    resume = raw.get("resume")
    return BoardConfig(name, base, tuple(entries), seed, final_seeds, final_seed,
                       None if resume is None else str(resume), tuple(forwarded))


def _integer(board: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"board {board}: {key}={value!r} must be an integer >= {low}")
    return value


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return dict(value)


def _compose_board(name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(BOARDS_DIR), version_base="1.3",
                                   job_name="explore-board"):
            composed: DictConfig = hydra_compose(config_name=name, overrides=overrides)
    except HydraException as exc:
        raise ConfigError(f"bad override for board {name}: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    plain = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(plain, dict)  # a composed config is a mapping
    return {str(k): v for k, v in plain.items()}
