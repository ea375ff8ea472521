"""The answer to "which configuration should I use, and does it beat the reference on few?".

:func:`analyse` turns normalised rows into one :class:`GroupResult` per comparability group
(summary, paired comparisons, recommendation, Pareto front on validation means, rerun
command); :func:`answer_lines` words a group's answer; :func:`sweep_summary` is the text a
sweep prints when it ends, made from the same pieces as the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from explore.analyze.commands import rerun_command
from explore.analyze.groups import Group, assign_groups
from explore.analyze.load import CONFIGURATION, SweepMeta, normalize
from explore.analyze.summary import (
    fmt_points,
    mean_std_table,
    pareto_front,
    per_seed,
    summarize,
    to_text,
    with_configurations,
)
from explore.analyze.verdicts import (
    ONE_SEED,
    SPLITS,
    Comparison,
    Recommendation,
    compare,
    no_beat_sentence,
    points_text,
    recommend,
    rule_text,
)

DEFAULT_TOLERANCE = 1.0
"""Points of validation overall accuracy a recommendation may lose against its reference."""


@dataclass(frozen=True)
class StatusCounts:
    """How many rows were read and how many were left out for their status."""

    total: int
    ok: int
    excluded: dict[str, int]

    def describe(self) -> str:
        if not self.excluded:
            return f"{self.total} rows, all ok"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.excluded.items()))
        return f"{self.total} rows: {self.ok} ok; left out of every statistic: {parts}"


def ok_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, StatusCounts]:
    """Rows with status "ok" (error and stopped rows never count), and the counts."""
    ok = (rows["status"] == "ok").to_numpy()
    excluded = {str(s): int(n) for s, n in rows.loc[~ok, "status"].value_counts().items()}
    return rows[ok].copy(), StatusCounts(len(rows), int(ok.sum()), excluded)


@dataclass(frozen=True)
class GroupResult:
    group: Group
    rows: pd.DataFrame
    """The group's ok rows, with their configuration columns."""
    summary: pd.DataFrame
    """Display order; points; plus ``pareto`` (front of validation few vs overall means)."""
    comparisons: dict[str, Comparison]
    recommendation: Recommendation
    commands: dict[str, str]
    """config → rerun command, for every configuration whose sweep is known."""
    command_notes: dict[str, str]
    """config → a caveat about its command (overrides not recorded)."""

    @property
    def multi_sweep(self) -> bool:
        return len(self.group.sweeps) > 1

    def line(self, config: str) -> pd.Series:
        return self.summary[self.summary["config"] == config].iloc[0]


def analyse(rows: pd.DataFrame, sweeps: dict[str, SweepMeta] | None = None,
            tolerance: float = DEFAULT_TOLERANCE) -> tuple[list[GroupResult], StatusCounts]:
    """Everything the report and the closing table say, per comparability group."""
    rows = normalize(rows)
    ok, counts = ok_rows(rows)
    if ok.empty:
        return [], counts
    ok = with_configurations(ok)
    group_of, groups = assign_groups(ok)
    seeds = per_seed(ok)
    results = []
    for group in groups:
        mine = ok[group_of == group.number]
        summary = summarize(mine)
        summary["pareto"] = pareto_front(summary, "val_acc_overall_mean", "val_acc_few_mean")
        comparisons = compare(summary, seeds)
        rec = recommend(summary, comparisons, tolerance)
        commands: dict[str, str] = {}
        notes: dict[str, str] = {}
        for _, line in summary[summary["role"] == CONFIGURATION].iterrows():
            meta = (sweeps or {}).get(str(line["sweep_id"]))
            if meta is None:
                continue
            commands[line["config"]] = rerun_command(meta, line["knob_items"])
            if meta.overrides is None:
                notes[line["config"]] = ("the sweep's overrides are not recorded in its "
                                         "sweep.json: add the ones it was started with")
        results.append(GroupResult(group, mine, summary, comparisons, rec, commands, notes))
    return results, counts


@dataclass(frozen=True)
class Answer:
    """A group's answer, in pieces the text, Markdown and HTML renderings arrange."""

    headline: str
    """``Recommended: <label>  (<n> seeds)`` or ``No recommendation: <reason>.``"""
    details: list[str]
    """Validation means that chose it, how seeds were paired, one line per test split."""
    command: str | None
    command_note: str | None
    statements: list[str]
    """Whether anything beats the base on few (plain sentences)."""
    rule: str

    def lines(self) -> list[str]:
        out = [self.headline, *(f"  {d}" for d in self.details)]
        if self.command:
            out += ["  rerun it with more seeds:", f"    {self.command}"]
            if self.command_note:
                out.append(f"    ({self.command_note})")
        return out + self.statements + [self.rule]


