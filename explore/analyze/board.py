"""A leaderboard's table: every method at its chosen configuration, on the fresh seeds.

The rule that chooses a method's configuration (:func:`choose`) reads only validation
means over the tuning seeds. The table reads only the final rows (the fresh seeds): per
method the mean ± 95% t interval over seeds of many / medium / few / overall (test), and
Δ few and Δ overall against the board's base with the paired t interval over the same
seeds (:func:`explore.analyze.verdicts.paired_interval`). Its last column is the honest
accounting: configurations used of those given × tuning seeds, and the seconds they took.

Where a board lives (``python -m explore.board`` writes it)::

    <storage_uri>/boards/<board_id>/
        board.json              the board's config, its entries' sweep ids, the fresh seeds
        entries/<entry>.json    an entry's outcome: chosen configuration, or why it cannot run
        table.md, table.html, pareto.png
    <storage_uri>/sweeps/<entry sweep id>/          an entry's tuning sweep (phase=tune)
    <storage_uri>/sweeps/<entry final id>/results/  its fresh-seed rows (phase=final)
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from explore.analyze.summary import POINTS, fmt_points
from explore.analyze.verdicts import BETTER, WORSE, PairedInterval, paired_interval, t_quantile
from explore.store import uri as storage

__all__ = ["BoardData", "BoardRow", "Choice", "board_rows", "board_uri", "choose", "is_board",
           "load_board_data", "markdown", "pareto_png", "html_page", "text_table"]

SPLITS = (("many", "acc_many"), ("medium", "acc_medium"), ("few", "acc_few"),
          ("overall", "acc_overall"))
CANNOT_RUN = "cannot run"


def board_uri(storage_uri: str, board_id: str) -> str:
    return storage.join(storage_uri, "boards", board_id)


def is_board(uri: str) -> bool:
    """A board directory (it holds ``board.json``)."""
    from explore.store.documents import read_json

    try:
        read_json(storage.join(uri.rstrip("/"), "board.json"), "reading a board")
        return True
    except (FileNotFoundError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class Choice:
    """The configuration the rule picked on validation."""

    trial_id: str
    knobs: dict[str, Any]
    val_overall: float
    val_few: float
    note: str = ""


def choose(rows: pd.DataFrame, objective: str, tolerance: float) -> Choice | None:
    """The tuning sweep's configuration the board's rule picks, on validation means over
    the tuning seeds (test is never read): the highest validation overall
    (``val_overall``), validation few (``val_few``), validation few among those within
    ``tolerance`` points of the reference's validation overall (``few_within``; none
    within: the highest validation overall, said in ``note``), or the mean of the two
    (``pareto``). Ties: higher validation overall, then the trial id. None: no trial
    finished."""
    ok = rows[(rows["role"] == "configuration") & (rows["status"] == "ok")]
    if ok.empty:
        return None
    means = ok.groupby("trial_id")[["val_acc_overall", "val_acc_few"]].mean()
    note = ""
    if objective == "few_within":
        ref = rows.loc[rows["role"] == "reference", "val_acc_overall"].mean()
        within = means[means["val_acc_overall"] >= ref - tolerance / POINTS - 1e-12]
        if within.empty:
            note = f"none within {tolerance:g} points of the reference: highest val overall"
            score = means["val_acc_overall"]
        else:
            means, score = within, within["val_acc_few"]
    elif objective == "val_few":
        score = means["val_acc_few"]
    elif objective == "pareto":
        score = (means["val_acc_few"] + means["val_acc_overall"]) / 2
    else:
        score = means["val_acc_overall"]
    ranked = means.assign(score=score).reset_index().sort_values(
        ["score", "val_acc_overall", "trial_id"], ascending=[False, False, True], kind="stable")
    best = ranked.iloc[0]
    first = ok[ok["trial_id"] == best["trial_id"]].iloc[0]
    return Choice(str(best["trial_id"]), knobs_of(first), float(best["val_acc_overall"]),
                  float(best["val_acc_few"]), note)


def knobs_of(row: pd.Series) -> dict[str, Any]:
    """A row's knob values as plain Python values (from its recorded params)."""
    import json

    names = json.loads(row["knob_columns"])
    params = json.loads(row["params_json"]).get("params", {})
    return {name: params[name] for name in names if name in params}


@dataclass(frozen=True)
class BoardData:
    board: dict[str, Any]
    """board.json"""
    outcomes: dict[str, dict[str, Any]]
    """entry name → entries/<entry>.json (absent: not tuned yet)"""
    tuning: dict[str, pd.DataFrame]
    final: dict[str, pd.DataFrame]


