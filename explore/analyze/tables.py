"""Per-configuration summaries, base deltas, rule-based selection and the Pareto front.

A *configuration* is (sweep_id, method, base, mode, the values of the knob columns that are
non-null). Its statistics are over its ok rows, one per seed: the mean and the sample
standard deviation (ddof=1, NaN with a single seed), as in the AlphaNet paper's tables.
Deltas are against the base model's configuration of the same sweep and mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from explore.results.schema import KNOB_COLUMNS

TEST_METRICS: tuple[str, ...] = ("acc_many", "acc_medium", "acc_few", "acc_overall", "top5_overall")
VAL_METRICS: tuple[str, ...] = ("val_acc_many", "val_acc_medium", "val_acc_few", "val_acc_overall")
METRIC_TITLES: dict[str, str] = {
    "acc_many": "many", "acc_medium": "medium", "acc_few": "few",
    "acc_overall": "overall", "top5_overall": "top-5",
}
KEY_COLUMNS: tuple[str, ...] = ("sweep_id", "mode", "method", "base_key", "knobs")


def is_null(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def format_knob(value: object) -> str:
    """Knob value as text; integral floats print as integers (k=4, not k=4.0)."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def knobs_text(row: pd.Series) -> str:
    """`k=4 distance=cosine` from the non-null knob columns of a row."""
    return " ".join(f"{k}={format_knob(row[k])}" for k in KNOB_COLUMNS if not is_null(row[k]))


def config_label(method: str, base: object, knobs: str) -> str:
    head = method if is_null(base) or base == "" else f"{method}({base})"
    return f"{head} {knobs}".strip()


@dataclass(frozen=True)
class StatusCounts:
    """How many rows were read and how many were left out for their status."""

    total: int
    ok: int
    excluded: dict[str, int]
    """Rows with status != "ok", by status."""

    def describe(self) -> str:
        if not self.excluded:
            return f"{self.total} rows, all ok"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.excluded.items()))
        return f"{self.total} rows: {self.ok} ok, excluded from statistics: {parts}"


def ok_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, StatusCounts]:
    """Rows with status "ok", and the count of the others by status."""
    status = df["status"].astype(object).where(df["status"].notna(), "<null>")
    ok = status == "ok"
    excluded = {str(s): int(n) for s, n in status[~ok].value_counts().items()}
    return df[ok.to_numpy()].copy(), StatusCounts(total=len(df), ok=int(ok.sum()), excluded=excluded)


