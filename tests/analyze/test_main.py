"""``python -m explore.analyze`` end to end on crafted sweeps written as real Parquet."""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from explore.analyze.__main__ import main
from explore.analyze.verdicts import no_beat_sentence
from tests.analyze.crafted import rows_for, write_sweep

OVERRIDES = ["num_samples=20", "repeats=3", "space.k.high=8", "runner.cpus_per_trial=0.5"]


def _s1_rows(dataset: str = "cifar100_lt", sweep_id: str = "s1") -> list[dict]:
    kw = {"dataset": dataset}
    ref = rows_for(sweep_id, "crt", trial_id="crt", test={"few": [10, 11, 12], "overall": [45, 45.5, 46]},
                   val={"few": [11] * 3, "overall": [45] * 3}, **kw)
    k8 = rows_for(sweep_id, "alphanet", base="crt", trial_id="t1", knobs={"k": 8, "distance": "cosine"},
                  test={"few": [15, 16, 18], "overall": [44.5, 45.5, 45.5]},
                  val={"few": [25] * 3, "overall": [44.5] * 3}, **kw)
    k4 = rows_for(sweep_id, "alphanet", base="crt", trial_id="t2", knobs={"k": 4, "distance": "cosine"},
                  test={"few": [42] * 3, "overall": [40] * 3},
                  val={"few": [30] * 3, "overall": [40] * 3}, **kw)
    k2 = rows_for(sweep_id, "alphanet", base="crt", trial_id="t3",
                  knobs={"k": 2, "distance": "euclidean"},
                  test={"few": [11, 10, 13], "overall": [46, 47, 46]},
                  val={"few": [20, 21, 22], "overall": [46] * 3}, **kw)
    # a stopped trial with the best numbers of all: never counted, never recommended
    stopped = rows_for(sweep_id, "alphanet", base="crt", trial_id="t4",
                       knobs={"k": 5, "distance": "cosine"}, status="stopped",
                       test={"few": [90] * 3}, val={"few": [90] * 3, "overall": [90] * 3}, **kw)
    error = rows_for(sweep_id, "alphanet", base="crt", trial_id="t5", knobs={"k": 6, "distance": "cosine"},
                     seeds=(0,), status="error", **kw)
    return ref + k8 + k4 + k2 + stopped + error


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    write_sweep(tmp_path / "store", "s1", _s1_rows(), overrides=OVERRIDES)
    return tmp_path / "store"


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0]