def answer(g: GroupResult) -> Answer:
    """The group's answer: the recommendation with its paired test intervals and rerun
    command, whether anything beats the base on few, and the rule."""
    rec = g.recommendation
    details: list[str] = []
    command = note = None
    if rec.chosen is None:
        headline = f"No recommendation: {rec.reason}."
    else:
        line = g.line(rec.chosen)
        c = g.comparisons[rec.chosen]
        where = f"sweep {line['sweep_id']}, " if g.multi_sweep else ""
        n = int(line["n_seeds"])
        headline = f"Recommended: {line['label']}  ({where}{n} seed{'s' * (n != 1)})"
        details.append(
            f"chosen on validation: few {fmt_points(line['val_acc_few_mean'])} "
            f"({fmt_points(c.val['few'].mean, signed=True)} vs {c.reference}), overall "
            f"{fmt_points(line['val_acc_overall_mean'])} "
            f"({fmt_points(c.val['overall'].mean, signed=True)} vs {c.reference})")
        details.append(f"test vs {c.reference}, {c.pairing()}; difference in points "
                       "[95% paired t interval] verdict:")
        details += [f"  {split:<8}{c.test[split].text()}" for split, _ in SPLITS]
        command = g.commands.get(rec.chosen)
        note = g.command_notes.get(rec.chosen)
    return Answer(headline, details, command, note, beat_lines(g), rule_text(rec.tolerance))


def answer_lines(g: GroupResult) -> list[str]:
    """:func:`answer` as plain text lines."""
    return answer(g).lines()


def beat_lines(g: GroupResult) -> list[str]:
    """Whether any configuration beats the base on few (test), in plain sentences."""
    rec = g.recommendation
    if not rec.beating:
        out = [no_beat_sentence(rec.tolerance)]
        configs = list(g.comparisons.values())
        chosen_one_seed = (rec.chosen is not None
                           and g.comparisons[rec.chosen].test["few"].verdict == ONE_SEED)
        if chosen_one_seed or (configs and all(c.test["few"].verdict == ONE_SEED
                                               for c in configs)):
            out.append("(With one seed there is no interval: rerun with more seeds to tell.)")
        return out
    names = ", ".join(g.comparisons[c].label for c in rec.beating)
    within = f"without losing more than {points_text(rec.tolerance)} overall"
    if rec.chosen in rec.beating:
        return [f"The recommended configuration beats the base on few {within} (test). "
                + f"All that do: {names}."]
    return [f"Configurations that beat the base on few on test {within}: {names} (not "
            + "recommended: the choice is made on validation, where they do not meet the rule "
            + "or rank lower)."]


def verdict_table(g: GroupResult) -> pd.DataFrame:
    """Per configuration: seeds paired, then per split the test difference with its
    interval and verdict, and whether its validation overall is within the tolerance."""
    records = []
    for _, line in g.summary[g.summary["role"] == CONFIGURATION].iterrows():
        c = g.comparisons[line["config"]]
        rec: dict[str, object] = {"configuration": line["label"]}
        if g.multi_sweep:
            rec["sweep"] = line["sweep_id"]
        rec["paired seeds"] = len(c.paired_seeds)
        for split, _ in SPLITS:
            rec[split] = c.test[split].cell()
        rec["val overall Δ"] = fmt_points(c.val["overall"].mean, signed=True)
        rec["eligible"] = "yes" if line["config"] in g.recommendation.eligible else "no"
        records.append(rec)
    return pd.DataFrame.from_records(records)


def pareto_table(g: GroupResult) -> pd.DataFrame:
    """The configurations (and references) on the validation front, with test beside."""
    front = g.summary[g.summary["pareto"]].sort_values("val_acc_overall_mean")
    out = pd.DataFrame({"configuration": front["label"]})
    if g.multi_sweep:
        out["sweep"] = front["sweep_id"]
    for col, title in (("val_acc_few_mean", "val few"), ("val_acc_overall_mean", "val overall"),
                       ("acc_few_mean", "test few"), ("acc_overall_mean", "test overall")):
        out[title] = [fmt_points(v) for v in front[col]]
    return out.reset_index(drop=True)


def sweep_summary(rows: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """The text a sweep prints when it ends: the answer (recommendation, paired verdicts on
    test, whether anything beats the base on few) and the mean ± std table over seeds, in
    points, reference first; std "–" with one seed. Same code as the report's.

    ``rows`` are the sweep's result rows (any status; only ok rows count)."""
    if not 0 < tolerance < 100:
        raise ValueError(f"tolerance must be in (0, 100) points, got {tolerance:g}")
    results, counts = analyse(rows, None, tolerance)
    if not results:
        return f"No ok rows to summarise ({counts.describe()})."
    out: list[str] = []
    for g in results:
        if len(results) > 1:
            out += [f"Group {g.group.number} of {len(results)}: {g.group.title()}", ""]
        out += answer_lines(g)
        out += ["", "Accuracy (points), mean ± std over seeds (– with one seed):",
                to_text(mean_std_table(g.summary, show_sweep=g.multi_sweep)), ""]
    if counts.excluded:
        out.append(counts.describe())
    out.append("python -m explore.analyze <results URI> --best-command prints the command that "
               "reruns the recommendation with more seeds.")
    return "\n".join(out)
