"""Feature extraction as Ray work: every split cut into shard-sized ranges, one Ray task per
range, each writing its Arrow shard straight to the feature store.

* Fixed ranges: range ``i`` of a split is rows ``[i·R, (i+1)·R)`` with ``R`` the store's
  ``max_rows_per_shard``, batched from its own start, so with ``R`` a multiple of the batch
  size every batch is the single-process one (:func:`~explore.backbone.extract.
  extract_features`): the same features bit for bit on the CPU.
* Workers: a task asks for one GPU when the cluster has GPUs (and runs the backbone there),
  else one CPU. The backbone's weights go to the object store once; each task receives
  only its range's images (or file paths), and returns only its shard's record.
* Failures: a task whose worker dies is retried by Ray (``max_retries``); a range whose
  shard a task already finished (written and verified, see
  :meth:`~explore.store.FeatureStore.finished_shard`) is not extracted again, neither in a
  retry nor when a later build resumes a killed one.
* The driver holds the store's build lock, shows images done/total, and writes the
  manifest last (:meth:`~explore.store.FeatureStore.get_or_build_sharded`).

Without a running Ray the same ranges run one after another in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from explore.backbone.models import ModelSpec
from explore.data.types import ImageSplit
from explore.store import FeatureSet, FeatureStore
from explore.store.shards import ShardedEntry

__all__ = ["ExtractRange", "extract_to_store", "plan_ranges"]

POLL_S = 0.5
"""How often the driver looks at the tasks' progress."""


@dataclass(frozen=True)
class ExtractRange:
    """Rows ``[start, stop)`` of ``split``: shard ``index`` of it in the store."""

    split: str
    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_ranges(sizes: Mapping[str, int], rows_per_shard: int) -> list[ExtractRange]:
    """Every split of ``sizes`` (name → images) cut into ranges of ``rows_per_shard``."""
    return [ExtractRange(name, i, start, min(start + rows_per_shard, n))
            for name, n in sizes.items()
            for i, start in enumerate(range(0, n, rows_per_shard))]


def _slice(split: ImageSplit, rng: ExtractRange) -> ImageSplit:
    labels = np.asarray(split.labels)[rng.start:rng.stop]
    if split.images is not None:
        return ImageSplit(labels=labels, images=split.images[rng.start:rng.stop])
    assert split.paths is not None
    return ImageSplit(labels=labels, paths=tuple(split.paths[rng.start:rng.stop]))


@dataclass(frozen=True)
class _Job:
    """What every range of one extraction shares (pickled into each task)."""

    store: FeatureStore
    key: str
    spec: ModelSpec
    d: int
    batch_size: int
    decode: Callable[[str], np.ndarray] | None


def _extract_range(job: _Job, rng: ExtractRange, part: ImageSplit, state: Mapping[str, Any],
                   device: str, report: Callable[[int], None]) -> dict[str, Any]:
    """Range ``rng`` (images ``part``) through the backbone into its shard; its record."""
    found = job.store.finished_shard(job.key, rng.split, rng.index, rng.rows, job.d)
    if found is not None:
        report(rng.rows)
        return found
    import torch

    from explore.backbone.extract import extract_features

    model = job.spec.build()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    done = 0

    def batch_done(n: int) -> None:
        nonlocal done
        done += n
        report(done)

    features = extract_features(model, part, job.batch_size, device, job.decode, batch_done)
    return job.store.write_shard(job.key, rng.split, rng.index, features,
                                 np.asarray(part.labels, dtype=np.int64))