def load_board_data(uri: str) -> BoardData:
    """Everything the table needs, read from a board directory and its sweeps."""
    from explore.results.reader import read_rows
    from explore.store.documents import read_json

    uri = uri.rstrip("/")
    board = read_json(storage.join(uri, "board.json"), "reading the board")
    root = board["storage_uri"]
    outcomes: dict[str, dict[str, Any]] = {}
    tuning: dict[str, pd.DataFrame] = {}
    final: dict[str, pd.DataFrame] = {}
    for entry in board["entries"]:
        name = entry["name"]
        try:
            outcomes[name] = read_json(storage.join(uri, "entries", f"{name}.json"),
                                       "reading a board entry")
        except FileNotFoundError:
            continue
        for phase, store in (("sweep_id", tuning), ("final_id", final)):
            results = storage.join(root, "sweeps", entry[phase], "results")
            rows = read_rows([results]).rows if _exists(results) else pd.DataFrame()
            store[name] = rows
    return BoardData(board, outcomes, tuning, final)


def _exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = storage.resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


@dataclass(frozen=True)
class BoardRow:
    entry: str
    method: str
    status: str
    """base | ok | cannot run | not finished"""
    reason: str = ""
    knobs: dict[str, Any] = field(default_factory=dict)
    """The chosen configuration's swept knobs (the method's other settings are its YAML's)."""
    seeds: tuple[int, ...] = ()
    means: dict[str, tuple[float, float]] = field(default_factory=dict)
    """split → (mean, half-width of the 95% t interval), points, over the fresh seeds."""
    deltas: dict[str, PairedInterval] = field(default_factory=dict)
    """few / overall → paired interval against the base, points."""
    used: int = 0
    given: int = 0
    tuning_seeds: int = 0
    tuning_seconds: float = 0.0
    cloud: tuple[tuple[float, float], ...] = ()
    """(few, overall) test means, points, of every finished tuning configuration."""

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return self.status if self.status == "base" else "–"
        few, overall = self.deltas["few"], self.deltas["overall"]
        words = {BETTER: "better", WORSE: "worse"}
        parts = [f"{name} {words[d.verdict]}" for name, d in (("few", few), ("overall", overall))
                 if d.verdict in words]
        return ", ".join(parts) if parts else "no clear difference"


