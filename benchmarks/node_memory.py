"""Benchmark 7 — a node's memory with 4 concurrent trial processes loading one feature entry.

Each "trial" is a separate process that does what a head trial's ``load_inputs`` does with
the features: ``FeatureStore(uri).read(key)``, then touches every page of every split (a
pass over the features, as an epoch does) and holds them until all four are done. The
parent samples the sum of the four processes' PSS (proportional set size, from
``/proc/<pid>/smaps_rollup``: a page shared by k processes counts 1/k in each, so the sum
is what the node really spends) every 20 ms, and reports the peak and the sum while all
four hold the features, both above the four processes' PSS before they read (the
interpreter and its imports).

Before: private copies (``node_cache=False``: today's read path, where an S3 read or a
split of several shards lands in each process's own memory). After: the node-local copy
(``node_cache`` on): fetched once, memory-mapped by all four. Both run in the same
invocation, one after the other, on the same entry.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass

from benchmarks._node_trial import WARM_UP_KEY, trial
from benchmarks._timing import Figure
from benchmarks.synthetic import LongTailSize, make_feature_set
from explore.store import FeatureStore, feature_key

TRIALS = 4
SAMPLE_S = 0.02


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of ``pid`` in kB; (0, 0) once it has gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss




@dataclass(frozen=True)
class MemoryRun:
    mode: str
    peak_pss_mb: float
    """Peak of the summed PSS while loading, above the processes' own before reading."""
    held_pss_mb: float
    """The same once all four hold the features, both above the four processes' PSS before they read (the
interpreter and its imports)."""
    held_rss_mb: float
    """Summed RSS once all four hold them (shared pages counted in each: not the node's)."""
    seconds: float


def _pss_sum(procs: list) -> int:
    return sum(_memory_kb(p.pid)[0] for p in procs if p.pid)


def measure(uri: str, key: str, rows_per_shard: int, node_cache: str | bool) -> MemoryRun:
    """Four trial processes reading ``key`` at once; their summed memory above what the
    same processes use before reading (the interpreter and its imports)."""
    ctx = multiprocessing.get_context("spawn")
    events, go, release = ctx.Queue(), ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=trial, args=(uri, rows_per_shard, node_cache, key, events, go, release))
             for _ in range(TRIALS)]
    for p in procs:
        p.start()
    for _ in procs:  # every process imported what it needs
        events.get(timeout=300)
    baseline = _pss_sum(procs)
    started = time.perf_counter()
    go.set()
    peak, sums = 0, []
    while len(sums) < TRIALS:
        peak = max(peak, _pss_sum(procs))
        while not events.empty():
            sums.append(events.get())
        if any(p.exitcode not in (None, 0) for p in procs):
            raise RuntimeError("a trial process failed while loading the features")
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    held = [_memory_kb(p.pid) for p in procs if p.pid]
    release.set()
    for p in procs:
        p.join(60)
    if len({round(s, 3) for s in sums}) != 1:
        raise AssertionError(f"trial processes read different features: {sums}")
    mode = "private copies (before)" if node_cache is False else "node-local copy (after)"
    held_pss = sum(h[0] for h in held)
    return MemoryRun(mode, (max(peak, held_pss) - baseline) / 1024, (held_pss - baseline) / 1024,
                     sum(h[1] for h in held) / 1024, seconds)


@dataclass(frozen=True)
class NodeMemoryReport:
    backend: str
    features_mb: float
    runs: list[MemoryRun]

    def figures(self) -> list[Figure]:
        out = []
        for run in self.runs:
            out.append(Figure(f"{TRIALS} trials, {self.backend}: {run.mode}, peak PSS added", run.peak_pss_mb, "MB",
                              note=f"while holding: PSS added {run.held_pss_mb:.0f} MB, RSS {run.held_rss_mb:.0f} MB; "
                                   f"all loaded in {run.seconds:.1f} s; features {self.features_mb:.0f} MB"))
        before, after = self.runs
        out.append(Figure(f"  {self.backend}: peak node memory, before / after", before.peak_pss_mb
                          / after.peak_pss_mb, "x", note=f"held: {before.held_pss_mb / after.held_pss_mb:.2f}x"))
        return out


def bench_node_memory(uri: str, backend: str, size: LongTailSize, rows_per_shard: int) -> NodeMemoryReport:
    """Write ``size`` features under ``uri`` in shards of ``rows_per_shard``; measure before/after."""
    fset = make_feature_set(size, seed=2)
    key = feature_key({"benchmark": "node_memory", "size": repr(size), "rows": rows_per_shard})
    store = FeatureStore(uri, max_rows_per_shard=rows_per_shard, node_cache=False)
    store.write(key, fset)
    store.write(WARM_UP_KEY, make_feature_set(LongTailSize(num_classes=4, train_total=40, n_max=20,
                                                           d=size.d)))
    features_mb = sum(s.features.nbytes for s in fset.splits.values()) / 1e6
    del fset
    with tempfile.TemporaryDirectory(prefix="explore-bench-node-") as node:
        runs = [measure(uri, key, rows_per_shard, False), measure(uri, key, rows_per_shard, node)]
    store.delete(key)
    store.delete(WARM_UP_KEY)
    return NodeMemoryReport(backend, features_mb, runs)


def bench_node_memory_local(size: LongTailSize, rows_per_shard: int) -> NodeMemoryReport:
    with tempfile.TemporaryDirectory(prefix="explore-bench-nodemem-") as tmp:
        return bench_node_memory(os.path.join(tmp, "store"), "local store", size, rows_per_shard)


def bench_node_memory_s3(size: LongTailSize, rows_per_shard: int) -> NodeMemoryReport:
    from benchmarks.store import moto_bucket

    with moto_bucket("nodemem") as uri:
        return bench_node_memory(uri, "S3 store (moto)", size, rows_per_shard)
