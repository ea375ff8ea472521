"""Benchmark 5 — one AlphaNet configuration at ImageNet-LT scale, end to end.

The synthetic features are cached in a feature store (local temp dir); each measurement
runs in a fresh Python process (``python -m benchmarks.scale --child …``) so that its
peak memory (``VmHWM``, see ``_peak_rss_gib``) is its own: load from the store → base logits Z (and class
means) → training of all seeds → test/val evaluation. Growth is measured with the
number of classes (proportional N) and with k.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks._timing import Figure
from benchmarks.synthetic import LongTailSize, Problem
from explore.evaluation import evaluate_logits
from explore.methods.alphanet import AlphaNetParams
from explore.recipes.alphanet import evaluate_alphanet, train_alphanet
from explore.splits import SplitThresholds
from explore.store import FeatureStore, feature_key
from explore.training.posthoc import LinearClassifier, build_posthoc_inputs

TARGET_S = 60.0
"""Wanted wall time for all 10 seeds of one ImageNet-LT configuration on this CPU."""
PHASES = ("load", "z_precompute", "training", "evaluation")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class ScaleRun:
    """One fresh-process measurement."""

    num_classes: int
    k: int
    seeds: int
    epochs: int
    seconds: dict[str, float]
    peak_rss_gib: float
    base_acc: dict[str, float]
    alphanet_acc: dict[str, float]
    """Mean over seeds of the test metrics."""

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def line(self) -> str:
        phases = ", ".join(f"{p} {self.seconds[p]:.1f}" for p in PHASES)
        return (f"C={self.num_classes:<5} k={self.k:<3} R={self.seeds} E={self.epochs}: total {self.total:6.1f} s "
                f"({phases}); peak RSS {self.peak_rss_gib:.2f} GiB; few acc {self.base_acc['acc_few']:.3f} → "
                f"{self.alphanet_acc['acc_few']:.3f}, overall {self.base_acc['acc_overall']:.3f} → "
                f"{self.alphanet_acc['acc_overall']:.3f}")


def store_problem(store: FeatureStore, problem: Problem) -> str:
    """Cache the problem's features and base classifier under a key of its size; return the key."""
    key = feature_key({"benchmark": "scale", "size": repr(problem.size)})
    if not store.has(key):
        store.write(key, problem.features)
        store.put_arrays(key, "base", {"weight": problem.classifier.weight, "bias": problem.classifier.bias})
    return key


def measure(store_uri: str, key: str, k: int, seeds: int, epochs: int) -> ScaleRun:
    """Run one measurement in a fresh process and parse its JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", "--store", store_uri, "--key", key,
           "--k", str(k), "--seeds", str(seeds), "--epochs", str(epochs)]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"scale child failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    return ScaleRun(**json.loads(out.stdout.strip().splitlines()[-1]))


def _peak_rss_gib() -> float:
    """This process's peak resident memory since it started its program.

    ``ru_maxrss`` survives ``exec`` on Linux, so a child forked from a parent holding
    several GiB would report the parent's size; ``VmHWM`` belongs to the new program's
    address space only. ``ru_maxrss`` is the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB → GiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _child(store_uri: str, key: str, k: int, seeds: int, epochs: int) -> ScaleRun:
    torch.set_num_threads(2)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    store = FeatureStore(store_uri)
    fset = store.read(key)
    arrays, _ = store.get_arrays(key, "base")
    classifier = LinearClassifier(arrays["weight"], arrays["bias"])
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    splits = {name: (fset.splits[name].features, fset.splits[name].labels) for name in ("train", "val", "test")}
    inputs = build_posthoc_inputs(splits, classifier, fset.num_classes, SplitThresholds())
    seconds["z_precompute"] = time.perf_counter() - t
    del fset, splits  # only Z is needed from here on

    params = AlphaNetParams(k=k, distance="euclidean", rho=0.5, epochs=epochs)
    t = time.perf_counter()
    trained = train_alphanet(inputs, params, list(range(seeds)))
    seconds["training"] = time.perf_counter() - t
    t = time.perf_counter()
    results = evaluate_alphanet(inputs, trained)
    seconds["evaluation"] = time.perf_counter() - t

    peak = _peak_rss_gib()
    base = evaluate_logits(inputs.test.logits + torch.from_numpy(classifier.bias), inputs.test.labels.numpy(),
                           inputs.split_of_class)
    mean = {m: float(np.mean([r.test[m] for r in results])) for m in results[0].test}
    return ScaleRun(len(classifier.bias), k, seeds, epochs, seconds, peak, base, mean)


@dataclass(frozen=True)
class ScaleReport:
    main: ScaleRun
    by_classes: list[ScaleRun]
    by_k: list[ScaleRun]

    def figures(self) -> list[Figure]:
        m = self.main
        figs = [Figure(f"C={m.num_classes}, k={m.k}, {m.seeds} seeds, {m.epochs} epochs: wall time",
                       m.total, "s", f"< {TARGET_S:g} s" if m.seeds == 10 else "",
                       (m.total < TARGET_S) if m.seeds == 10 else None, m.line()),
                Figure("  peak memory (VmHWM of a fresh process)", m.peak_rss_gib, "GiB", "< 8 GiB",
                       m.peak_rss_gib < 8)]
        for label, runs in (("classes", self.by_classes), ("k", self.by_k)):
            ref = runs[-1]
            for run in runs:
                figs.append(Figure(f"  time vs {label}: C={run.num_classes} k={run.k} (÷ largest)",
                                   run.total / ref.total, "", note=run.line()))
        return figs


def bench_scale(main_problem: Problem, workdir: str, classes: list[int], ks: list[int], seeds: int,
                epochs: int) -> ScaleReport:
    """Main run: ``main_problem`` with max(ks); then each C in ``classes`` (same profile,
    proportional N; the largest is the main run) and each k."""
    store_uri = os.path.join(workdir, "scale-store")
    store = FeatureStore(store_uri)
    main_key = store_problem(store, main_problem)
    size: LongTailSize = main_problem.size
    main = measure(store_uri, main_key, max(ks), seeds, epochs)
    by_classes = []
    for c in sorted(classes):
        if c == size.num_classes:
            by_classes.append(main)
            continue
        key = store_problem(store, Problem.make(size.scaled(c)))
        by_classes.append(measure(store_uri, key, max(ks), seeds, epochs))
    by_k = [main if k == max(ks) else measure(store_uri, main_key, k, seeds, epochs) for k in sorted(ks)]
    return ScaleReport(main, by_classes, by_k)


def _main() -> None:
    parser = argparse.ArgumentParser(description="one scale measurement in a fresh process (internal)")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    args = parser.parse_args()
    run = _child(args.store, args.key, args.k, args.seeds, args.epochs)
    print(json.dumps(run.__dict__))


if __name__ == "__main__":
    _main()