def extract_to_store(
    store: FeatureStore,
    key: str,
    splits: Mapping[str, ImageSplit],
    spec: ModelSpec,
    state: Mapping[str, Any],
    classes: tuple[str, ...],
    meta: Mapping[str, Any],
    *,
    batch_size: int = 512,
    decode: Callable[[str], np.ndarray] | None = None,
    workers: int | None = None,
    use_gpu: bool | None = None,
    max_retries: int = 3,
    progress: Callable[[int], None] | None = None,
) -> FeatureSet:
    """The backbone ``spec`` with weights ``state`` run over every split of ``splits``, stored
    under ``key`` (or read back when already stored); see the module docstring.

    ``workers``: at most this many ranges at once (None: as many as the cluster's
    resources run). ``use_gpu``: one GPU per task (None: when the cluster has a GPU).
    ``progress(n)``: told that ``n`` more images are done.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    d = spec.build().feature_dim
    job = _Job(store, key, spec, d, batch_size, decode)
    ranges = plan_ranges({name: len(s) for name, s in splits.items()}, store.max_rows_per_shard)

    def build() -> ShardedEntry:
        import ray

        run = _run_on_ray if ray.is_initialized() else _run_here
        records = run(job, ranges, splits, state, workers, use_gpu, max_retries,
                      progress or (lambda n: None))
        shards: dict[str, list[dict[str, Any]]] = {name: [] for name in splits}
        for rng in ranges:
            shards[rng.split].append(records[rng])
        return ShardedEntry(d, tuple(classes), dict(meta), shards)

    return store.get_or_build_sharded(key, build)


Records = dict[ExtractRange, dict[str, Any]]


def _run_here(job: _Job, ranges: list[ExtractRange], splits: Mapping[str, ImageSplit],
              state: Mapping[str, Any], workers: int | None, use_gpu: bool | None,
              max_retries: int, progress: Callable[[int], None]) -> Records:
    import torch

    device = "cuda" if use_gpu is not False and torch.cuda.is_available() else "cpu"
    records: Records = {}
    for rng in ranges:
        seen = 0

        def report(done: int) -> None:
            nonlocal seen
            progress(done - seen)
            seen = done

        records[rng] = _extract_range(job, rng, _slice(splits[rng.split], rng), state, device,
                                      report)
    return records


def _run_on_ray(job: _Job, ranges: list[ExtractRange], splits: Mapping[str, ImageSplit],
                state: Mapping[str, Any], workers: int | None, use_gpu: bool | None,
                max_retries: int, progress: Callable[[int], None]) -> Records:
    import ray

    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    tally: Any = ray.remote(num_cpus=0)(_Tally).remote()
    task = ray.remote(_range_task).options(
        num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
        max_retries=max_retries, retry_exceptions=False, name="explore-extract-range",
    )
    weights: Any = ray.put(dict(state))
    limit = workers or len(ranges)
    waiting = list(enumerate(ranges))
    running: dict[Any, ExtractRange] = {}
    records: Records = {}
    shown = 0
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                i, rng = waiting.pop(0)
                # The range's images only: the driver never sends (or holds) a split's features.
                ref = task.remote(job, rng, i, _slice(splits[rng.split], rng), weights, tally,
                                  use_gpu)
                running[ref] = rng
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                records[running.pop(ref)] = ray.get(ref)
            # A finished range counts whole: its last reports may reach the tally later.
            most = ray.get(tally.most_done.remote())
            done = sum(rng.rows if rng in records else most.get(i, 0) for i, rng in enumerate(ranges))
            if done > shown:
                progress(done - shown)
                shown = done
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        ray.kill(tally)
    return records


def _range_task(job: _Job, rng: ExtractRange, range_id: int, part: ImageSplit,
                state: Mapping[str, Any], tally: Any, use_gpu: bool) -> dict[str, Any]:
    import ray
    import torch

    device = "cuda" if use_gpu and ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return _extract_range(job, rng, part, state, device,
                          lambda n: tally.report.remote(range_id, n))


class _Tally:
    """Images done per range, as the range's tasks report them; a retried range starts
    again from 0, so the driver shows the most any attempt of it reached."""

    def __init__(self) -> None:
        self.most: dict[int, int] = {}

    def report(self, range_id: int, images: int) -> None:
        self.most[range_id] = max(self.most.get(range_id, 0), images)

    def most_done(self) -> dict[int, int]:
        return self.most
