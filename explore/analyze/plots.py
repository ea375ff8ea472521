"""PNG plots, one set per comparability group: accuracy against each varying knob with 95%
bootstrap intervals over seeds, and the few-vs-overall scatter of validation means.

Knob plots are drawn per (sweep, method). When a method varies several knobs, the other
knobs are held at the values of its best-validation-overall configuration, so each curve is
a real one-knob slice; when that slice has fewer than two knob values the rows are pooled
over the other knobs, and the title says which was done.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from explore.analyze.answer import GroupResult
from explore.analyze.load import CONFIGURATION, REFERENCE, is_null, natural
from explore.analyze.summary import POINTS, format_knob

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


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _varying(rows: pd.DataFrame) -> list[str]:
    names: list[str] = []
    for items in rows["knob_items"]:
        names += [k for k, _ in items if k not in names]
    return [k for k in names if rows[k].dropna().nunique() >= 2]


def _slice_for_knob(rows: pd.DataFrame, knob: str, varying: list[str],
                    best: dict[str, object] | None) -> tuple[pd.DataFrame, str]:
    others = [k for k in varying if k != knob]
    if others and best is not None:
        mask = np.ones(len(rows), dtype=bool)
        for k in others:
            mask &= np.array([not is_null(v) and natural(k, v) == best.get(k) for v in rows[k]],
                             dtype=bool)
        fixed = rows[mask]
        if fixed[knob].nunique() >= 2:
            held = ", ".join(f"{k}={format_knob(best.get(k))}" for k in others)
            return fixed, f"other knobs at best-val config: {held}"
    return rows, ("pooled over other knobs" if others else "")


def knob_plots(g: GroupResult, out_dir: Path, rng: np.random.Generator) -> list[Path]:
    """One PNG per (sweep, method, varying knob) of the group; returns the paths written."""
    paths: list[Path] = []
    configs = g.rows[g.rows["role"] == CONFIGURATION]
    for (sweep_id, method), rows in configs.groupby(["sweep_id", "method"], sort=True):
        varying = _varying(rows)
        lines = g.summary[(g.summary["role"] == CONFIGURATION)
                          & (g.summary["sweep_id"] == sweep_id) & (g.summary["method"] == method)]
        lines = lines.dropna(subset=["val_acc_overall_mean"])
        best = (None if lines.empty else
                dict(lines.sort_values("val_acc_overall_mean", ascending=False)
                     .iloc[0]["knob_items"]))
        base_name = str(rows["base"].iloc[0])
        ref = g.summary[(g.summary["role"] == REFERENCE) & (g.summary["sweep_id"] == sweep_id)
                        & (g.summary["method"] == base_name)]
        for knob in varying:
            data, note = _slice_for_knob(rows, knob, varying, best)
            path = out_dir / (f"group{g.group.number}_knob_{safe_name(str(sweep_id))}_"
                              f"{safe_name(str(method))}_{safe_name(knob)}.png")
            _plot_knob(data, knob, ref, rng, path,
                       title=f"{method} (reference {base_name}) — sweep {sweep_id}",
                       note=note, base_name=base_name)
            paths.append(path)
    return paths


def _plot_knob(data: pd.DataFrame, knob: str, ref: pd.DataFrame, rng: np.random.Generator,
               path: Path, title: str, note: str, base_name: str) -> None:
    """A 2x2 grid, one panel per split, each on its own y scale so the seed intervals stay
    visible (the splits' accuracies differ by tens of points)."""
    values = data[knob].dropna()
    categorical = knob in CATEGORICAL_KNOBS or not pd.api.types.is_numeric_dtype(values)
    levels = sorted(values.unique(), key=lambda v: (str(type(v)), v))
    x = np.arange(len(levels), dtype=float) if categorical else np.asarray(levels, dtype=float)
    log_x = (not categorical) and bool(np.all(x > 0)) and x.max() / x.min() >= 100
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True)
    for ax, (metric, split, color) in zip(axes.flat, SPLIT_METRICS):
        means, lows, highs, counts = [], [], [], []
        for level in levels:
            v = POINTS * data.loc[data[knob] == level, metric].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            if len(v) == 0:
                v = np.array([np.nan])
            lo, hi = bootstrap_ci(v, rng)
            means.append(float(v.mean()))
            lows.append(lo)
            highs.append(hi)
            counts.append(len(v))
        m = np.array(means)
        yerr = np.vstack([m - np.array(lows), np.array(highs) - m])
        ax.errorbar(x, m, yerr=yerr, fmt="o" if categorical else "o-", color=color, capsize=5,
                    markersize=5, label="mean, 95% bootstrap CI over seeds")
        if not ref.empty:
            ax.axhline(ref.iloc[0][f"{metric}_mean"], color="gray", linestyle="--",
                       linewidth=1.2, label=f"reference {base_name}")
        ax.set_title(f"{split} (n seeds: {min(counts)}–{max(counts)})" if min(counts) != max(counts)
                     else f"{split} (n = {counts[0]} seeds)", fontsize=9)
        ax.set_ylabel("test top-1 acc. (points)", fontsize=8)
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


def pareto_plot(g: GroupResult, path: Path) -> Path:
    """Few versus overall VALIDATION accuracy (means over seeds) of every configuration of
    the group; the front joined and labelled, references marked with stars."""
    s = g.summary
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    configs = s[s["role"] == CONFIGURATION]
    refs = s[s["role"] == REFERENCE]
    front = s[s["pareto"]].sort_values("val_acc_overall_mean")
    ax.scatter(configs["val_acc_overall_mean"], configs["val_acc_few_mean"], s=22,
               color="tab:gray", alpha=0.7, label="configuration")
    ax.plot(front["val_acc_overall_mean"], front["val_acc_few_mean"], "-o", color="tab:red",
            markersize=7, label="Pareto front (maximise both)")
    for _, r in front.iterrows():
        ax.annotate(str(r["label"]), (r["val_acc_overall_mean"], r["val_acc_few_mean"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.scatter(refs["val_acc_overall_mean"], refs["val_acc_few_mean"], marker="*", s=220,
               color="tab:blue", edgecolor="black", zorder=5, label="reference")
    ax.set_xlabel("overall validation top-1 accuracy (points)")
    ax.set_ylabel("few-split validation top-1 accuracy (points)")
    ax.set_title(f"Group {g.group.number}: few vs overall (validation, mean over seeds)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.margins(x=0.08, y=0.08)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
