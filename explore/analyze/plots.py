"""PNG plots: accuracy versus each varying knob with bootstrap CIs, and the few-vs-overall
Pareto scatter.

Knob plots are drawn per (sweep, mode, method). When a method varies several knobs, the
other knobs are held at the values of its best-validation-overall configuration, so each
curve is a real one-knob slice; when that slice has fewer than two knob values the rows are
pooled over the other knobs, and the title says which was done.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from explore.analyze.tables import format_knob, is_null  # noqa: E402
from explore.results.schema import KNOB_COLUMNS  # noqa: E402

SPLIT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("acc_many", "many", "tab:blue"),
    ("acc_medium", "medium", "tab:orange"),
    ("acc_few", "few", "tab:red"),
    ("acc_overall", "overall", "black"),
)
CATEGORICAL_KNOBS: frozenset[str] = frozenset({"distance"})


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds. With one value the interval
    collapses onto it (no spread can be estimated)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values[0]), float(values[0])
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _slice_for_knob(rows: pd.DataFrame, knob: str, varying: list[str],
                    best: pd.Series | None) -> tuple[pd.DataFrame, str]:
    others = [k for k in varying if k != knob]
    if others and best is not None:
        mask = np.ones(len(rows), dtype=bool)
        for k in others:
            mask &= rows[k].astype(object).to_numpy() == best[k]
        fixed = rows[mask]
        if fixed[knob].nunique() >= 2:
            held = ", ".join(f"{k}={format_knob(best[k])}" for k in others)
            return fixed, f"other knobs at best-val config: {held}"
    return rows, ("pooled over other knobs" if others else "")


def knob_plots(ok: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, seed: int = 0) -> list[Path]:
    """One PNG per (sweep, mode, method, varying knob); returns the paths written."""
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    methods = ok[ok["base"].notna()]
    for (sweep_id, mode, method), rows in methods.groupby(["sweep_id", "mode", "method"], sort=True):
        varying = [k for k in KNOB_COLUMNS if rows[k].dropna().nunique() >= 2]
        cfgs = summary[(summary["sweep_id"] == sweep_id) & (summary["mode"] == mode)
                       & (summary["method"] == method)].dropna(subset=["val_acc_overall_mean"])
        best = None if cfgs.empty else cfgs.sort_values("val_acc_overall_mean", ascending=False).iloc[0]
        base_name = rows["base"].iloc[0]
        base = summary[summary["is_base"] & (summary["sweep_id"] == sweep_id)
                       & (summary["mode"] == mode) & (summary["method"] == base_name)]
        for knob in varying:
            data, note = _slice_for_knob(rows, knob, varying, best)
            path = out_dir / f"knob_{_safe(str(sweep_id))}_{_safe(str(mode))}_{_safe(method)}_{knob}.png"
            _plot_knob(data, knob, base, rng, path,
                       title=f"{method} (base {base_name}) — {sweep_id}, {mode}", note=note,
                       base_name=base_name)
            paths.append(path)
    return paths


def _plot_knob(data: pd.DataFrame, knob: str, base: pd.DataFrame, rng: np.random.Generator,
               path: Path, title: str, note: str, base_name: str) -> None:
    """A 2x2 grid, one panel per split, each on its own y scale so the seed CIs stay visible
    (the splits' accuracies differ by tens of points)."""
    values = data[knob].dropna()
    categorical = knob in CATEGORICAL_KNOBS or not pd.api.types.is_numeric_dtype(values)
    levels = sorted(values.unique(), key=lambda v: (str(type(v)), v))
    x = np.arange(len(levels), dtype=float) if categorical else np.asarray(levels, dtype=float)
    log_x = (not categorical) and bool(np.all(x > 0)) and x.max() / x.min() >= 100
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True)
    for ax, (metric, split, color) in zip(axes.flat, SPLIT_METRICS):
        means, lows, highs, counts = [], [], [], []
        for level in levels:
            v = data.loc[data[knob] == level, metric].to_numpy(dtype=float)
            lo, hi = bootstrap_ci(v, rng)
            means.append(v.mean())
            lows.append(lo)
            highs.append(hi)
            counts.append(len(v))
        m = 100 * np.array(means)
        yerr = np.vstack([m - 100 * np.array(lows), 100 * np.array(highs) - m])
        ax.errorbar(x, m, yerr=yerr, fmt="o" if categorical else "o-", color=color, capsize=5,
                    markersize=5, label="mean, 95% bootstrap CI")
        if not base.empty:
            ax.axhline(100 * base.iloc[0][f"{metric}_mean"], color="gray", linestyle="--",
                       linewidth=1.2, label=f"base {base_name}")
        ax.set_title(f"{split} (n seeds: {min(counts)}–{max(counts)})" if min(counts) != max(counts)
                     else f"{split} (n = {counts[0]} seeds)", fontsize=9)
        ax.set_ylabel("test top-1 acc. (%)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if log_x:
            ax.set_xscale("log")
        if categorical or len(levels) <= 10:
            ax.set_xticks(x, [format_knob(v) for v in levels])
        ax.margins(x=0.12)
    for ax in axes[1]:
        ax.set_xlabel(knob)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def pareto_plot(summary: pd.DataFrame, path: Path) -> Path:
    """Few versus overall test accuracy (means over seeds) of every configuration; the Pareto
    front joined and highlighted, base models marked with stars."""
    fig, ax = plt.subplots(figsize=(7, 5))
    methods = summary[~summary["is_base"]]
    bases = summary[summary["is_base"]]
    front = summary[summary["pareto"]].sort_values("acc_overall_mean")
    ax.scatter(100 * methods["acc_overall_mean"], 100 * methods["acc_few_mean"], s=22,
               color="tab:gray", alpha=0.7, label="configuration")
    ax.plot(100 * front["acc_overall_mean"], 100 * front["acc_few_mean"], "-o", color="tab:red",
            markersize=7, label="Pareto front (maximise both)")
    for _, r in front.iterrows():
        ax.annotate(r["label"], (100 * r["acc_overall_mean"], 100 * r["acc_few_mean"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.scatter(100 * bases["acc_overall_mean"], 100 * bases["acc_few_mean"], marker="*", s=220,
               color="tab:blue", edgecolor="black", zorder=5, label="base model")
    for _, r in bases.iterrows():
        if not is_null(r["acc_overall_mean"]):
            ax.annotate(f"base {r['method']}", (100 * r["acc_overall_mean"], 100 * r["acc_few_mean"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=8, color="tab:blue")
    ax.set_xlabel("overall test top-1 accuracy (%)")
    ax.set_ylabel("few-split test top-1 accuracy (%)")
    ax.set_title("Few versus overall accuracy (test, mean over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.margins(x=0.08, y=0.08)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
