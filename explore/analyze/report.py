"""The analysis end to end: read, summarise, select, plot, and write the report files.

Files written to the output directory:
``summary.csv`` (every statistic, fractions, full precision), ``table.md`` / ``table.csv``
(the display table, percent), ``selections.md``, ``pareto.csv``, the PNG plots, and
``report.md`` + ``report.html`` (self-contained, PNGs embedded as base64).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from explore.analyze.load import AnalyzeError, read_results
from explore.analyze.plots import knob_plots, pareto_plot
from explore.analyze.tables import (
    Selection,
    StatusCounts,
    fmt_pct,
    ok_rows,
    paper_table,
    pareto_front,
    select_best,
    summarize,
    to_markdown,
    to_text,
)


@dataclass(frozen=True)
class Analysis:
    """Everything an analysis produced, for callers that want more than the files."""

    summary: pd.DataFrame
    table: pd.DataFrame
    selections: list[Selection]
    counts: StatusCounts
    plots: list[Path]
    out_dir: Path


def selection_lines(selections: list[Selection]) -> list[str]:
    lines = []
    for s in selections:
        head = f"[{s.scope}] {s.name}: rule = {s.rule}"
        if s.row is None:
            lines.append(f"{head}\n    -> no configuration satisfies the rule")
            continue
        r = s.row
        lines.append(
            f"{head}\n    -> {r['label']} (sweep {r['sweep_id']}, {r['mode']}, {r['n_seeds']} seeds): "
            f"val few {fmt_pct(r['val_acc_few_mean'])}, val overall {fmt_pct(r['val_acc_overall_mean'])} | "
            f"test few {fmt_pct(r['acc_few_mean'])} ({fmt_pct(r['acc_few_delta'], signed=True)}), "
            f"test overall {fmt_pct(r['acc_overall_mean'])} ({fmt_pct(r['acc_overall_delta'], signed=True)})"
        )
    return lines


def analyze(uris: list[str], out_dir: Path, tolerance: float = 0.02, seed: int = 0) -> Analysis:
    """Run the whole analysis on the results under ``uris`` and write its files to ``out_dir``."""
    df = read_results(uris)
    ok, counts = ok_rows(df)
    if ok.empty:
        raise AnalyzeError(f"no rows with status 'ok' to analyse ({counts.describe()})")
    summary = summarize(ok)
    summary["pareto"] = pareto_front(summary)
    selections = select_best(summary, tolerance)
    table = paper_table(summary)

    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    table.to_csv(out_dir / "table.csv", index=False)
    (out_dir / "table.md").write_text(to_markdown(table) + "\n")
    (out_dir / "selections.md").write_text("\n".join(selection_lines(selections)) + "\n")
    pareto_cols = ["sweep_id", "mode", "label", "n_seeds", "acc_overall_mean", "acc_few_mean", "pareto"]
    summary[pareto_cols].to_csv(out_dir / "pareto.csv", index=False)

    plots = knob_plots(ok, summary, out_dir, seed=seed)
    plots.append(pareto_plot(summary, out_dir / "pareto_few_vs_overall.png"))
    analysis = Analysis(summary=summary, table=table, selections=selections, counts=counts,
                        plots=plots, out_dir=out_dir)
    _write_reports(analysis, uris, tolerance)
    return analysis


def stdout_text(a: Analysis) -> str:
    front = a.summary[a.summary["pareto"]].sort_values("acc_overall_mean")
    parts = [
        a.counts.describe(),
        "",
        "Test accuracy (%), mean ± std over seeds (Δ vs the sweep's base); * = on the few-vs-overall Pareto front",
        to_text(a.table),
        "",
        "Best configurations (chosen on validation, reported on test):",
        *selection_lines(a.selections),
        "",
        "Pareto front (test few vs overall, both maximised): "
        + "; ".join(f"{r['label']} [{r['sweep_id']}]" for _, r in front.iterrows()),
        "",
        f"Files written to {a.out_dir}",
    ]
    return "\n".join(parts)


def _write_reports(a: Analysis, uris: list[str], tolerance: float) -> None:
    plot_names = [p.name for p in a.plots]
    md = [
        "# explore sweep analysis",
        "",
        "Sources: " + ", ".join(f"`{u}`" for u in uris),
        "",
        f"{a.counts.describe()}. Statistics use ok rows only.",
        "",
        "## Results (test accuracy %, mean ± std over seeds, Δ vs base)",
        "",
        to_markdown(a.table),
        "",
        f"## Best configurations (tolerance {tolerance:g})",
        "",
        *[f"- {head}\n  - {choice.removeprefix('-> ')}"
          for head, choice in (entry.split("\n    ", 1) for entry in selection_lines(a.selections))],
        "",
        "## Plots",
        "",
        *[f"![{n}]({n})\n" for n in plot_names],
    ]
    (a.out_dir / "report.md").write_text("\n".join(md) + "\n")

    images = "\n".join(
        f"<figure><img alt='{html.escape(p.name)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(p.name)}</figcaption></figure>"
        for p in a.plots
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>explore sweep analysis</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:900px}</style>"
        "</head><body><h1>explore sweep analysis</h1>"
        f"<p>{html.escape(a.counts.describe())}</p>"
        f"{a.table.to_html(index=False, escape=True)}"
        f"<h2>Best configurations (tolerance {tolerance:g})</h2><pre>"
        f"{html.escape(chr(10).join(selection_lines(a.selections)))}</pre>"
        f"<h2>Plots</h2>{images}</body></html>"
    )
    (a.out_dir / "report.html").write_text(page)
