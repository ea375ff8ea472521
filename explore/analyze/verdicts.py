"""Paired verdicts against the reference, and the recommendation rule.

Every configuration is compared with its reference (the sweep's reference rows of the
method its ``base`` names) on the seeds both have: per seed the difference configuration −
reference, in points, for the few, medium, many and overall splits (test and validation).
The 95% interval of the mean difference is the paired Student t interval over seeds,
``mean ± t(0.975, n−1) · sd / √n`` (``scipy.stats.ttest_rel(...).confidence_interval``;
t(0.975, 2) = 4.303 for 3 seeds). Verdict per split: "better" when the interval lies above
0, "worse" when below, else "no clear difference"; with one paired seed there is no
interval ("one seed: no interval"). When every difference is the same (sd = 0, e.g. two
deterministic models) the interval is that single value.

A deterministic reference (an imported classifier: constant over seeds) is paired with
every seed of the configuration. Otherwise only common seeds are paired, and the
comparison says how many of each side's seeds that was.

Recommendation, chosen on validation and reported on test: among the configurations of a
comparability group whose validation overall accuracy is at least their reference's minus
T points (mean paired difference), the highest mean validation few accuracy (ties: higher
validation overall, then the label). A configuration *beats the base on few* when its
paired test interval on few is "better" and its mean test overall difference is ≥ −T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from explore.analyze.load import CONFIGURATION, REFERENCE
from explore.analyze.summary import POINTS, fmt_points

CONFIDENCE = 0.95
SPLITS: tuple[tuple[str, str], ...] = (
    ("few", "acc_few"), ("medium", "acc_medium"), ("many", "acc_many"), ("overall", "acc_overall"),
)
BETTER = "better"
WORSE = "worse"
UNCLEAR = "no clear difference"
ONE_SEED = "one seed: no interval"
NO_PAIRS = "no common seeds"
NO_REFERENCE = "no reference rows"
_EPS = 1e-9  # points; differences of fractions ×100 carry ~1e-14 of rounding


@dataclass(frozen=True)
class PairedInterval:
    """Mean paired difference (points) over ``n`` seeds with its 95% t interval."""

    n: int
    mean: float
    low: float
    high: float
    """NaN when there is no interval (fewer than 2 pairs)."""
    verdict: str

    def text(self) -> str:
        """``+5.00 [+3.20, +6.80] better`` / ``+5.00 (one seed: no interval)``."""
        if self.n == 0:
            return self.verdict
        if math.isnan(self.low):
            return f"{fmt_points(self.mean, signed=True)} ({self.verdict})"
        return f"{self.interval()} {self.verdict}"

    def interval(self) -> str:
        """``+5.00 [+3.20, +6.80]``."""
        return (f"{fmt_points(self.mean, signed=True)} [{fmt_points(self.low, signed=True)}, "
                f"{fmt_points(self.high, signed=True)}]")

    def cell(self) -> str:
        """Compact table cell: the interval, marked ``better`` / ``worse`` when it excludes 0,
        unmarked when it holds 0 (no clear difference)."""
        if self.verdict == UNCLEAR:
            return self.interval()
        if self.verdict == ONE_SEED:
            return f"{fmt_points(self.mean, signed=True)} (one seed)"
        return self.text()


def paired_interval(config: np.ndarray, reference: np.ndarray,
                    confidence: float = CONFIDENCE) -> PairedInterval:
    """The paired t interval of ``config − reference`` (fractions in, points out); pairs
    with a missing value on either side are dropped."""
    c = POINTS * np.asarray(config, dtype=float)
    r = POINTS * np.asarray(reference, dtype=float)
    keep = ~(np.isnan(c) | np.isnan(r))
    c, r = c[keep], r[keep]
    d = c - r
    n = len(d)
    if n == 0:
        return PairedInterval(0, math.nan, math.nan, math.nan, NO_PAIRS)
    mean = float(d.mean())
    if n == 1:
        return PairedInterval(1, mean, math.nan, math.nan, ONE_SEED)
    if np.ptp(d) == 0:
        low = high = mean  # no spread: t interval of width 0 (scipy would return NaN)
    else:
        half = t_quantile((1 + confidence) / 2, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
        low, high = mean - half, mean + half
    verdict = BETTER if low > 0 else WORSE if high < 0 else UNCLEAR
    return PairedInterval(n, mean, low, high, verdict)


def t_quantile(q: float, df: int) -> float:
    """Student's t quantile: the paired interval's (what ``scipy.stats.ttest_rel`` gives),
    from ``scipy.special``, which imports in a fraction of ``scipy.stats``'s second."""
    from scipy import special

    return float(special.stdtrit(df, q))


