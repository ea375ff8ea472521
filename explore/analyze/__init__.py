"""Analysis of sweep results: ``python -m explore.analyze <results-uri> ...``.

Reads the Parquet rows a sweep writes (columns in ``explore.results.schema``), summarises
each configuration over seeds, compares it with its base model, picks the best
configurations on validation under stated rules, finds the few-vs-overall Pareto front,
and writes tables, plots and a report.
"""

from explore.analyze.load import AnalyzeError, find_result_files, read_results
from explore.analyze.report import Analysis, analyze
from explore.analyze.tables import Selection, pareto_front, select_best, summarize

__all__ = [
    "Analysis",
    "AnalyzeError",
    "Selection",
    "analyze",
    "find_result_files",
    "pareto_front",
    "read_results",
    "select_best",
    "summarize",
]
