"""The benchmark harness on tiny sizes: its equality checks hold and it reports sane
numbers. No timing assertions: speed is measured by ``python -m benchmarks``, not here."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import __main__ as cli
from benchmarks._timing import time_side_by_side
from benchmarks.recompute import bench_recompute
from benchmarks.repeats import bench_repeats
from benchmarks.scale import bench_scale
from benchmarks.store import bench_store_local, bench_store_s3, loopback_only, store_size
from benchmarks.synthetic import IMAGENET_LT, LongTailSize, Problem, imagenet_lt_counts
from explore.methods.alphanet import AlphaNetParams
from explore.splits import SplitThresholds

TINY = LongTailSize(num_classes=40, train_total=4634, d=16)
PARAMS = AlphaNetParams(k=3, epochs=5, select_from_epoch=2)


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem.make(TINY, seed=1)


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_imagenet_lt_profile():
    counts = imagenet_lt_counts(1000, 115_846)
    assert counts.max() == 1280 and counts.min() == 5
    assert abs(int(counts.sum()) - 115_846) <= 5
    assert np.all(np.diff(counts) <= 0)  # sorted, largest first
    split = SplitThresholds().split_of_class(counts)
    assert [(split == s).sum() for s in ("many", "medium", "few")] == [385, 479, 136]  # ImageNet-LT's


def test_synthetic_base_underpredicts_few_classes(problem):
    from explore.evaluation import evaluate_logits

    test = problem.features.test
    acc = evaluate_logits(problem.classifier.logits(test.features), test.labels, problem.inputs.split_of_class)
    assert acc["acc_few"] < acc["acc_many"]
    assert acc["acc_overall"] > 2 / TINY.num_classes  # learnable: far above chance


def test_side_by_side_alternates_order():
    calls: list[str] = []
    timed = time_side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert all(len(t.seconds) == 3 and _positive(t.median) for t in timed.values())


def test_repeats_bench(problem):
    report = bench_repeats(problem.inputs, PARAMS, num_seeds=2, repeats=1, label="tiny")
    assert _positive(report.speedup)
    assert report.max_abs_acc_diff <= 1e-6
    assert report.max_abs_alpha_diff <= 1e-5
    assert [f.met for f in report.figures()] == [None, None, None]  # the 5x target is for R = 10 only


def test_recompute_bench(problem):
    # bench_recompute raises unless the shipped fit and the from-features reference
    # select the same epochs and reach the same accuracies.
    report = bench_recompute(problem, PARAMS, num_seeds=2, repeats=1, label="tiny")
    assert _positive(report.speedup)
    assert report.max_abs_acc_diff <= 1e-6
    assert report.max_abs_alpha_diff <= 1e-4


def test_store_bench_local():
    report = bench_store_local(store_size(2, d=64), repeats=1)
    assert 1.5 < report.megabytes < 2.5
    assert _positive(report.fraction_of_raw)


@pytest.mark.skipif(not loopback_only(), reason="starts a moto server: run inside .ci/loopback")
def test_store_bench_s3_starts_and_stops_moto():
    import os

    before = os.environ.get("AWS_ENDPOINT_URL")
    report = bench_store_s3(store_size(1, d=64), repeats=1)
    assert _positive(report.fraction_of_raw)
    assert os.environ.get("AWS_ENDPOINT_URL") == before  # the harness restores the environment


def test_scale_bench_one_fresh_process(problem, tmp_path):
    report = bench_scale(problem, str(tmp_path), classes=[TINY.num_classes], ks=[2], seeds=2, epochs=2)
    run = report.main
    assert (run.num_classes, run.k, run.seeds, run.epochs) == (TINY.num_classes, 2, 2, 2)
    assert set(run.seconds) == {"load", "z_precompute", "training", "evaluation"}
    assert all(s >= 0 for s in run.seconds.values())
    assert 0.05 < run.peak_rss_gib < 8
    assert 0 <= run.alphanet_acc["acc_few"] <= 1
    assert report.by_classes == [run] and report.by_k == [run]


def test_quick_mode_sizes_and_cli_wiring():
    assert cli.QUICK.big.d < IMAGENET_LT.d and cli.FULL.big == IMAGENET_LT
    tiny = replace(cli.QUICK, big=TINY, epochs=3, recompute_seeds=1, recompute_runs=1)
    lines: list[str] = []
    figures = cli.run(tiny, {"recompute"}, out=lines.append)
    assert any("2. work AlphaNet need not redo" in line for line in lines)
    assert figures and all(math.isfinite(f.value) for f in figures)


def test_fixed_cost_features_have_cifar100_lt_shape(tmp_path):
    from benchmarks.fixed_cost import feature_dir

    path = feature_dir(tmp_path / "feats")
    train, test, clf = (np.load(path / f"{name}.npz") for name in ("train", "test", "classifier"))
    assert train["features"].shape == (10_847, 64) and train["features"].dtype == np.float32
    counts = np.bincount(train["labels"])
    assert counts[0] == 500 and counts[-1] == 5 and len(counts) == 100
    assert np.bincount(np.load(path / "val.npz")["labels"]).tolist() == [20] * 100
    assert clf["weight"].shape == (100, 64) and clf["bias"].shape == (100,)
    pred = (test["features"] @ clf["weight"].T + clf["bias"]).argmax(1)
    assert (pred == test["labels"]).mean() > 0.3  # the imported classifier is a real one
    assert cli.QUICK.fixedcost_repeats < cli.FULL.fixedcost_repeats and "fixedcost" in cli.NAMES
