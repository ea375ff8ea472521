"""Configurations and their mean ± std over seeds, in points.

A *configuration* is a sweep's ok rows with equal (role, method, base, mode, knob values);
its reference is the sweep's reference rows of the method its ``base`` names. Each
configuration's value on a seed is its row on that seed (the mean, when a repeated trial
gave several rows on one seed); its statistics are over seeds: the mean and the sample
standard deviation (ddof=1). With one seed there is no standard deviation: it is NaN here
and shown as "–" everywhere (report, stdout, the sweep's closing table).

The same summary serves the report and the table a sweep prints when it ends.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from explore.analyze.load import REFERENCE, is_null, knob_names, natural
from explore.results.schema import METRIC_COLUMNS

POINTS = 100.0
"""Accuracies are stored as fractions and shown in points (percentage points)."""

TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("acc_many", "many"), ("acc_medium", "medium"), ("acc_few", "few"),
    ("acc_overall", "overall"), ("top5_overall", "top-5"),
    ("val_acc_few", "val few"), ("val_acc_overall", "val overall"),
)
NO_VALUE = "–"


def format_knob(value: object) -> str:
    """Knob value as shown in labels: ``8``, ``0.5``, ``cosine``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def knob_items(row: pd.Series) -> tuple[tuple[str, object], ...]:
    return tuple((k, natural(k, row[k])) for k in knob_names(row))


def knobs_text(items: tuple[tuple[str, object], ...]) -> str:
    return " ".join(f"{k}={format_knob(v)}" for k, v in items)


def config_label(role: str, method: str, base: object, knobs: str) -> str:
    if role == REFERENCE:
        return f"{method} (reference)"
    head = method if is_null(base) else f"{method}({base})"
    return f"{head} {knobs}".strip()


def with_configurations(ok: pd.DataFrame) -> pd.DataFrame:
    """``ok`` rows plus ``knob_items``, ``knobs``, ``label`` and ``config`` (a unique key)."""
    rows = ok.copy()
    items = [knob_items(r) for _, r in rows.iterrows()]
    rows["knob_items"] = pd.Series(items, index=rows.index, dtype=object)
    rows["knobs"] = [knobs_text(i) for i in items]
    rows["label"] = [config_label(str(r["role"]), str(r["method"]), r["base"], str(r["knobs"]))
                     for _, r in rows.iterrows()]
    rows["config"] = [
        f"{r['sweep_id']}|{r['role']}|{r['method']}|{r['base']}|{r['mode']}|{r['knobs']}"
        for _, r in rows.iterrows()
    ]
    return rows


def per_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (config, seed): the metric values (fractions); a seed with several rows
    (a configuration tried twice) gets their mean."""
    return rows.groupby(["config", "seed"], sort=True)[list(METRIC_COLUMNS)].mean()


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration of ``rows`` (ok rows with :func:`with_configurations`):
    identity, ``n_seeds``, ``seeds``, ``n_rows``, and ``<metric>_mean`` / ``<metric>_std`` in
    points for every metric. Order: :func:`display_order`."""
    seeds = per_seed(rows)
    records = []
    for config, group in rows.groupby("config", sort=True):
        first = group.iloc[0]
        values = seeds.loc[config]
        rec: dict[str, object] = {
            "config": config, "sweep_id": first["sweep_id"], "role": first["role"],
            "method": first["method"], "base": first["base"], "mode": first["mode"],
            "knobs": first["knobs"], "knob_items": first["knob_items"], "label": first["label"],
            "space": first.get("space"), "dataset": first.get("dataset"),
            "feature_key": first.get("feature_key"), "many_above": first.get("many_above"),
            "few_below": first.get("few_below"),
            "deterministic": bool(group["deterministic"].all()),
            "n_seeds": len(values), "seeds": tuple(int(s) for s in values.index),
            "n_rows": len(group),
        }
        for m in METRIC_COLUMNS:
            v = POINTS * values[m].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            rec[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
            rec[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        records.append(rec)
    columns = ["config", "sweep_id", "role", "method", "base", "label", "n_seeds"]
    summary = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=columns)
    return display_order(summary)


def display_order(summary: pd.DataFrame) -> pd.DataFrame:
    """References first, then configurations by descending validation overall accuracy
    (then label): the order of every table."""
    if summary.empty:
        return summary.reset_index(drop=True)
    key = summary.assign(
        _ref=summary["role"] != REFERENCE,
        _val=-summary["val_acc_overall_mean"].fillna(-math.inf),
    )
    key = key.sort_values(["_ref", "_val", "label", "sweep_id"], kind="stable")
    return summary.loc[key.index].reset_index(drop=True)


def fmt_points(value: float, signed: bool = False) -> str:
    if is_null(value):
        return NO_VALUE
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def mean_std(mean: float, std: float) -> str:
    """``45.12 ± 0.31``; ``45.12 ± –`` when there is no std (one seed)."""
    return f"{fmt_points(mean)} ± {fmt_points(std)}"


def mean_std_table(summary: pd.DataFrame, show_sweep: bool = False) -> pd.DataFrame:
    """The display table (text cells, points): per configuration ``mean ± std`` over seeds
    for each test split, top-5 and the validation few/overall accuracies."""
    out = pd.DataFrame({"configuration": summary["label"]})
    if show_sweep:
        out["sweep"] = summary["sweep_id"]
    out["seeds"] = summary["n_seeds"].astype(int)
    for m, title in TABLE_METRICS:
        out[title] = [mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for _, r in summary.iterrows()]
    return out.reset_index(drop=True)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for the lines no other line beats on both ``x`` and ``y`` (both maximised): none
    has >= on both and > on one. Lines with a missing value are never on it."""
    pts = points[[x, y]].to_numpy(dtype=float)
    on_front = np.zeros(len(pts), dtype=bool)
    for i, (xi, yi) in enumerate(pts):
        if np.isnan(xi) or np.isnan(yi):
            continue
        dominated = np.any((pts[:, 0] >= xi) & (pts[:, 1] >= yi)
                           & ((pts[:, 0] > xi) | (pts[:, 1] > yi)))
        on_front[i] = not dominated
    return pd.Series(on_front, index=points.index, name="pareto")


def to_text(table: pd.DataFrame, left: tuple[str, ...] = ("configuration", "sweep")) -> str:
    """Aligned plain text: named columns left-aligned, the others right-aligned."""
    cols = [str(c) for c in table.columns]
    cells = [[str(v) for v in table[c]] for c in table.columns]
    widths = [max([len(c), *(len(v) for v in col)]) for c, col in zip(cols, cells)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if c in left else v.rjust(w)
                         for v, w, c in zip(values, widths, cols)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])]
    out += [line([col[i] for col in cells]) for i in range(len(table))]
    return "\n".join(out)


def to_markdown(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |"
            for r in table.itertuples(index=False)]
    return "\n".join(out)