def _mean_interval(values: np.ndarray) -> tuple[float, float]:
    values = POINTS * np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) < 2:
        return float(values.mean()), math.nan
    half = t_quantile(0.975, len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return float(values.mean()), half


def board_rows(data: BoardData) -> list[BoardRow]:
    """The table's rows in the board's order: the base first, then the methods by the
    board's rule on their fresh-seed means, then those that could not run or have not
    finished."""
    board = data.board
    base = board["base"]
    base_final = _by_seed(data.final.get(base))
    out: list[BoardRow] = []
    for entry in board["entries"]:
        name, method = entry["name"], entry["method"]
        outcome = data.outcomes.get(name)
        tuning = data.tuning.get(name, pd.DataFrame())
        accounting = _accounting(tuning, entry)
        if outcome is None:
            out.append(BoardRow(name, method, "not finished", "not tuned yet", **accounting))
            continue
        if outcome["status"] == CANNOT_RUN:
            out.append(BoardRow(name, method, CANNOT_RUN, outcome["reason"], **accounting))
            continue
        final = _by_seed(data.final.get(name))
        swept = outcome.get("swept", list(outcome["knobs"]))
        knobs = {k: v for k, v in outcome["knobs"].items() if k in swept}
        if final.empty:
            out.append(BoardRow(name, method, "not finished", "no fresh-seed rows yet",
                                knobs=knobs, **accounting))
            continue
        means = {split: _mean_interval(final[col].to_numpy()) for split, col in SPLITS}
        deltas = {}
        if name != base:
            paired = sorted(set(final.index) & set(base_final.index))
            for split, col in (("few", "acc_few"), ("overall", "acc_overall")):
                deltas[split] = paired_interval(final.loc[paired, col].to_numpy(float),
                                                base_final.loc[paired, col].to_numpy(float))
        out.append(BoardRow(name, method, "base" if name == base else "ok",
                            knobs=knobs, seeds=tuple(int(s) for s in final.index),
                            means=means, deltas=deltas, **accounting))
    return _ordered(out, board["objective"], float(board["tolerance"]))


def _by_seed(rows: pd.DataFrame | None) -> pd.DataFrame:
    """A final sweep's configuration rows, one per fresh seed, indexed by seed."""
    if rows is None or rows.empty:
        return pd.DataFrame(columns=[c for _, c in SPLITS])
    ok = rows[(rows["role"] == "configuration") & (rows["status"] == "ok")]
    return ok.drop_duplicates("seed").set_index("seed").sort_index()


def _accounting(tuning: pd.DataFrame, entry: dict[str, Any]) -> dict[str, Any]:
    given, seeds = int(entry["budget"]["configurations"]), int(entry["budget"]["seeds"])
    if tuning.empty:
        return {"given": given, "tuning_seeds": seeds}
    conf = tuning[tuning["role"] == "configuration"]
    ok = conf[conf["status"] == "ok"]
    means = ok.groupby("trial_id")[["acc_few", "acc_overall"]].mean() * POINTS
    return {"used": int(conf["trial_id"].nunique()), "given": given, "tuning_seeds": seeds,
            "tuning_seconds": float(conf["train_seconds"].fillna(0).sum()),
            "cloud": tuple(zip(means["acc_few"].tolist(), means["acc_overall"].tolist()))}


def _ordered(rows: list[BoardRow], objective: str, tolerance: float) -> list[BoardRow]:
    def score(row: BoardRow) -> float:
        few, overall = row.means["few"][0], row.means["overall"][0]
        if objective == "val_few":
            return few
        if objective == "few_within":  # within tolerance of the base first, then by few
            lost = row.deltas.get("overall")
            return few + (0 if lost is None or lost.mean >= -tolerance else -1e6)
        if objective == "pareto":
            return (few + overall) / 2
        return overall

    base = [r for r in rows if r.status == "base"]
    ran = sorted((r for r in rows if r.status == "ok"), key=lambda r: -score(r))
    rest = [r for r in rows if r.status not in ("base", "ok")]
    return base + ran + rest


HEADER = ("method", "chosen knobs", "many", "medium", "few", "overall", "Δ few [95%]",
          "Δ overall [95%]", "verdict", "tuning: configs × seeds, s")


def _cells(row: BoardRow) -> list[str]:
    label = row.entry if row.entry == row.method else f"{row.entry} ({row.method})"
    knobs = ", ".join(f"{k}={_knob(v)}" for k, v in row.knobs.items()) or "–"
    tuning = f"{row.used}/{row.given} × {row.tuning_seeds}, {row.tuning_seconds:.0f}"
    if row.status not in ("base", "ok"):  # the reason goes below the table
        return [label, knobs, row.status, "", "", "", "", "", "–", tuning]
    means = [fmt_points(m) + ("" if math.isnan(h) else f" ± {h:.2f}")
             for m, h in (row.means[s] for s, _ in SPLITS)]
    deltas = ([row.deltas[s].interval() if row.deltas[s].n > 1 else row.deltas[s].text()
               for s in ("few", "overall")] if row.deltas else ["–", "–"])
    return [label, knobs, *means, *deltas, row.verdict, tuning]


def _knob(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _caption(board: dict[str, Any]) -> str:
    seeds = board["fresh_seeds"]
    return (f"Board {board['name']} ({board['board_id']}): each method's configuration chosen "
            f"on validation ({board['objective']}) over its tuning seeds, then re-run with "
            f"the base on {len(seeds)} fresh seeds ({', '.join(map(str, seeds))}); test "
            "accuracy in points, mean ± 95% t interval over those seeds; Δ: paired "
            f"difference against {board['base']} on the same seeds, with its 95% interval.")


def _notes(rows: list[BoardRow]) -> list[str]:
    """Why an entry has no numbers."""
    return [f"{r.entry}: {r.status}: {r.reason}" for r in rows if r.status not in ("base", "ok")]


def markdown(data: BoardData, rows: list[BoardRow]) -> str:
    lines = [_caption(data.board), "", "| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    notes = _notes(rows)
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def text_table(data: BoardData, rows: list[BoardRow]) -> str:
    """The table for a terminal: aligned columns, the caption above."""
    table = [list(HEADER)] + [_cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    out = [_caption(data.board), ""]
    for i, r in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = _notes(rows)
    return "\n".join(out + ([""] + notes if notes else []))


def html_page(data: BoardData, rows: list[BoardRow]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>\n"
                   for r in rows)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>board "
            f"{html.escape(data.board['name'])}</title><style>table{{border-collapse:collapse}}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}</style></head><body>"
            f"<p>{html.escape(_caption(data.board))}</p><table><tr>{head}</tr>\n{body}</table>"
            + "".join(f"<p>{html.escape(n)}</p>" for n in _notes(rows)) +
            "<p><img src='pareto.png' alt='few against overall'></p></body></html>\n")


def pareto_png(data: BoardData, rows: list[BoardRow]) -> bytes:
    """Few against overall (test, points): each method's final point (mean over the fresh
    seeds) and, faint, its tuning cloud (each tuning configuration's mean)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.get_cmap("tab20")
    for i, row in enumerate(r for r in rows if r.status in ("base", "ok")):
        color = colors(i % 20)
        if row.cloud:
            few, overall = zip(*row.cloud)
            ax.scatter(overall, few, s=12, alpha=0.3, color=color)
        ax.scatter([row.means["overall"][0]], [row.means["few"][0]], s=60, color=color,
                   edgecolor="black", marker="*" if row.status == "base" else "o",
                   label=row.entry)
    ax.set_xlabel("overall test accuracy (points)")
    ax.set_ylabel("few test accuracy (points)")
    ax.set_title(f"board {data.board['name']}: final points (fresh seeds), tuning clouds faint")
    ax.legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
