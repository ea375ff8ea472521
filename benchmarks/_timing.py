"""Side-by-side timing: interleaved repeats, medians, ratios.

The benchmark machines are small and shared, so a single wall time says little. Every
figure is a ratio of two code paths timed in the same run, alternately (A, B, B, A, …)
so that a burst of load from elsewhere hits both, and summarised by medians.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timed:
    """Wall times (seconds) of one code path over the repeats, and its last return value."""

    seconds: list[float] = field(default_factory=list)
    value: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS has none): other jobs on the
    machine show up in it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def time_side_by_side(paths: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timed]:
    """Run every path ``repeats`` times, alternating their order each round."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    out = {name: Timed() for name in paths}
    names = list(paths)
    for i in range(repeats):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            value = paths[name]()
            out[name].seconds.append(time.perf_counter() - start)
            out[name].value = value
    return out


def speedup(slow: Timed, fast: Timed) -> float:
    """How many times faster ``fast`` is than ``slow``: the median over rounds of the
    per-round ratio (both paths of a round ran back to back, under the same load)."""
    if len(slow.seconds) != len(fast.seconds):
        return slow.median / fast.median
    return statistics.median(s / f for s, f in zip(slow.seconds, fast.seconds))


@dataclass(frozen=True)
class Figure:
    """One reported number, with its target when it has one."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def line(self) -> str:
        verdict = "" if self.met is None else ("  [target met]" if self.met else "  [target MISSED]")
        target = f"  (target {self.target})" if self.target else ""
        note = f"  — {self.note}" if self.note else ""
        return f"  {self.name:<46} {self.value:>10.4g} {self.unit:<6}{target}{verdict}{note}"


def fmt_times(t: Timed) -> str:
    return "[" + ", ".join(f"{s:.2f}" for s in t.seconds) + "] s"
