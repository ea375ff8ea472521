"""The table a sweep prints when it ends: mean ± std over seeds per configuration."""

from __future__ import annotations

import pandas as pd

from explore.results.schema import KNOB_COLUMNS

SHOWN = ("acc_many", "acc_medium", "acc_few", "acc_overall", "top5_overall", "val_acc_overall")


def configuration_table(rows: pd.DataFrame, sort_by: str = "val_acc_overall") -> pd.DataFrame:
    """One line per (method, base, knob values): seeds, mean and std of each metric.
    Base-model lines come first, then configurations by descending ``sort_by``."""
    ok = rows[rows["status"] == "ok"].copy()
    knobs = [k for k in KNOB_COLUMNS if k in ok and ok[k].notna().any()]
    keys = ["method", "base", *knobs]
    ok[keys] = ok[keys].astype(object).where(ok[keys].notna(), "")
    grouped = ok.groupby(keys, dropna=False, sort=False)
    table = grouped[list(SHOWN)].agg(["mean", "std"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    table["seeds"] = grouped.size()
    table = table.reset_index()
    table["is_base"] = table["base"] == ""
    table = table.sort_values(["is_base", f"{sort_by}_mean"], ascending=[False, False])
    return table.drop(columns="is_base").reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """Percentages, ``mean ± std`` (std 0 for a single seed)."""
    knob_cols = [c for c in table.columns if c in KNOB_COLUMNS]
    lines = []
    header = ["method", *knob_cols, "seeds", "many", "medium", "few", "overall", "top5", "val overall"]
    cells = []
    for _, row in table.iterrows():
        line = [str(row["method"]) + ("" if row["base"] == "" else f" ({row['base']})")]
        line += [_knob(row[c]) for c in knob_cols]
        line.append(str(int(row["seeds"])))
        for m in SHOWN:
            mean, std = row[f"{m}_mean"], row[f"{m}_std"]
            std = 0.0 if pd.isna(std) else std
            line.append(f"{100 * mean:5.1f} ± {100 * std:4.1f}")
        cells.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *cells)]
    for line in [header, *cells]:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _knob(value: object) -> str:
    if value == "" or value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
