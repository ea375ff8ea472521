"""Plots: bootstrap intervals over seeds, one PNG set per group."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from explore.analyze.answer import analyse
from explore.analyze.plots import bootstrap_ci, knob_plots, pareto_plot
from tests.analyze.crafted import rows_for


def test_bootstrap_ci_properties():
    values = np.array([0.40, 0.42, 0.47, 0.43, 0.44])
    lo, hi = bootstrap_ci(values, np.random.default_rng(0), n_boot=4000)
    assert values.min() <= lo < values.mean() < hi <= values.max()
    # the bootstrap standard error is the plug-in one, std(ddof=0)/sqrt(n); 95% ~ ±1.96 se
    se = values.std() / math.sqrt(len(values))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert bootstrap_ci(np.array([0.3]), np.random.default_rng(0)) == (0.3, 0.3)
    assert bootstrap_ci(values, np.random.default_rng(0), n_boot=4000) == (lo, hi)  # seeded


def test_knob_and_pareto_pngs_per_group(tmp_path):
    rows = rows_for("s1", "crt", trial_id="crt")
    for i, (k, rho) in enumerate([(2, 0.5), (4, 0.5), (8, 0.5), (4, 0.9)]):
        rows += rows_for("s1", "alphanet", base="crt", trial_id=f"t{i}", knobs={"k": k, "rho": rho},
                         test={"few": [10 + k, 11 + k, 12 + k]},
                         val={"overall": [50 + rho] * 3})
    (g,), _ = analyse(pd.DataFrame(rows))
    paths = knob_plots(g, tmp_path, np.random.default_rng(0))
    assert sorted(p.name for p in paths) == ["group1_knob_s1_alphanet_k.png",
                                             "group1_knob_s1_alphanet_rho.png"]
    paths.append(pareto_plot(g, tmp_path / "group1_pareto.png"))
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
