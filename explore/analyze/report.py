"""The analysis end to end: read, group, compare, recommend, plot, and write the report.

Files written to the output directory (every accuracy in points):
``report.md`` and ``report.html`` (self-contained, PNGs embedded; both open with the answer),
``summary.csv`` (mean and std over seeds per configuration), ``verdicts.csv`` (paired
differences against the reference with 95% t intervals, test and validation),
``pareto.csv`` (validation means with test beside, front flagged), and per group
``group<N>_knob_*.png`` and ``group<N>_pareto.png``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from explore.analyze.answer import (
    DEFAULT_TOLERANCE,
    GroupResult,
    StatusCounts,
    analyse,
    answer,
    pareto_table,
    verdict_table,
)
from explore.analyze.load import AnalyzeError, load
from explore.analyze.summary import mean_std_table, to_markdown, to_text
from explore.analyze.verdicts import comparisons_frame
from explore.results.schema import METRIC_COLUMNS

MEAN_STD_CAPTION = "Accuracy (points), mean ± std over seeds (– with one seed); reference first"
VERDICT_CAPTION = ("Test difference against the reference (points): mean over seeds "
                   "[95% paired t interval]; better/worse: the interval excludes 0, unmarked: "
                   "no clear difference")
PARETO_CAPTION = "Pareto front of few vs overall on validation means (test beside)"


@dataclass(frozen=True)
class Analysis:
    """Everything an analysis found, for callers that want more than the files."""

    groups: list[GroupResult]
    counts: StatusCounts
    problems: list[str]
    """Result files left out, one line each."""
    tolerance: float
    sources: list[str]
    plots: dict[int, list[Path]] = field(default_factory=dict)
    """Group number → PNGs written (empty until :func:`write_outputs`)."""
    out_dir: Path | None = None


def check_tolerance(tolerance: float) -> None:
    if not 0 < tolerance < 100:
        raise AnalyzeError(f"--tolerance must be in (0, 100) points, got {tolerance:g}")


def run_analysis(uris: Sequence[str], tolerance: float = DEFAULT_TOLERANCE,
                 strict: bool = False) -> Analysis:
    """Read and analyse; writes nothing."""
    check_tolerance(tolerance)
    loaded = load(list(uris), strict=strict)
    groups, counts = analyse(loaded.rows, loaded.sweeps, tolerance)
    if not groups:
        raise AnalyzeError(f"no rows with status 'ok' to analyse ({counts.describe()})")
    return Analysis(groups, counts, loaded.problems, tolerance, list(uris))


def analyze(uris: Sequence[str], out_dir: Path, tolerance: float = DEFAULT_TOLERANCE,
            seed: int = 0, strict: bool = False) -> Analysis:
    """Run the whole analysis on the results under ``uris`` and write its files to ``out_dir``."""
    return write_outputs(run_analysis(uris, tolerance, strict), out_dir, seed)


def best_command(a: Analysis) -> str:
    """The command that reruns the recommended configuration with more seeds.

    Raises :class:`AnalyzeError` when there is not exactly one comparability group, when no
    configuration qualifies (no fallback to another rule: a script running this line must
    only ever run what the stated rule chose), or when the sweep's name or storage is unknown.
    """
    if len(a.groups) != 1:
        raise AnalyzeError(
            f"{len(a.groups)} comparability groups found; --best-command needs one: pass the "
            "directory of one sweep (or of sweeps with the same data, reference and mode)")
    g = a.groups[0]
    rec = g.recommendation
    if rec.chosen is None:
        raise AnalyzeError(f"no recommendation, nothing to rerun: {rec.reason}")
    command = g.commands.get(rec.chosen)
    if command is None or "<space>" in command or "<storage_uri>" in command:
        raise AnalyzeError(
            f"cannot build the command for {g.line(rec.chosen)['label']}: the sweep's "
            "sweep.json was not found next to its results (analyse the sweep directory)")
    return command


def _points_columns(summary: pd.DataFrame) -> pd.DataFrame:
    keep = ["config", "sweep_id", "role", "method", "base", "mode", "knobs", "label",
            "n_seeds", "seeds", "n_rows", "deterministic"]
    out = summary[keep].copy()
    for m in METRIC_COLUMNS:
        out[f"{m}_mean_pts"] = summary[f"{m}_mean"]
        out[f"{m}_std_pts"] = summary[f"{m}_std"]
    out["pareto_val"] = summary["pareto"]
    return out


def write_outputs(a: Analysis, out_dir: Path, seed: int = 0) -> Analysis:
    """Write the CSVs, plots and reports of ``a`` to ``out_dir``; returns ``a`` with them."""
    # matplotlib loads here, not on import: the sweep driver imports this package for
    # sweep_summary and draws nothing
    from explore.analyze.plots import knob_plots, pareto_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    summaries, verdicts, fronts = [], [], []
    plots: dict[int, list[Path]] = {}
    for g in a.groups:
        n = g.group.number
        summaries.append(_points_columns(g.summary).assign(group=n))
        verdicts.append(comparisons_frame(g.comparisons).assign(group=n))
        s = g.summary
        fronts.append(pd.DataFrame({
            "group": n, "sweep_id": s["sweep_id"], "configuration": s["label"],
            "val_few_pts": s["val_acc_few_mean"], "val_overall_pts": s["val_acc_overall_mean"],
            "test_few_pts": s["acc_few_mean"], "test_overall_pts": s["acc_overall_mean"],
            "on_front": s["pareto"]}))
        plots[n] = knob_plots(g, out_dir, rng)
        plots[n].append(pareto_plot(g, out_dir / f"group{n}_pareto.png"))
    pd.concat(summaries, ignore_index=True).to_csv(out_dir / "summary.csv", index=False)
    pd.concat(verdicts, ignore_index=True).to_csv(out_dir / "verdicts.csv", index=False)
    pd.concat(fronts, ignore_index=True).to_csv(out_dir / "pareto.csv", index=False)
    done = Analysis(a.groups, a.counts, a.problems, a.tolerance, a.sources, plots, out_dir)
    (out_dir / "report.md").write_text(report_markdown(done))
    (out_dir / "report.html").write_text(report_html(done))
    return done


def groups_sentence(a: Analysis) -> str:
    n = len(a.groups)
    if n == 1:
        return "Found 1 comparability group."
    return (f"Found {n} comparability groups (same dataset, features, reference, mode and "
            "split thresholds); each is analysed on its own and never ranked against another.")


def _group_heading(a: Analysis, g: GroupResult) -> str:
    sweeps = ", ".join(g.group.sweeps)
    return (f"Group {g.group.number} of {len(a.groups)}: {g.group.title()} "
            f"(sweep{'s' * (len(g.group.sweeps) > 1)} {sweeps})")


def stdout_text(a: Analysis) -> str:
    """What ``python -m explore.analyze`` prints: the answer first, then the tables."""
    out = [groups_sentence(a), a.counts.describe(), ""]
    for g in a.groups:
        out += [f"== {_group_heading(a, g)} ==", *answer(g).lines(), ""]
        if g.comparisons:
            out += [VERDICT_CAPTION + ":", to_text(verdict_table(g)), ""]
        out += [MEAN_STD_CAPTION + ":",
                to_text(mean_std_table(g.summary, show_sweep=g.multi_sweep)), "",
                PARETO_CAPTION + ":", to_text(pareto_table(g)), ""]
    if a.out_dir is not None:
        out.append(f"Files written to {a.out_dir}")
    return "\n".join(out).rstrip()


def report_markdown(a: Analysis) -> str:
    md = ["# explore sweep analysis", "", "## Answer", "", groups_sentence(a), ""]
    for g in a.groups:
        ans = answer(g)
        if len(a.groups) > 1:
            md += [f"### {_group_heading(a, g)}", ""]
        md += [f"**{ans.headline}**", ""]
        if ans.details:
            md += ["```text", *ans.details, "```", ""]
        if ans.command:
            md += ["Rerun it with more seeds:", "", "```bash", ans.command, "```", ""]
            if ans.command_note:
                md += [f"({ans.command_note})", ""]
        md += [*ans.statements, "", f"*{ans.rule}*", ""]
    for g in a.groups:
        md += [f"## {_group_heading(a, g)}", ""]
        if g.comparisons:
            md += [f"Table: {VERDICT_CAPTION}", "", to_markdown(verdict_table(g)), ""]
        md += [f"Table: {MEAN_STD_CAPTION}", "",
               to_markdown(mean_std_table(g.summary, show_sweep=g.multi_sweep)), "",
               f"Table: {PARETO_CAPTION}", "", to_markdown(pareto_table(g)), ""]
        md += [f"![{p.name}]({p.name})\n" for p in a.plots.get(g.group.number, [])]
    md += ["## Data", "", "Sources: " + ", ".join(f"`{u}`" for u in a.sources), "",
           f"{a.counts.describe()}. Only ok rows count.", ""]
    if a.problems:
        md += ["Files left out:", "", *[f"- {p}" for p in a.problems], ""]
    return "\n".join(md)


def _table(df: pd.DataFrame, caption: str) -> dict[str, object]:
    return {"caption": caption, "columns": [str(c) for c in df.columns],
            "rows": [[str(v) for v in r] for r in df.itertuples(index=False)]}


def _png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def report_html(a: Analysis) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("explore.analyze", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    groups = []
    for g in a.groups:
        tables = []
        if g.comparisons:
            tables.append(_table(verdict_table(g), VERDICT_CAPTION))
        tables.append(_table(mean_std_table(g.summary, show_sweep=g.multi_sweep),
                             MEAN_STD_CAPTION))
        tables.append(_table(pareto_table(g), PARETO_CAPTION))
        groups.append({
            "heading": _group_heading(a, g),
            "answer": answer(g),
            "chosen": g.recommendation.chosen is not None,
            "tables": tables,
            "plots": [{"name": p.name, "data": _png(p)} for p in a.plots.get(g.group.number, [])],
        })
    return env.get_template("report.html.j2").render(
        groups_sentence=groups_sentence(a), several=len(a.groups) > 1, groups=groups,
        sources=a.sources, counts=a.counts.describe(), problems=a.problems,
    )
