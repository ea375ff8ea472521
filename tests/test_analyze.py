"""explore.analyze on synthetic sweep results written as real Parquet (local and moto S3).

The data are built so the right answers are known: which configuration each selection rule
must pick on validation (including one that is best on test but must not be picked), the
Pareto front on test means, and the per-configuration statistics, which are recomputed
here with explicit loops over the rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from explore.analyze.__main__ import main
from explore.analyze.plots import bootstrap_ci
from explore.analyze.tables import pareto_front
from explore.results.schema import KNOB_COLUMNS, REQUIRED_COLUMNS

SEEDS = (0, 1, 2)
# (method, base, knobs, test (many, medium, few, overall, top5), val (many, medium, few, overall))
S1_CONFIGS = [
    ("crt", None, {}, (0.70, 0.50, 0.10, 0.450, 0.70), (0.71, 0.50, 0.11, 0.450)),
    ("alphanet", "crt", {"k": 2, "distance": "cosine"}, (0.69, 0.49, 0.18, 0.440, 0.70), (0.70, 0.49, 0.20, 0.440)),
    # best few on validation but overall drops 0.05 > tolerance: not eligible for best_few
    ("alphanet", "crt", {"k": 4, "distance": "cosine"}, (0.60, 0.45, 0.42, 0.400, 0.69), (0.60, 0.45, 0.30, 0.400)),
    # highest validation few among the eligible: the best_few answer
    ("alphanet", "crt", {"k": 8, "distance": "cosine"}, (0.69, 0.50, 0.15, 0.445, 0.70), (0.70, 0.50, 0.25, 0.445)),
    # highest validation overall: the best_overall answer
    ("alphanet", "crt", {"k": 4, "distance": "euclidean"}, (0.62, 0.47, 0.40, 0.430, 0.70), (0.68, 0.52, 0.22, 0.460)),
    # best on TEST for both few and overall, but not on validation: must never be chosen
    ("alphanet", "crt", {"k": 2, "distance": "euclidean"}, (0.72, 0.52, 0.35, 0.470, 0.71), (0.69, 0.49, 0.21, 0.450)),
]
TEST_COLS = ("acc_many", "acc_medium", "acc_few", "acc_overall", "top5_overall")
VAL_COLS = ("val_acc_many", "val_acc_medium", "val_acc_few", "val_acc_overall")


def _rows(sweep_id: str, configs: list, seed_offset: int = 0) -> list[dict]:
    rng = np.random.default_rng(1234 + seed_offset)
    rows = []
    for ci, (method, base, knobs, test, val) in enumerate(configs):
        for seed in SEEDS:
            row = {c: None for c in REQUIRED_COLUMNS}
            row.update(
                sweep_id=sweep_id, space=f"{method}_sweep", trial_id=f"{sweep_id}-t{ci}", seed=seed,
                method=method, base=base, mode="head", status="ok", dataset="cifar100_lt",
                feature_key="fk0", train_seconds=1.5, best_epoch=3, many_above=100, few_below=20,
                code_version="test", params_json=json.dumps(knobs), error=None,
            )
            row.update(knobs)
            # small per-seed noise (< 0.004) keeps every ordering above intact
            for col, v in zip(TEST_COLS + VAL_COLS, test + val):
                row[col] = float(v + rng.uniform(-0.004, 0.004))
            rows.append(row)
    return rows


def _error_row(sweep_id: str) -> dict:
    row = {c: None for c in REQUIRED_COLUMNS}
    row.update(sweep_id=sweep_id, space="alphanet_sweep", trial_id=f"{sweep_id}-bad", seed=0,
               method="alphanet", base="crt", mode="head", status="error", k=16, distance="cosine",
               error="CUDA out of memory")
    return row


SCHEMA_TYPES = {"seed": pa.int64(), "k": pa.int64(), "distance": pa.string(), "best_epoch": pa.int64(),
                "many_above": pa.int64(), "few_below": pa.int64(), "train_seconds": pa.float64()}
STRING_COLS = {"sweep_id", "space", "trial_id", "method", "base", "mode", "status", "dataset",
               "feature_key", "code_version", "params_json", "error"}


def _table(rows: list[dict], null_typed: tuple[str, ...] = ()) -> pa.Table:
    fields = []
    for c in REQUIRED_COLUMNS:
        if c in null_typed:
            t = pa.null()
        elif c in SCHEMA_TYPES:
            t = SCHEMA_TYPES[c]
        elif c in STRING_COLS:
            t = pa.string()
        else:
            t = pa.float64()
        fields.append(pa.field(c, t))
    schema = pa.schema(fields)
    return pa.Table.from_pylist([{c: r[c] for c in REQUIRED_COLUMNS} for r in rows], schema=schema)


def _write_sweep(root: Path, sweep_id: str, rows: list[dict]) -> Path:
    """Two files per sweep; in the second, always-null knob columns are Arrow `null` typed,
    as a writer that infers types from a single trial's rows would produce."""
    results = root / "sweeps" / sweep_id / "results"
    results.mkdir(parents=True)
    half = len(rows) // 2
    pq.write_table(_table(rows[:half]), results / "part-0.parquet")
    all_null = tuple(k for k in KNOB_COLUMNS if all(r[k] is None for r in rows[half:]))
    pq.write_table(_table(rows[half:], null_typed=all_null), results / "part-1.parquet")
    return results


