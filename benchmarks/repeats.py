"""Benchmark 1 — AlphaNet's R seeds trained as one batched model vs R sequential runs.

Both paths are ``train_alphanet``: once with all seeds, once per seed. The results
must agree (selected epochs identical, α̃ and test accuracies within float rounding),
so the speed-up is pure batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks._timing import Figure, Timed, fmt_times, speedup, time_side_by_side
from explore.methods.alphanet import AlphaNetParams
from explore.recipes.alphanet import AlphaNetCorrections, evaluate_alphanet, train_alphanet
from explore.training.outcome import SeedResult
from explore.training.posthoc import PosthocInputs

TARGET = 5.0
"""Wanted speed-up of batched over sequential for R = 10."""


@dataclass(frozen=True)
class RepeatsReport:
    label: str
    num_seeds: int
    batched: Timed
    sequential: Timed
    max_abs_acc_diff: float
    """Largest |Δ| over seeds and test metrics between the two paths."""
    max_abs_alpha_diff: float
    """Largest |Δα̃| at the selected epochs."""

    @property
    def speedup(self) -> float:
        return speedup(self.sequential, self.batched)

    def figures(self) -> list[Figure]:
        target = self.num_seeds == 10
        return [
            Figure(f"batched vs sequential, R={self.num_seeds} ({self.label})", self.speedup, "x",
                   f">= {TARGET:g}x" if target else "", (self.speedup >= TARGET) if target else None,
                   f"batched {fmt_times(self.batched)}, sequential {fmt_times(self.sequential)}"),
            Figure("  max |Δ test accuracy| batched vs sequential", self.max_abs_acc_diff, ""),
            Figure("  max |Δ α̃| at the selected epochs", self.max_abs_alpha_diff, ""),
        ]


def compare_results(batched: list[SeedResult], sequential: list[SeedResult]) -> float:
    """Max |Δ| of the test metrics; raises AssertionError when the runs disagree."""
    worst = 0.0
    for b, s in zip(batched, sequential, strict=True):
        if b.best_epoch != s.best_epoch:
            raise AssertionError(f"seed {b.seed}: batched selected epoch {b.best_epoch}, sequential {s.best_epoch}")
        diff = max(abs(b.test[m] - s.test[m]) for m in b.test)
        if not diff <= 1e-6:
            raise AssertionError(f"seed {b.seed}: test metrics differ by {diff:.3g} (> 1e-6)")
        worst = max(worst, diff)
    return worst


def alpha_diff(batched: AlphaNetCorrections, sequential: list[AlphaNetCorrections]) -> float:
    return max(float(np.abs(batched.alpha_tilde[r] - s.alpha_tilde[0]).max()) for r, s in enumerate(sequential))


def bench_repeats(inputs: PosthocInputs, params: AlphaNetParams, num_seeds: int, repeats: int,
                  label: str) -> RepeatsReport:
    """Time ``fit_alphanet`` with all seeds against one call per seed; check they agree.

    ``fit_alphanet`` is ``evaluate_alphanet(train_alphanet(...))``; the two steps are
    called here directly so that the selected α̃ can be compared too.
    """
    seeds = list(range(num_seeds))

    def run(seeds: list[int]) -> tuple[AlphaNetCorrections, list[SeedResult]]:
        trained = train_alphanet(inputs, params, seeds)  # fit_alphanet = evaluate ∘ train
        return trained, evaluate_alphanet(inputs, trained)

    timed = time_side_by_side(
        {"batched": lambda: run(seeds), "sequential": lambda: [run([s]) for s in seeds]}, repeats
    )
    batched, batched_results = timed["batched"].value
    sequential = [t for t, _ in timed["sequential"].value]
    acc_diff = compare_results(batched_results, [r[0] for _, r in timed["sequential"].value])
    return RepeatsReport(label, num_seeds, timed["batched"], timed["sequential"], acc_diff,
                         alpha_diff(batched, sequential))
