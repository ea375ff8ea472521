"""Sweep results as Parquet: the sweep's layout, row building, atomic writes, checked reads."""

from explore.results.layout import SweepLayout
from explore.results.reader import ReadResult, read_rows
from explore.results.rows import Provenance, build_row

__all__ = ["Provenance", "ReadResult", "SweepLayout", "build_row", "read_rows"]
