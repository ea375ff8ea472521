"""Where a sweep's fixed cost goes: wall-clock marks at the end of each phase of the
driver (imports, config, Ray, prepare, trials, summary), written as JSON lines to the file
``EXPLORE_PHASE_LOG`` names when the driver ends. The overhead benchmark reads them beside
the trials' own start and end times (their rows); without the variable a mark is a list
append and nothing is written."""

from __future__ import annotations

import json
import os
import time

__all__ = ["PHASE_LOG_ENV", "mark", "write"]

PHASE_LOG_ENV = "EXPLORE_PHASE_LOG"

_marks: list[tuple[str, float]] = []


def mark(phase: str) -> None:
    """``phase`` ended now (Unix seconds: comparable across processes of one machine)."""
    _marks.append((phase, time.time()))


def write() -> None:
    """Append this process's marks to ``$EXPLORE_PHASE_LOG`` (if set), once."""
    path = os.environ.get(PHASE_LOG_ENV)
    if path and _marks:
        with open(path, "a") as f:
            for phase, at in _marks:
                f.write(json.dumps({"phase": phase, "at": at, "pid": os.getpid()}) + "\n")
    _marks.clear()
