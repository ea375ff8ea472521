"""Where a sweep lives, and resuming one: sweep ids, the stored config, and the checks
that a resume continues the same sweep on the same inputs.

A new sweep gets a fresh id and creates its ``sweep.json`` exclusively (two sweeps never
share a directory). ``resume=`` takes an id explore made (or ``<storage>/sweeps/<id>``),
nothing else: no path tricks reach outside the store's ``sweeps/``. A resume keeps the
stored configuration (only ``num_samples`` may grow) and refuses to run when the
features or the base model it would use now differ from the ones the sweep started on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import OmegaConf

from explore.config import SWITCHES, ConfigError, SweepConfig, sweep_config
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.store import StorageError
from explore.store.documents import DocumentExistsError, read_json, write_json

__all__ = ["SWEEP_ID", "check_same_inputs", "load_config", "locate", "locked", "new_sweep_id",
           "resumed_config", "save_config"]

log = logging.getLogger("explore")

SWEEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*-\d{8}-\d{6}-[0-9a-f]{4,16}")
"""``<space>-<YYYYmmdd>-<HHMMSS>-<hex>``: the ids :func:`new_sweep_id` makes (earlier
versions used 4 hex digits)."""

_RESUME_MAY_CHANGE = ("num_samples", "resume", "storage_uri", *SWITCHES)


def new_sweep_id(space_name: str) -> str:
    """48 random bits beside the second: two sweeps started together still differ (and
    :func:`save_config`'s exclusive create catches the rest)."""
    return f"{space_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"


def locate(cfg: SweepConfig, sweep_id: str | None = None) -> tuple[SweepLayout, bool]:
    """(the sweep's layout, whether this is a resume). ``sweep_id``: the id a new sweep
    takes, when its caller chose one (a leaderboard names its sweeps); else a fresh one."""
    if not cfg.resume:
        if sweep_id is not None and not SWEEP_ID.fullmatch(sweep_id):
            raise ConfigError(f"sweep id {sweep_id!r} is not of the form <name>-<date>-<time>-<hex>")
        return SweepLayout(cfg.storage_uri, sweep_id or new_sweep_id(cfg.space_name)), False
    ref = cfg.resume.rstrip("/")
    root, sweep_id = ref.rsplit("/sweeps/", 1) if "/sweeps/" in ref else (cfg.storage_uri, ref)
    if not SWEEP_ID.fullmatch(sweep_id) or ".." in root.split("/"):
        raise ConfigError(f"resume={cfg.resume!r} is not a sweep id (like "
                          f"{cfg.space_name}-20260101-120000-0a1b2c3d4e5f, as printed when the "
                          "sweep started) nor <storage_uri>/sweeps/<sweep id>")
    return SweepLayout(root, sweep_id), True


def save_config(layout: SweepLayout, doc: Mapping[str, Any]) -> None:
    """A new sweep's ``sweep.json``, created exclusively."""
    try:
        write_json(layout.config, dict(doc), "writing the sweep config", exclusive=True)
    except DocumentExistsError:
        raise StorageError(f"sweep {layout.sweep_id} exists already at {layout.config}; run the "
                           "command again (a new id is drawn each run)") from None


def load_config(layout: SweepLayout) -> dict[str, Any]:
    try:
        doc = read_json(layout.config, "reading the sweep config")
    except FileNotFoundError:
        raise ConfigError(f"resume: no sweep {layout.sweep_id!r} under {layout.storage_uri} (no "
                          "sweep.json); check the id and storage_uri") from None
    if not isinstance(doc, dict):
        raise StorageError(f"{layout.config} is corrupt: not a JSON object")
    return doc


@contextlib.contextmanager
def locked(layout: SweepLayout, resuming: bool, force: bool = False) -> Iterator[None]:
    """One resume of a sweep at a time (a new sweep's id is its own); ``force`` breaks a
    lock the user knows to be stale (``resume_force_unlock=true``)."""
    if not resuming:
        yield
        return
    from explore.sweep.study import SweepLock

    lock = SweepLock(layout)
    lock.acquire(force=force)
    try:
        yield
    finally:
        lock.release()


def resumed_config(cfg: SweepConfig, layout: SweepLayout, stored: dict[str, Any],
                   overrides: list[str]) -> tuple[SweepConfig, dict[str, Any]]:
    """The stored config of the sweep being resumed, checked against this command: the
    space must be the same, ``num_samples`` may grow (the sweep is extended), and any other
    override that differs from the stored value is an error naming it."""
    stored_space = str(stored.get("space_name"))
    if stored_space != cfg.space_name:
        raise ConfigError(f"resume: sweep {layout.sweep_id} is a {stored_space} sweep, not "
                          f"{cfg.space_name}; run `python -m explore.sweep {stored_space} "
                          f"resume={layout.sweep_id}`")
    raw = dict(stored)
    for override in overrides:
        key, _, _ = override.lstrip("+~").partition("=")
        if key.split(".")[0] in _RESUME_MAY_CHANGE:
            continue
        now = OmegaConf.select(OmegaConf.create(_plain(cfg)), key)
        before = OmegaConf.select(OmegaConf.create(stored), key)
        if now != before:
            raise ConfigError(f"resume: {key}={now!r} differs from the sweep's {key}={before!r}; "
                              "a resumed sweep keeps its configuration (only num_samples may grow)")
    if cfg.num_samples != stored.get("num_samples"):
        if cfg.num_samples < int(stored.get("num_samples", 0)):
            raise ConfigError(f"resume: num_samples={cfg.num_samples} is below the sweep's "
                              f"{stored.get('num_samples')}; a resume can only extend a sweep")
        if any(o.partition("=")[0] == "num_samples" for o in overrides):
            log.info("resume: extending %s from %s to %d configurations", layout.sweep_id,
                     stored.get("num_samples"), cfg.num_samples)
            raw["num_samples"] = cfg.num_samples
    raw["storage_uri"] = layout.storage_uri
    raw.pop("resume", None)
    try:
        resumed = sweep_config(OmegaConf.create({k: v for k, v in raw.items() if k not in
                                                 ("space_name", "sweep_id", "overrides", "inputs")}),
                               stored_space)
    except ConfigError as exc:
        raise ConfigError(f"{layout.config}: {exc}") from None
    # This command's switches, not the stored run's.
    resumed = dataclasses.replace(resumed, dry_run=cfg.dry_run, verbose=cfg.verbose,
                                  resume_force_unlock=cfg.resume_force_unlock)
    return resumed, raw


def _plain(cfg: SweepConfig) -> dict[str, Any]:
    """The typed config as plain values (for comparing overrides with a stored config)."""
    out = dataclasses.asdict(cfg)
    out["method"] = {"name": cfg.method, **cfg.method_settings}
    out["base"] = {"name": cfg.base.name, **dataclasses.asdict(cfg.base.settings)}
    return out


def check_same_inputs(layout: SweepLayout, stored: Mapping[str, Any],
                      now: Mapping[str, Any]) -> None:
    """A resume must train on what the sweep started on: the same feature key and base
    model key(s). Replacing ``classifier.npz`` or the features between a kill and a
    resume would otherwise mix two models in one sweep. Sweeps stored before ``inputs``
    was recorded are checked against their reference rows."""
    before = stored.get("inputs") or _inputs_of_rows(layout)
    for name, value in now.items():
        if name in before and before[name] != value:
            raise ConfigError(f"resume: sweep {layout.sweep_id} was run with {name} "
                              f"{before[name]}, and this command would use {value} (the "
                              "features or base model changed since); start a new sweep")


def _inputs_of_rows(layout: SweepLayout) -> dict[str, Any]:
    names = sorted(n for n in writer.existing_names(layout) if n.startswith("base-"))
    if not names:
        return {}
    rows = writer.read_file(layout, names[0])
    return {"feature_key": str(rows["feature_key"].iloc[0]),
            "reference_keys": [None if k is None or k != k else str(k)
                               for k in rows["base_key"].tolist()]}
