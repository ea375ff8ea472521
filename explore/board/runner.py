"""One leaderboard, start to end, on one Ray cluster.

1. **Tune** each entry: its own sweep (:func:`explore.sweep.driver.run`: its own Tune
   experiment and Optuna study, its trials concurrent up to ``search.max_concurrent_trials``)
   with the board's budget on the tuning seeds. Entries are tuned one after another: on a
   2-CPU machine two Tune drivers at once would each hold a CPU their trials need; on a
   cluster each sweep already fills it with concurrent trials. The configuration is chosen
   on validation by the board's rule (:func:`explore.analyze.board.choose`) and recorded.
   An entry the data cannot run (a :class:`~explore.config.ConfigError` from its checks,
   e.g. neighbor silencing without an auxiliary pool, or every tuning trial failing) is
   recorded with the reason, and the board goes on.
2. **Final**: every chosen configuration (the base's too) re-run on the fresh seeds, one
   Ray task per (entry, seed), all at once as the cluster allows. Each seed's inputs are
   prepared with that seed (a post-hoc method corrects the base trained on that seed; a
   reference is trained on it), so every Δ pairs rows of identical seeds.
3. **Table**: printed, and written beside the board as Markdown, HTML and a Pareto plot.

Rows carry ``board_id`` and ``phase`` (tune | final). Everything finished is durable (an
entry's outcome document, each seed's Parquet file), so ``resume=<board id>`` runs only
what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from explore.analyze.board import (
    CANNOT_RUN,
    board_rows,
    board_uri,
    choose,
    html_page,
    load_board_data,
    markdown,
    pareto_png,
    text_table,
)
from explore.board.config import BoardConfig, Entry, board_config
from explore.config import ConfigError
from explore.recipes import RecipeError, get_recipe
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.store import uri as storage
from explore.store.documents import DocumentExistsError, read_json, write_bytes, write_json
from explore.sweep import resume
from explore.sweep.driver import SweepFailedError, code_version

__all__ = ["BoardIds", "run_board"]

log = logging.getLogger("explore")


@dataclasses.dataclass(frozen=True)
class BoardIds:
    """A board's id and its entries' sweep ids, which share its date and random suffix."""

    board_id: str
    suffix: str

    @classmethod
    def new(cls, name: str) -> BoardIds:
        board_id = resume.new_sweep_id(name)
        return cls(board_id, board_id[len(name):])

    def tuning(self, entry: str) -> str:
        return f"{entry}{self.suffix}"

    def final(self, entry: str) -> str:
        return f"{entry}-final{self.suffix}"


def run_board(board: BoardConfig) -> str:
    """Run (or with ``resume``, finish) a board; returns its URI."""
    from explore.store import FeatureStore
    from explore.sweep.cluster import init_ray

    FeatureStore(board.storage_uri)  # checks the storage is reachable, first
    board, doc = _located(board)
    uri = board_uri(board.storage_uri, doc["board_id"])
    log.info("board %s: %d entries, fresh seeds %s; interrupted, it finishes with "
             "resume=%s", doc["board_id"], len(board.entries),
             ", ".join(map(str, board.fresh_seeds)), doc["board_id"])
    init_ray(board.entries[0].cfg.verbose)
    ids = {e["name"]: e for e in doc["entries"]}
    outcomes: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(board.entries, 1):
        path = storage.join(uri, "entries", f"{entry.name}.json")
        try:
            outcomes[entry.name] = read_json(path, "reading a board entry")
            log.info("board: [%d/%d] %s tuned already", i, len(board.entries), entry.name)
            continue
        except FileNotFoundError:
            pass
        log.info("board: [%d/%d] tuning %s (%d configurations × %d seeds)", i,
                 len(board.entries), entry.name, entry.budget.configurations, entry.budget.seeds)
        outcome = _tune(entry, ids[entry.name]["sweep_id"], doc["board_id"])
        write_json(path, outcome, "writing a board entry")
        outcomes[entry.name] = outcome
    _final(board, doc, outcomes)
    return _table(uri)


def _located(board: BoardConfig) -> tuple[BoardConfig, dict[str, Any]]:
    """(the board to run, its board.json): a new one written now, or the stored one of
    ``resume=`` (whose config wins; a differing override is an error)."""
    if board.resume is None:
        ids = BoardIds.new(board.name)
        doc = {
            "name": board.name, "board_id": ids.board_id, "storage_uri": board.storage_uri,
            "base": board.base, "fresh_seeds": list(board.fresh_seeds),
            "objective": board.entry(board.base).cfg.search.objective,
            "tolerance": board.entry(board.base).cfg.search.tolerance,
            "config": _stored_config(board), "overrides": list(board.cli_overrides),
            "entries": [{"name": e.name, "method": e.cfg.method, "sweep_id": ids.tuning(e.name),
                         "final_id": ids.final(e.name),
                         "budget": dataclasses.asdict(e.budget)} for e in board.entries],
        }
        try:
            write_json(storage.join(board_uri(board.storage_uri, ids.board_id), "board.json"),
                       doc, "writing the board", exclusive=True)
        except DocumentExistsError:
            raise ConfigError(f"board {ids.board_id} exists already; run the command again "
                              "(a new id is drawn each run)") from None
        return board, doc
    board_id = board.resume
    if not resume.SWEEP_ID.fullmatch(board_id):
        raise ConfigError(f"resume={board_id!r} is not a board id (like "
                          f"{board.name}-20260101-120000-0a1b2c3d4e5f, printed when it started)")
    try:
        doc = read_json(storage.join(board_uri(board.storage_uri, board_id), "board.json"),
                        "reading the board")
    except FileNotFoundError:
        raise ConfigError(f"resume: no board {board_id!r} under {board.storage_uri}") from None
    if doc["name"] != board.name:
        raise ConfigError(f"resume: {board_id} is a {doc['name']} board, not {board.name}")
    kept = [o for o in board.cli_overrides if not o.startswith("storage_uri=")]
    stored = [o for o in doc["overrides"] if not o.startswith("storage_uri=")]
    if kept and kept != stored:
        raise ConfigError(f"resume: overrides {kept} differ from the board's {stored}; a "
                          "resumed board keeps its configuration")
    forwarded = [*stored, f"storage_uri={board.storage_uri}"]
    return board_config(board.name, doc["config"], forwarded), doc


def _stored_config(board: BoardConfig) -> dict[str, Any]:
    """The board's own keys as composed (a resume rebuilds the board from them)."""
    return {"base": board.base, "entries": [e.name for e in board.entries],
            "budget": dataclasses.asdict(board.entries[0].budget),
            "budgets": {e.name: dataclasses.asdict(e.budget) for e in board.entries},
            "seed": board.seed, "final_seeds": board.final_seeds,
            "final_seed": board.final_seed, "resume": None, "overrides": []}