@dataclass(frozen=True)
class Comparison:
    """One configuration against its reference, per split, on test and validation."""

    config: str
    label: str
    sweep_id: str
    reference: str
    """The reference method's name (the configuration's ``base``)."""
    reference_config: str | None
    seeds: tuple[int, ...]
    reference_seeds: tuple[int, ...]
    paired_seeds: tuple[int, ...]
    reference_deterministic: bool
    test: dict[str, PairedInterval]
    val: dict[str, PairedInterval]

    def pairing(self) -> str:
        """How the seeds were paired, in words."""
        if self.reference_config is None:
            return f"no reference rows for {self.reference} in sweep {self.sweep_id}"
        n = len(self.paired_seeds)
        if self.reference_deterministic:
            return (f"paired on {n} seed{'s' * (n != 1)} (reference deterministic: "
                    "the same on every seed)")
        if n == len(self.seeds) == len(self.reference_seeds):
            return f"paired on {n} seed{'s' * (n != 1)}"
        missing = sorted(set(self.seeds) - set(self.reference_seeds))
        extra = f"; reference lacks seed(s) {', '.join(map(str, missing))}" if missing else ""
        return (f"paired on {n} common seed{'s' * (n != 1)} of {len(self.seeds)} "
                f"(reference has {len(self.reference_seeds)}{extra})")

    def beats_on_few(self, tolerance: float) -> bool:
        """Test few interval above 0 and mean test overall loss at most ``tolerance`` points."""
        few, overall = self.test["few"], self.test["overall"]
        return few.verdict == BETTER and overall.mean >= -tolerance - _EPS