def test_answer_first_tables_and_files(store, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = _run([str(store), "--out", str(out_dir)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "Found 1 comparability group."
    assert lines[1] == "16 rows: 12 ok; left out of every statistic: 1 error, 3 stopped"
    assert lines[3].startswith("== Group 1 of 1: dataset cifar100_lt, features fk0, reference crt")
    assert lines[4] == "Recommended: alphanet(crt) k=8 distance=cosine  (3 seeds)"
    assert "k=5" not in out and "k=6" not in out
    assert (out_dir / "report.md").is_file() and (out_dir / "report.html").is_file()

    summary = pd.read_csv(out_dir / "summary.csv")
    k8 = summary[summary["label"] == "alphanet(crt) k=8 distance=cosine"].iloc[0]
    assert k8["acc_few_mean_pts"] == pytest.approx(49 / 3)  # (15 + 16 + 18) / 3, in points
    assert len(summary) == 4  # reference + 3 ok configurations
    verdicts = pd.read_csv(out_dir / "verdicts.csv")
    few = verdicts[(verdicts["configuration"] == k8["label"]) & (verdicts["scope"] == "test")
                   & (verdicts["split"] == "few")].iloc[0]
    assert few["verdict"] == "better" and few["n_paired"] == 3
    assert few["ci95_low_pts"] == pytest.approx(16 / 3 - 4.303 / 3, abs=1e-3)
    pareto = pd.read_csv(out_dir / "pareto.csv")
    assert set(pareto.loc[pareto["on_front"], "configuration"]) == {
        "alphanet(crt) k=4 distance=cosine", "alphanet(crt) k=8 distance=cosine",
        "alphanet(crt) k=2 distance=euclidean"}
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["group1_knob_s1_alphanet_distance.png", "group1_knob_s1_alphanet_k.png",
                    "group1_pareto.png"]


def test_best_command_prints_one_runnable_line(store, capsys):
    code, out, err = _run([str(store), "--best-command"], capsys)
    assert code == 0 and err == ""
    assert out.count("\n") == 1
    argv = shlex.split(out)
    assert argv[:4] == ["python", "-m", "explore.sweep", "alphanet_k"]
    knobs = dict(a.removeprefix("space.").split("=", 1) for a in argv if a.startswith("space."))
    assert knobs == {"k": "8", "distance": "cosine"}
    assert argv[-1] == f"storage_uri={store}"
    assert "num_samples=1" in argv and "repeats=10" in argv
    assert "runner.cpus_per_trial=0.5" in argv
    assert "num_samples=20" not in argv and "repeats=3" not in argv
    assert "space.k.high=8" not in argv


def test_best_command_when_nothing_qualifies_exits_2(tmp_path, capsys):
    ref = rows_for("s1", "crt", trial_id="crt", val={"overall": [45] * 3})
    bad = rows_for("s1", "alphanet", base="crt", trial_id="t1", knobs={"k": 3},
                   val={"overall": [40] * 3})
    write_sweep(tmp_path, "s1", ref + bad, overrides=[])
    _one_line_error(*_run([str(tmp_path), "--best-command"], capsys),
                    "no recommendation, nothing to rerun", "no configuration qualifies")
    code, out, _ = _run([str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert "No recommendation: no configuration qualifies: each loses more than 1 point" in out
    assert no_beat_sentence(1.0) in out


def test_two_datasets_two_groups_never_ranked_together(tmp_path, capsys):
    write_sweep(tmp_path / "a", "c100", _s1_rows("cifar100_lt", "c100"), overrides=[])
    c10 = rows_for("c10", "crt", trial_id="crt", dataset="cifar10_lt",
                   val={"few": [60] * 3, "overall": [80] * 3})
    c10 += rows_for("c10", "alphanet", base="crt", trial_id="t1", knobs={"k": 3}, dataset="cifar10_lt",
                    test={"few": [70] * 3}, val={"few": [70] * 3, "overall": [80] * 3})
    write_sweep(tmp_path / "b", "c10", c10, overrides=[])
    out_dir = tmp_path / "out"
    code, out, err = _run([str(tmp_path / "a"), str(tmp_path / "b" / "sweeps" / "c10"),
                           "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert out.splitlines()[0].startswith("Found 2 comparability groups")
    sections = out.split("== Group ")[1:]
    assert len(sections) == 2
    assert sections[0].startswith("1 of 2: dataset cifar100_lt")
    assert "Recommended: alphanet(crt) k=8 distance=cosine" in sections[0]
    assert "k=3" not in sections[0]  # the cifar10 configuration is not ranked here
    assert sections[1].startswith("2 of 2: dataset cifar10_lt")
    assert "Recommended: alphanet(crt) k=3" in sections[1] and "k=8" not in sections[1]
    pareto = pd.read_csv(out_dir / "pareto.csv")
    assert set(pareto.loc[pareto["group"] == 2, "sweep_id"]) == {"c10"}
    assert {p.name for p in out_dir.glob("group2_*.png")} == {"group2_pareto.png"}
    _one_line_error(*_run([str(tmp_path / "a"), str(tmp_path / "b"), "--best-command"], capsys),
                    "2 comparability groups found")


@pytest.mark.parametrize("bad", ["0", "-1", "100", "150", "nan"])
def test_tolerance_outside_0_100_is_a_one_line_error(store, bad, capsys):
    _one_line_error(*_run([str(store), "--tolerance", bad], capsys),
                    "--tolerance must be in (0, 100) points")


def test_tolerance_changes_the_recommendation(store, capsys):
    code, out, _ = _run([str(store), "--tolerance", "6", "--best-command"], capsys)
    assert code == 0 and "space.k=4 space.distance=cosine" in out


def test_corrupted_file_warned_and_left_out_or_fatal_with_strict(store, tmp_path, capsys):
    target = store / "sweeps" / "s1" / "results" / "trial-t3.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x40  # inside the column data of a small file
    target.write_bytes(bytes(data))
    code, out, err = _run([str(store), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    (warning,) = err.strip().splitlines()
    assert warning.startswith(f"warning: {target}: ") and warning.endswith("; left out")
    assert "k=2 distance=euclidean" not in out
    assert str(target) in (tmp_path / "o" / "report.md").read_text()
    _one_line_error(*_run([str(store), "--strict", "--out", str(tmp_path / "o2")], capsys),
                    "--strict", "trial-t3.parquet")


def test_old_format_files_still_work(tmp_path, capsys):
    write_sweep(tmp_path, "old", _s1_rows(sweep_id="old"), old_format=True)
    code, out, err = _run([str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert "Recommended: alphanet(crt) k=8 distance=cosine  (3 seeds)" in out
    assert "crt (reference)" in out


def test_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "sweeps" / "s1" / "results").mkdir(parents=True)
    _one_line_error(*_run([str(tmp_path / "empty")], capsys), "no Parquet files")
    _one_line_error(*_run([str(tmp_path / "nope")], capsys), "no such file or directory")
    d = tmp_path / "foreign"
    d.mkdir()
    pq.write_table(pa.table({"sweep_id": ["a"], "loss": [1.0]}), d / "x.parquet")
    code, out, err = _run([str(d)], capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith("error: no result file could be read")
    only_errors = tmp_path / "bad"
    write_sweep(only_errors, "s1", rows_for("s1", "crt", trial_id="crt", status="error"))
    _one_line_error(*_run([str(only_errors)], capsys), "no rows with status 'ok'", "3 error")


@pytest.mark.s3
def test_from_s3_with_sweep_json(s3_bucket, store, tmp_path, capsys):
    fs, _ = pafs.FileSystem.from_uri(f"s3://{s3_bucket}/x")  # endpoint + keys from the env
    for f in sorted((store / "sweeps" / "s1").rglob("*")):
        if f.is_file():
            key = f"{s3_bucket}/root/{f.relative_to(store).as_posix()}"
            with fs.open_output_stream(key) as out:
                out.write(f.read_bytes())
    # a Parquet file outside results/ (Tune's outputs) must be ignored
    pq.write_table(pa.table({"x": [1]}), f"{s3_bucket}/root/sweeps/s1/tune/other.parquet",
                   filesystem=fs)
    code, out, err = _run([f"s3://{s3_bucket}/root", "--best-command"], capsys)
    assert code == 0, err
    assert "space.k=8 space.distance=cosine" in out
    # storage_uri comes from sweep.json (where the sweep ran and its caches are)
    assert out.strip().endswith(f"storage_uri={store}")


def test_an_unwritable_out_is_a_one_line_error(store, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    _one_line_error(*_run([str(store), "--out", str(a_file / "analysis")], capsys),
                    f"cannot write the analysis to --out {a_file / 'analysis'}", "Not a directory")
    _one_line_error(*_run([str(store), "--out", str(a_file)], capsys),
                    f"--out {a_file}", "exists")
    assert a_file.read_text() == "not a directory"
