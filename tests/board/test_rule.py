"""The board's pieces that need no Ray: the rule that chooses a configuration (on
validation only), the table's arithmetic, and the board config's checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from explore.analyze.board import BoardData, board_rows, choose, markdown
from explore.board.config import load_board
from explore.config import ConfigError


def _rows(trials: dict[str, tuple[float, float, float, float]], ref_val_overall: float = 0.70):
    """Two seeds per trial: (val overall, val few, test overall, test few) per trial."""
    out = []
    for trial, (vo, vf, to, tf) in trials.items():
        for seed in (0, 1):
            out.append({"trial_id": trial, "seed": seed, "role": "configuration", "status": "ok",
                        "val_acc_overall": vo, "val_acc_few": vf, "acc_overall": to,
                        "acc_few": tf, "knob_columns": json.dumps(["k"]),
                        "params_json": json.dumps({"params": {"k": int(trial[1:]), "rho": 0.5}})})
    for seed in (0, 1):
        out.append({"trial_id": "base-crt", "seed": seed, "role": "reference", "status": "ok",
                    "val_acc_overall": ref_val_overall, "val_acc_few": 0.1, "acc_overall": 0.9,
                    "acc_few": 0.9, "knob_columns": "[]", "params_json": "{}"})
    return pd.DataFrame(out)


def test_the_rule_chooses_on_validation_where_test_would_choose_otherwise():
    # t2 is best on every test column; the rule must still pick from validation.
    rows = _rows({"t1": (0.80, 0.30, 0.60, 0.20), "t2": (0.70, 0.20, 0.95, 0.90),
                  "t3": (0.75, 0.50, 0.50, 0.10), "t4": (0.60, 0.60, 0.55, 0.15)})
    test_pick = rows[rows.role == "configuration"].groupby("trial_id").acc_overall.mean().idxmax()
    assert test_pick == "t2"
    overall = choose(rows, "val_overall", 1.0)
    assert overall is not None and overall.trial_id == "t1" and overall.knobs == {"k": 1}
    assert choose(rows, "val_few", 1.0).trial_id == "t4"  # type: ignore[union-attr]
    # few_within 1 point of the reference's 0.70 val overall: t1, t2, t3 qualify; t3 has most few
    assert choose(rows, "few_within", 1.0).trial_id == "t3"  # type: ignore[union-attr]
    # pareto: the mean of val few and val overall (t4 0.60, t3 0.625, t1 0.55)
    assert choose(rows, "pareto", 1.0).trial_id == "t3"  # type: ignore[union-attr]
    # nothing within tolerance: the highest val overall, and the note says so
    strict = choose(_rows({"t1": (0.5, 0.9, 0.9, 0.9), "t2": (0.6, 0.1, 0.1, 0.1)}), "few_within", 1.0)
    assert strict is not None and strict.trial_id == "t2" and "none within" in strict.note
    # failed trials are never chosen, and no finished trial is no choice
    failed = rows.assign(status=np.where(rows.trial_id == "t1", "error", "ok"))
    assert choose(failed, "val_overall", 1.0).trial_id == "t3"  # type: ignore[union-attr]
    assert choose(rows.assign(status="error"), "val_overall", 1.0) is None


def _final(accs: dict[int, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "role": "configuration", "status": "ok", "acc_many": 0.9,
                          "acc_medium": 0.5, "acc_few": few, "acc_overall": overall}
                         for s, (few, overall) in accs.items()])


def test_the_table_pairs_each_method_with_the_base_on_the_same_seeds():
    board = {"name": "b", "board_id": "b-1", "base": "ce", "objective": "val_overall",
             "tolerance": 1.0, "fresh_seeds": [10, 11, 12],
             "entries": [{"name": n, "method": n, "budget": {"configurations": 4, "seeds": 2}}
                         for n in ("ce", "m", "ns")]}
    outcomes = {"ce": {"status": "ok", "knobs": {}}, "m": {"status": "ok", "knobs": {"k": 3}},
                "ns": {"status": "cannot run", "reason": "no auxiliary pool"}}
    base = _final({10: (0.10, 0.50), 11: (0.20, 0.60), 12: (0.30, 0.55)})
    # m has an extra seed the base lacks: it must not enter the paired difference
    method = _final({10: (0.15, 0.52), 11: (0.26, 0.61), 12: (0.37, 0.57), 13: (0.99, 0.99)})
    data = BoardData(board, outcomes, {}, {"ce": base, "m": method})
    rows = board_rows(data)
    assert [r.entry for r in rows] == ["ce", "m", "ns"]
    m = rows[1]
    diffs = 100 * np.array([0.05, 0.06, 0.07])  # few, seeds 10..12
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert m.deltas["few"].n == 3
    assert m.deltas["few"].mean == pytest.approx(diffs.mean())
    assert (m.deltas["few"].low, m.deltas["few"].high) == pytest.approx(
        (diffs.mean() - half, diffs.mean() + half))
    assert m.verdict.startswith("few better")
    assert rows[2].status == "cannot run" and "no auxiliary pool" in markdown(data, rows)
    assert "| m | k=3 |" in markdown(data, rows)


def test_board_overrides_go_to_every_sweep_and_fresh_seeds_must_be_fresh(tmp_path):
    board = load_board(["fashion_mnist", "entries=[ce,alphanet_k]", f"features={tmp_path}",
                        "search.objective=val_few", f"storage_uri={tmp_path}/s",
                        "budget.configurations=3", "budget.seeds=2"])
    assert [e.name for e in board.entries] == ["ce", "alphanet_k"]
    for entry in board.entries:
        cfg = entry.cfg
        assert cfg.features == str(tmp_path) and cfg.search.objective == "val_few"
        assert (cfg.num_samples, cfg.seeds) == (3, [0, 1])
    assert set(board.fresh_seeds).isdisjoint({0, 1})
    with pytest.raises(ConfigError, match="overlap the tuning seeds"):
        load_board(["fashion_mnist", "entries=[ce]", "final_seed=1", "budget.seeds=3"])
    with pytest.raises(ConfigError, match="budget"):
        load_board(["fashion_mnist", "entries=[ce]", "num_samples=3"])
    with pytest.raises(ConfigError, match="not a search space"):
        load_board(["fashion_mnist", "entries=[ce,alphanet_kk]"])