def _tune(entry: Entry, sweep_id: str, board_id: str) -> dict[str, Any]:
    """Run (or resume) the entry's tuning sweep and choose its configuration; or say why
    it cannot run on this data."""
    from explore.results.reader import read_rows
    from explore.sweep import driver

    cfg = entry.cfg
    layout = SweepLayout(cfg.storage_uri, sweep_id)
    resuming = _exists(layout.config)
    if resuming:
        cfg = dataclasses.replace(cfg, resume=sweep_id)
    try:
        driver.run(cfg, entry.raw, list(entry.overrides), sweep_id=None if resuming else sweep_id,
                   row_columns={"board_id": board_id, "phase": "tune"}, summary=False)
    except (ConfigError, RecipeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        log.warning("board: %s cannot run: %s", entry.name, reason)
        return {"status": CANNOT_RUN, "reason": reason}
    except SweepFailedError:
        rows = read_rows([layout.results]).rows
        errors = [str(e) for e in rows.get("error", []) if isinstance(e, str)]
        reason = f"every tuning trial failed: {errors[0] if errors else 'see its rows'}"
        log.warning("board: %s cannot run: %s", entry.name, reason)
        return {"status": CANNOT_RUN, "reason": reason}
    rows = read_rows([layout.results]).rows
    choice = choose(rows, cfg.search.objective, cfg.search.tolerance)
    if choice is None:
        return {"status": CANNOT_RUN, "reason": "no tuning trial finished"}
    log.info("board: %s chose %s on validation (overall %.2f, few %.2f)", entry.name,
             {k: v for k, v in choice.knobs.items() if k in cfg.space} or "its one configuration",
             100 * choice.val_overall,
             100 * choice.val_few)
    swept = [name for name, knob in cfg.space.items() if knob.type != "fixed"]
    return {"status": "ok", "trial_id": choice.trial_id, "knobs": choice.knobs, "swept": swept,
            "val_overall": choice.val_overall, "val_few": choice.val_few, "note": choice.note}


def _exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = storage.resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _final(board: BoardConfig, doc: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> None:
    """Every runnable entry's chosen configuration on every fresh seed not done yet: the
    inputs prepared here per seed, the fits as Ray tasks, each seed's rows written as it
    ends."""
    import ray

    from explore.console import Progress
    from explore.pipeline import prepare
    from explore.store import FeatureStore
    from explore.sweep.context import HeadTrialContext
    from explore.sweep.trial import run_configuration

    store = FeatureStore(board.storage_uri, check=False)
    ids = {e["name"]: e for e in doc["entries"]}
    todo = []
    for entry in board.entries:
        if outcomes[entry.name]["status"] != "ok":
            continue
        layout = SweepLayout(board.storage_uri, ids[entry.name]["final_id"])
        done = writer.existing_names(layout)
        todo += [(entry, layout, seed) for seed in board.fresh_seeds
                 if SweepLayout.trial_name(_final_trial(seed)) not in done]
    if not todo:
        return
    log.info("board: %d final run(s) on the fresh seeds", len(todo))
    columns = (("board_id", doc["board_id"]), ("phase", "final"))
    pending: dict[Any, tuple[SweepLayout, str]] = {}
    with Progress("board: final runs", len(todo), "run", tick=True) as bar:
        for entry, layout, seed in todo:
            bar.note(f"preparing {entry.name} seed {seed}")
            cfg = dataclasses.replace(entry.cfg, seed=seed, repeats=1)
            recipe = get_recipe(cfg.method)
            prepared = prepare(cfg, recipe, store)
            prov = Provenance(
                sweep_id=layout.sweep_id, space=entry.name, mode="head",
                dataset=prepared.dataset_name, feature_key=prepared.feature_key,
                thresholds=cfg.splits, code_version=code_version(),
                base=prepared.reference.name, base_key=prepared.base_key, columns=columns)
            _write_reference(layout, prov, prepared.reference, seed, cfg.head)
            ctx = HeadTrialContext(layout=layout, provenance=prov, method=cfg.method,
                                   method_settings=cfg.method_settings, head=cfg.head,
                                   seeds=(seed,), cpus_per_trial=cfg.runner.cpus_per_trial,
                                   gpus_per_trial=cfg.runner.gpus_per_trial)
            task = ray.remote(run_configuration).options(
                num_cpus=cfg.runner.cpus_per_trial, num_gpus=cfg.runner.gpus_per_trial,
                max_retries=cfg.runner.max_failures)
            ref = task.remote(ctx, outcomes[entry.name]["knobs"], _final_trial(seed))
            pending[ref] = (layout, _final_trial(seed))
            _record_ended(pending, bar, timeout=0)  # runs that ended while this one prepared
        bar.note("training")
        while pending:
            _record_ended(pending, bar, timeout=None)


def _record_ended(pending: dict[Any, tuple[SweepLayout, str]], bar: Any,
                  timeout: float | None) -> None:
    """Write the rows of the final runs that have ended (waiting for one unless
    ``timeout=0``)."""
    import ray

    ready, _ = ray.wait(list(pending), num_returns=1 if timeout is None else len(pending),
                        timeout=timeout)
    for ref in ready:
        layout, trial_id = pending.pop(ref)
        writer.write_rows(layout, SweepLayout.trial_name(trial_id), ray.get(ref))
        bar.update()


def _final_trial(seed: int) -> str:
    return f"final-s{seed}"


def _write_reference(layout: SweepLayout, prov: Provenance, reference: Any, seed: int,
                     head: Any) -> None:
    """The entry's own reference on this fresh seed (as its sweep's reference rows are)."""
    name = f"{SweepLayout.base_name(reference.name)}-s{seed}"
    if name in writer.existing_names(layout):
        return
    row = build_row(dataclasses.replace(prov, base_key=reference.keys[0]), trial_id=name,
                    method=reference.name, role="reference", result=reference.results[0],
                    knobs={}, training=head, deterministic=reference.deterministic)
    writer.write_rows(layout, name, [row])


def _table(uri: str) -> str:
    """Print the table and write it beside the board (Markdown, HTML, Pareto plot)."""
    data = load_board_data(uri)
    rows = board_rows(data)
    write_bytes(storage.join(uri, "table.md"), markdown(data, rows).encode(), "writing the table")
    write_bytes(storage.join(uri, "table.html"), html_page(data, rows).encode(),
                "writing the table")
    write_bytes(storage.join(uri, "pareto.png"), pareto_png(data, rows), "writing the plot")
    print()
    print(text_table(data, rows))
    return uri
