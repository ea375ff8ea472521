"""Benchmark 8 — feature extraction as Ray tasks on 1 versus 2 workers, at ImageNet-LT's shape.

ImageNet-LT's splits (115,846 train, 20,000 val, 50,000 test images) and its shard layout
(65,536 rows per shard: 2 train shards, 1 val, 1 test, so 4 ranges), both scaled down by
``scale``: a CPU cannot push 186k images through ResNeXt-50 in a benchmark's minutes, so
the images are random 32×32 colour ones and the backbone is ResNet-32 (d=64). Every run
extracts all splits into a fresh store through
:func:`explore.backbone.extract_job.extract_to_store` on a local Ray cluster, with at most 1
or 2 ranges at once (one CPU each); the rounds alternate the order. The features of every
run must be equal bit for bit, and equal to the driver's own single-process extraction
(today's path, also timed, once per round, with the harness's torch threads).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from benchmarks._timing import Figure, Timed, fmt_times, speedup, time_side_by_side
from explore.backbone import ModelSpec, extract_features
from explore.data.types import ImageSplit

IMAGENET_LT_SPLITS = {"train": 115_846, "val": 20_000, "test": 50_000}
SHARD_ROWS = 65_536
BATCH = 512


@dataclass(frozen=True)
class ExtractionReport:
    images: int
    rows_per_shard: int
    ranges: int
    timed: dict[str, Timed]

    def figures(self) -> list[Figure]:
        n = self.images
        one, two, driver = self.timed["1 worker"], self.timed["2 workers"], self.timed["driver"]
        return [
            Figure("extraction on 1 worker (Ray task per range)", n / one.median, "img/s",
                   note=f"{n} images, {self.ranges} ranges of <= {self.rows_per_shard} rows; {fmt_times(one)}"),
            Figure("extraction on 2 workers", n / two.median, "img/s", note=fmt_times(two)),
            Figure("  2 workers vs 1 (median of round ratios)", speedup(one, two), "x",
                   note=f"at most {min(2, self.ranges)} ranges run at once"),
            Figure("  in the driver, one process (before)", n / driver.median, "img/s",
                   note=f"{fmt_times(driver)}; features equal bit for bit in every run"),
        ]


def scaled_splits(scale: int, size: int = 32, seed: int = 0) -> dict[str, ImageSplit]:
    """ImageNet-LT's split sizes over ``scale``: random ``size``² colour images, 1000 classes."""
    rng = np.random.default_rng(seed)
    return {name: ImageSplit(labels=rng.integers(0, 1000, math.ceil(n / scale)),
                             images=rng.integers(0, 256, (math.ceil(n / scale), size, size, 3), dtype=np.uint8))
            for name, n in IMAGENET_LT_SPLITS.items()}


def bench_extraction(scale: int, rounds: int) -> ExtractionReport:
    """Extract ``scaled_splits(scale)`` ``rounds`` times each way; needs the loopback namespace."""
    import ray
    import torch

    from explore.backbone.extract_job import extract_to_store, plan_ranges
    from explore.store import FeatureStore

    splits = scaled_splits(scale)
    rows = -(-math.ceil(SHARD_ROWS / scale) // BATCH) * BATCH  # a whole number of batches
    spec = ModelSpec("resnet32", 1000, 3)
    torch.manual_seed(0)
    model = spec.build()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: list[dict[str, np.ndarray]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="explore-bench-extract-") as tmp:
            # Untimed: two worker processes started and their imports done (a cluster's
            # workers are up before a sweep extracts).
            tiny = {n: ImageSplit(labels=s.labels[:1], images=s.images[:1]) for n, s in splits.items()}
            extract_to_store(FeatureStore(os.path.join(tmp, "warm-up"), max_rows_per_shard=1), "warm", tiny,
                             spec, state, tuple(map(str, range(1000))), {}, batch_size=1, workers=2,
                             use_gpu=False)
            runs = iter(range(10_000))

            def on_workers(workers: int) -> None:
                store = FeatureStore(os.path.join(tmp, f"run{next(runs)}"), max_rows_per_shard=rows)
                fset = extract_to_store(store, "bench", splits, spec, state, tuple(map(str, range(1000))),
                                        {}, batch_size=BATCH, workers=workers, use_gpu=False)
                results.append({n: np.asarray(s.features) for n, s in fset.splits.items()})

            def in_driver() -> None:
                results.append({n: extract_features(model, s, BATCH) for n, s in splits.items()})

            timed = time_side_by_side({"1 worker": lambda: on_workers(1), "2 workers": lambda: on_workers(2),
                                       "driver": in_driver}, rounds)
    finally:
        if started_ray:
            ray.shutdown()
    for other in results[1:]:
        for name, feats in results[0].items():
            if not np.array_equal(feats, other[name]):
                raise AssertionError(f"extraction runs disagree on split {name}")
    ranges = len(plan_ranges({n: len(s) for n, s in splits.items()}, rows))
    return ExtractionReport(sum(len(s) for s in splits.values()), rows, ranges, timed)