def summarize(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: knob values, n_seeds, ``<metric>_mean/_std`` for test and
    validation metrics, ``<metric>_delta`` against the base of the same sweep and mode,
    ``is_base`` and a readable ``label``."""
    rows = ok.copy()
    rows["knobs"] = rows.apply(knobs_text, axis=1) if len(rows) else pd.Series(dtype=str)
    rows["base_key"] = rows["base"].astype(object).where(rows["base"].notna(), "")
    metrics = [m for m in TEST_METRICS + VAL_METRICS if m in rows.columns]
    for m in metrics:
        rows[m] = pd.to_numeric(rows[m], errors="coerce").astype(float)

    records = []
    for key, group in rows.groupby(list(KEY_COLUMNS), sort=True, dropna=False):
        sweep_id, mode, method, base_key, knobs = key
        first = group.iloc[0]
        rec: dict[str, object] = {
            "sweep_id": sweep_id, "mode": mode, "method": method,
            "base": base_key or None, "knobs": knobs,
            "label": config_label(method, base_key, knobs),
            "is_base": base_key == "",
            "n_seeds": len(group),
        }
        for k in KNOB_COLUMNS:
            rec[k] = None if is_null(first[k]) else first[k]
        for m in metrics:
            values = group[m].to_numpy(dtype=float)
            rec[f"{m}_mean"] = float(np.mean(values))
            rec[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        records.append(rec)
    summary = pd.DataFrame.from_records(records)
    # Paper order: within a sweep and mode the base first, then the method configurations.
    summary = summary.sort_values(["sweep_id", "mode", "is_base", "method", "label"],
                                  ascending=[True, True, False, True, True], ignore_index=True)
    return _add_deltas(summary, metrics)


def base_row(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The base configuration a method configuration is compared with (same sweep and mode)."""
    if row["is_base"]:
        return row
    match = summary[summary["is_base"] & (summary["sweep_id"] == row["sweep_id"])
                    & (summary["mode"] == row["mode"]) & (summary["method"] == row["base"])]
    return None if match.empty else match.iloc[0]


def _add_deltas(summary: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    for m in metrics:
        summary[f"{m}_delta"] = math.nan
    for i, row in summary.iterrows():
        base = base_row(summary, row)
        if base is None:
            continue
        for m in metrics:
            summary.at[i, f"{m}_delta"] = row[f"{m}_mean"] - base[f"{m}_mean"]
    return summary


@dataclass(frozen=True)
class Selection:
    """The configuration a stated rule picks (on validation) and where it was picked."""

    name: str
    rule: str
    scope: str
    """"all" or a sweep id."""
    row: pd.Series | None
    """The chosen summary row; None when no configuration satisfies the rule."""


def _rule_texts(tolerance: float) -> dict[str, str]:
    return {
        "best_few": (
            "highest validation few-split accuracy among method configurations whose validation "
            f"overall accuracy is at least their base's minus {tolerance:g}; reported on test"
        ),
        "best_overall": "highest validation overall accuracy among method configurations; reported on test",
    }


def select_best(summary: pd.DataFrame, tolerance: float) -> list[Selection]:
    """Apply the two selection rules to every scope: all sweeps together and, when there are
    several, each sweep alone. Ties go to the higher other validation metric, then the label."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (a fraction of accuracy), got {tolerance}")
    rules = _rule_texts(tolerance)
    scopes: list[tuple[str, pd.DataFrame]] = [("all", summary)]
    sweeps = sorted(summary["sweep_id"].unique())
    if len(sweeps) > 1:
        scopes += [(s, summary[summary["sweep_id"] == s]) for s in sweeps]

    selections = []
    for scope, sub in scopes:
        methods = sub[~sub["is_base"]].dropna(subset=["val_acc_few_mean", "val_acc_overall_mean"])
        # The base's own validation overall is mean minus delta.
        base_val_overall = methods["val_acc_overall_mean"] - methods["val_acc_overall_delta"]
        eligible = methods[methods["val_acc_overall_mean"] >= base_val_overall - tolerance - 1e-12]
        for name, frame, order in (
            ("best_few", eligible, ["val_acc_few_mean", "val_acc_overall_mean"]),
            ("best_overall", methods, ["val_acc_overall_mean", "val_acc_few_mean"]),
        ):
            ranked = frame.sort_values(order + ["label"], ascending=[False, False, True])
            row = None if ranked.empty else ranked.iloc[0]
            selections.append(Selection(name=name, rule=rules[name], scope=scope, row=row))
    return selections


def pareto_front(summary: pd.DataFrame, x: str = "acc_overall_mean", y: str = "acc_few_mean") -> pd.Series:
    """True for configurations no other configuration beats on both ``x`` and ``y`` (maximised):
    none has >= on both and > on one. Configurations with a missing value are never on it."""
    pts = summary[[x, y]].to_numpy(dtype=float)
    on_front = np.zeros(len(pts), dtype=bool)
    for i, (xi, yi) in enumerate(pts):
        if np.isnan(xi) or np.isnan(yi):
            continue
        dominated = np.any((pts[:, 0] >= xi) & (pts[:, 1] >= yi) & ((pts[:, 0] > xi) | (pts[:, 1] > yi)))
        on_front[i] = not dominated
    return pd.Series(on_front, index=summary.index, name="pareto")


def fmt_pct(value: float, signed: bool = False) -> str:
    if is_null(value):
        return "–"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def paper_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The display table (percent): per configuration `mean ± std (Δ)` per split and top-5."""
    out = pd.DataFrame({
        "sweep": summary["sweep_id"], "mode": summary["mode"], "configuration": summary["label"],
        "n": summary["n_seeds"],
    })
    for m in TEST_METRICS:
        cells = []
        for _, r in summary.iterrows():
            cell = f"{fmt_pct(r[f'{m}_mean'])} ± {fmt_pct(r[f'{m}_std'])}"
            if not r["is_base"]:
                cell += f" ({fmt_pct(r[f'{m}_delta'], signed=True)})"
            cells.append(cell)
        out[METRIC_TITLES[m]] = cells
    if "pareto" in summary:
        out["pareto"] = np.where(summary["pareto"], "*", "")
    return out


def to_text(table: pd.DataFrame) -> str:
    """Aligned plain-text rendering (left-aligned text, right-aligned numbers)."""
    cols = list(table.columns)
    cells = [[str(v) for v in table[c]] for c in cols]
    widths = [max(len(c), *(len(v) for v in col)) if len(col) else len(c) for c, col in zip(cols, cells)]
    numeric = [c not in ("sweep", "mode", "configuration") for c in cols]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    rows = [line(cols), line(["-" * w for w in widths])]
    rows += [line([col[i] for col in cells]) for i in range(len(table))]
    return "\n".join(rows)


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    rows += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(rows)