@pytest.fixture()
def s1_rows() -> list[dict]:
    return _rows("s1", S1_CONFIGS) + [_error_row("s1")]


@pytest.fixture()
def s1_root(tmp_path: Path, s1_rows: list[dict]) -> Path:
    _write_sweep(tmp_path / "store", "s1", s1_rows)
    return tmp_path / "store"


def _hand_stats(rows: list[dict], method: str, knobs: dict, col: str) -> tuple[float, float]:
    vals = []
    for r in rows:
        if r["status"] != "ok" or r["method"] != method:
            continue
        if all(r[k] == knobs.get(k) for k in KNOB_COLUMNS):
            vals.append(r[col])
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, std


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_statistics_deltas_selection_pareto_and_files(s1_root, s1_rows, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = _run([str(s1_root / "sweeps" / "s1" / "results"), "--out", str(out_dir)], capsys)
    assert code == 0, err
    summary = pd.read_csv(out_dir / "summary.csv")
    assert len(summary) == len(S1_CONFIGS)  # the error row forms no configuration

    base_means = {c: _hand_stats(s1_rows, "crt", {}, c)[0] for c in TEST_COLS + VAL_COLS}
    for method, base, knobs, _, _ in S1_CONFIGS:
        sel = summary["method"] == method
        for k in KNOB_COLUMNS:
            sel &= summary[k].isna() if k not in knobs else (summary[k] == knobs[k])
        (i,) = np.flatnonzero(sel.to_numpy())
        row = summary.iloc[i]
        assert row["n_seeds"] == len(SEEDS)
        for col in TEST_COLS + VAL_COLS:
            mean, std = _hand_stats(s1_rows, method, knobs, col)
            assert row[f"{col}_mean"] == pytest.approx(mean, abs=1e-12)
            assert row[f"{col}_std"] == pytest.approx(std, abs=1e-12)
            assert row[f"{col}_delta"] == pytest.approx(mean - base_means[col], abs=1e-12)

    # selections: on validation, never the test-best k=2 euclidean
    assert "[all] best_few: rule = highest validation few-split accuracy" in out
    assert "-> alphanet(crt) k=8 distance=cosine" in out.split("best_few")[1].split("\n")[1]
    assert "-> alphanet(crt) k=4 distance=euclidean" in out.split("best_overall")[1].split("\n")[1]
    assert "minus 0.02" in out

    # Pareto front on test means: k=2 eucl (0.47, 0.35), k=4 eucl (0.43, 0.40), k=4 cos (0.40, 0.42)
    front = set(summary.loc[summary["pareto"], "knobs"])
    assert front == {"k=2 distance=euclidean", "k=4 distance=euclidean", "k=4 distance=cosine"}
    pareto_csv = pd.read_csv(out_dir / "pareto.csv")
    assert set(pareto_csv.loc[pareto_csv["pareto"], "label"]) == {
        "alphanet(crt) " + k for k in front}

    # status accounting and the printed table
    assert "19 rows: 18 ok, excluded from statistics: 1 error" in out
    k8 = summary[summary["knobs"] == "k=8 distance=cosine"].iloc[0]
    expected_cell = f"{100 * k8['acc_few_mean']:.2f} ± {100 * k8['acc_few_std']:.2f} ({100 * k8['acc_few_delta']:+.2f})"
    assert expected_cell in out
    assert expected_cell in (out_dir / "table.md").read_text()
    table_csv = pd.read_csv(out_dir / "table.csv")
    assert list(table_csv.columns[:4]) == ["sweep", "mode", "configuration", "n"]

    # plots: k and distance vary for alphanet; plus the Pareto scatter
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["knob_s1_head_alphanet_distance.png", "knob_s1_head_alphanet_k.png",
                    "pareto_few_vs_overall.png"]
    report = (out_dir / "report.md").read_text()
    html = (out_dir / "report.html").read_text()
    for name in pngs:
        data = (out_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"]({name})" in report
    assert html.count("data:image/png;base64,") == len(pngs)


def test_tolerance_changes_best_few(s1_root, tmp_path, capsys):
    # With 0.06 allowed, k=4 cosine (val few 0.30, val overall 0.40 vs base 0.45) is eligible.
    code, out, _ = _run([str(s1_root), "--out", str(tmp_path / "o"), "--tolerance", "0.06"], capsys)
    assert code == 0
    assert "-> alphanet(crt) k=4 distance=cosine" in out.split("best_few")[1].split("\n")[1]


def test_sweep_dir_storage_root_and_two_sweeps_deltas_per_sweep(s1_root, tmp_path, capsys):
    s2 = [("crt", None, {}, (0.80, 0.60, 0.20, 0.55, 0.8), (0.8, 0.6, 0.2, 0.55)),
          ("swrm", "crt", {"beta": 0.5}, (0.79, 0.61, 0.30, 0.56, 0.8), (0.8, 0.6, 0.3, 0.56)),
          ("swrm", "crt", {"beta": 0.9}, (0.78, 0.62, 0.33, 0.56, 0.8), (0.8, 0.6, 0.33, 0.55))]
    s2_rows = _rows("s2", s2, seed_offset=7)
    other_root = tmp_path / "other"
    _write_sweep(other_root, "s2", s2_rows)
    out_dir = tmp_path / "o2"
    code, out, err = _run([str(s1_root), str(other_root / "sweeps" / "s2"), "--out", str(out_dir)], capsys)
    assert code == 0, err
    summary = pd.read_csv(out_dir / "summary.csv")
    assert set(summary["sweep_id"]) == {"s1", "s2"}
    b05 = summary[(summary["sweep_id"] == "s2") & (summary["beta"] == 0.5)].iloc[0]
    mean, _ = _hand_stats(s2_rows, "swrm", {"beta": 0.5}, "acc_few")
    base_mean, _ = _hand_stats(s2_rows, "crt", {}, "acc_few")
    assert b05["acc_few_delta"] == pytest.approx(mean - base_mean, abs=1e-12)
    # per-sweep selections appear when several sweeps are analysed
    assert "[s2] best_overall" in out and "[s1] best_few" in out
    assert (out_dir / "knob_s2_head_swrm_beta.png").is_file()


def test_duckdb_reads_the_same_files(s1_root, s1_rows):
    results = s1_root / "sweeps" / "s1" / "results"
    ((n, mean_few),) = duckdb.sql(
        f"select count(*), avg(acc_few) filter (where status = 'ok' and method = 'crt') "
        f"from read_parquet('{results}/*.parquet', union_by_name = true)"
    ).fetchall()
    assert n == len(s1_rows)
    assert mean_few == pytest.approx(_hand_stats(s1_rows, "crt", {}, "acc_few")[0])


@pytest.mark.s3
def test_reads_results_from_s3(s3_bucket, s1_rows, tmp_path, capsys):
    fs, _ = pafs.FileSystem.from_uri(f"s3://{s3_bucket}/x")  # endpoint + keys from the AWS env
    half = len(s1_rows) // 2
    pq.write_table(_table(s1_rows[:half]), f"{s3_bucket}/root/sweeps/s1/results/part-0.parquet", filesystem=fs)
    pq.write_table(_table(s1_rows[half:], null_typed=("rho",)),
                   f"{s3_bucket}/root/sweeps/s1/results/part-1.parquet", filesystem=fs)
    # a non-results Parquet file elsewhere under the root must be ignored
    pq.write_table(pa.table({"x": [1]}), f"{s3_bucket}/root/sweeps/s1/tune/other.parquet", filesystem=fs)
    code, out, err = _run([f"s3://{s3_bucket}/root", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert len(summary) == len(S1_CONFIGS)
    assert "-> alphanet(crt) k=8 distance=cosine" in out


def _assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_error_no_parquet_files(tmp_path, capsys):
    (tmp_path / "empty" / "sweeps" / "s1" / "results").mkdir(parents=True)
    _assert_one_line_error(*_run([str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys),
                           "no Parquet files")


def test_error_missing_path(tmp_path, capsys):
    _assert_one_line_error(*_run([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys),
                           "no such file or directory")


def test_error_not_explore_results_names_missing_columns(tmp_path, capsys):
    d = tmp_path / "foreign"
    d.mkdir()
    pq.write_table(pa.table({"sweep_id": ["a"], "acc_few": [0.1], "loss": [1.0]}), d / "x.parquet")
    code, out, err = _run([str(d), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line_error(code, out, err, "missing required columns", "acc_overall", "val_acc_few", "status")
    assert "sweep_id," not in err  # present columns are not listed


def test_error_no_ok_rows(tmp_path, capsys):
    root = tmp_path / "bad"
    _write_sweep(root, "s1", [_error_row("s1"), _error_row("s1")])
    _assert_one_line_error(*_run([str(root), "--out", str(tmp_path / "o")], capsys),
                           "no rows with status 'ok'", "2 error")


def test_pareto_front_by_hand():
    pts = pd.DataFrame({"acc_overall_mean": [0.5, 0.4, 0.3, 0.45, 0.5, 0.2, np.nan],
                        "acc_few_mean": [0.1, 0.3, 0.3, 0.05, 0.1, 0.35, 0.9]})
    # (0.5,0.1) twice: ties do not dominate each other; (0.3,0.3) is beaten by (0.4,0.3);
    # (0.45,0.05) by (0.5,0.1); NaN is never on the front.
    assert pareto_front(pts).tolist() == [True, True, False, False, True, True, False]


def test_bootstrap_ci_properties():
    values = np.array([0.40, 0.42, 0.47, 0.43, 0.44])
    lo, hi = bootstrap_ci(values, np.random.default_rng(0), n_boot=4000)
    assert values.min() <= lo < values.mean() < hi <= values.max()
    # the bootstrap standard error is the plug-in one, std(ddof=0)/sqrt(n); 95% ~ ±1.96 se
    se = values.std() / math.sqrt(len(values))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert bootstrap_ci(np.array([0.3]), np.random.default_rng(0)) == (0.3, 0.3)
    again = bootstrap_ci(values, np.random.default_rng(0), n_boot=4000)
    assert again == (lo, hi)  # seeded: reproducible
