"""Analysis of sweep results: ``python -m explore.analyze <results-uri> ...``.

Answers the question every sweep is run for: which configuration should I use, and does
the method beat its reference on the few classes without losing overall accuracy? Reads the
Parquet rows a sweep writes (``explore.results.reader``), groups comparable sweeps, compares
every configuration with its reference on the same seeds (paired t intervals), recommends
one by a stated rule chosen on validation and reported on test, and writes tables, plots
and a report that opens with the answer. :func:`sweep_summary` is the text a sweep prints
when it ends, made by the same code.
"""

from explore.analyze.answer import (
    Answer,
    GroupResult,
    StatusCounts,
    analyse,
    answer,
    answer_lines,
    sweep_summary,
)
from explore.analyze.commands import rerun_command
from explore.analyze.groups import Group, assign_groups
from explore.analyze.load import AnalyzeError, Loaded, SweepMeta, load, normalize
from explore.analyze.report import Analysis, analyze, best_command, run_analysis
from explore.analyze.summary import mean_std_table, pareto_front, summarize
from explore.analyze.verdicts import (
    Comparison,
    PairedInterval,
    Recommendation,
    compare,
    paired_interval,
    recommend,
)

__all__ = [
    "Analysis",
    "AnalyzeError",
    "Answer",
    "Comparison",
    "Group",
    "GroupResult",
    "Loaded",
    "PairedInterval",
    "Recommendation",
    "StatusCounts",
    "SweepMeta",
    "analyse",
    "analyze",
    "answer",
    "answer_lines",
    "assign_groups",
    "best_command",
    "compare",
    "load",
    "mean_std_table",
    "normalize",
    "paired_interval",
    "pareto_front",
    "recommend",
    "rerun_command",
    "run_analysis",
    "summarize",
    "sweep_summary",
]