def _reference_for(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    refs = summary[(summary["role"] == REFERENCE) & (summary["sweep_id"] == row["sweep_id"])
                   & (summary["method"] == row["base"])]
    return None if refs.empty else refs.iloc[0]


def compare(summary: pd.DataFrame, seeds: pd.DataFrame) -> dict[str, Comparison]:
    """A :class:`Comparison` for every configuration line of ``summary``; ``seeds`` is
    :func:`explore.analyze.summary.per_seed` of the same rows. Keyed by ``config``."""
    out: dict[str, Comparison] = {}
    for _, row in summary[summary["role"] == CONFIGURATION].iterrows():
        ref = _reference_for(summary, row)
        mine = seeds.loc[row["config"]]
        config_seeds = tuple(int(s) for s in mine.index)
        if ref is None:
            empty = PairedInterval(0, math.nan, math.nan, math.nan, NO_REFERENCE)
            out[row["config"]] = Comparison(
                row["config"], row["label"], str(row["sweep_id"]), str(row["base"]), None,
                config_seeds, (), (), False,
                {s: empty for s, _ in SPLITS}, {s: empty for s, _ in SPLITS})
            continue
        theirs = seeds.loc[ref["config"]]
        deterministic = bool(ref["deterministic"])
        if deterministic:
            # constant over seeds: every configuration seed pairs with the same value
            paired = config_seeds
            ref_values = pd.DataFrame([theirs.mean()] * len(paired), index=list(paired))
        else:
            paired = tuple(sorted(set(config_seeds) & {int(s) for s in theirs.index}))
            ref_values = theirs.loc[list(paired)]
        my_values = mine.loc[list(paired)]
        results = {
            scope: {
                split: paired_interval(my_values[f"{prefix}{metric}"].to_numpy(float),
                                       ref_values[f"{prefix}{metric}"].to_numpy(float))
                for split, metric in SPLITS
            }
            for scope, prefix in (("test", ""), ("val", "val_"))
        }
        out[row["config"]] = Comparison(
            row["config"], row["label"], str(row["sweep_id"]), str(row["base"]),
            str(ref["config"]), config_seeds, tuple(int(s) for s in theirs.index), paired,
            deterministic, results["test"], results["val"])
    return out


def comparisons_frame(comparisons: dict[str, Comparison]) -> pd.DataFrame:
    """Long table, one line per (configuration, scope, split): n, mean, low, high, verdict."""
    records = []
    for c in comparisons.values():
        for scope, results in (("test", c.test), ("val", c.val)):
            for split, r in results.items():
                records.append({
                    "sweep_id": c.sweep_id, "configuration": c.label, "reference": c.reference,
                    "scope": scope, "split": split, "n_paired": r.n, "diff_mean_pts": r.mean,
                    "ci95_low_pts": r.low, "ci95_high_pts": r.high, "verdict": r.verdict,
                })
    return pd.DataFrame.from_records(records)


def rule_text(tolerance: float) -> str:
    return (
        "Recommendation rule (chosen on validation, reported on test): among the "
        "configurations whose validation overall accuracy is at least their reference's "
        f"minus {points_text(tolerance)} (mean paired difference over seeds), the one with the "
        "highest mean validation few accuracy (ties: higher validation overall, then name). "
        "A configuration beats the base on few when the 95% paired t interval of its test few "
        "difference lies above 0 and its mean test overall difference is at least "
        f"-{points_text(tolerance)}."
    )


def points_text(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


def no_beat_sentence(tolerance: float) -> str:
    return ("No configuration beats the base on few without losing more than "
            f"{points_text(tolerance)} overall.")


@dataclass(frozen=True)
class Recommendation:
    """What the rule picked in one comparability group, and why nothing was when not."""

    tolerance: float
    chosen: str | None
    """The chosen configuration's ``config`` key; None when none qualifies."""
    reason: str
    """Why nothing qualifies (empty when something does)."""
    eligible: tuple[str, ...]
    beating: tuple[str, ...]
    """Configurations that beat the base on few on test (whether chosen or not)."""


def recommend(summary: pd.DataFrame, comparisons: dict[str, Comparison],
              tolerance: float) -> Recommendation:
    """Apply the rule (module docstring) to the configuration lines of ``summary``."""
    if not 0 < tolerance < 100:
        raise ValueError(f"tolerance must be in (0, 100) points, got {tolerance:g}")
    configs = summary[summary["role"] == CONFIGURATION]
    beating = tuple(c for c in configs["config"]
                    if c in comparisons and comparisons[c].beats_on_few(tolerance))
    if configs.empty:
        return Recommendation(tolerance, None, "no configurations, only reference rows", (),
                              beating)
    delta = configs["config"].map(
        lambda c: comparisons[c].val["overall"].mean if c in comparisons else math.nan)
    comparable = configs[delta.notna() & configs["val_acc_few_mean"].notna()]
    if comparable.empty:
        return Recommendation(
            tolerance, None,
            "no configuration has validation accuracies paired with its reference's "
            "(no validation split, or no reference rows on common seeds)", (), beating)
    eligible = comparable[delta[comparable.index] >= -tolerance - _EPS]
    if eligible.empty:
        return Recommendation(
            tolerance, None,
            f"no configuration qualifies: each loses more than {points_text(tolerance)} of "
            "validation overall accuracy against its reference", (), beating)
    ranked = eligible.sort_values(["val_acc_few_mean", "val_acc_overall_mean", "label"],
                                  ascending=[False, False, True], kind="stable")
    return Recommendation(tolerance, str(ranked.iloc[0]["config"]), "",
                          tuple(str(c) for c in eligible["config"]), beating)
