"""Command line: ``python -m benchmarks [--quick] [--only NAME ...] [--device cuda|cpu] [--json PATH]``
from the repository root.

Run it inside the loopback namespace so that the S3 part may start its moto server:
``bash .ci/loopback .venv/bin/python -m benchmarks``. Outside it, the S3 part is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from benchmarks._timing import Figure, load_average
from benchmarks.extraction import bench_extraction
from benchmarks.fixed_cost import bench_fixed_cost
from benchmarks.gpu import bench_gpu
from benchmarks.heads import bench_heads
from benchmarks.node_memory import bench_node_memory_local, bench_node_memory_s3
from benchmarks.overhead import bench_overhead
from benchmarks.recompute import bench_recompute
from benchmarks.repeats import bench_repeats
from benchmarks.scale import bench_scale
from benchmarks.store import bench_store_local, bench_store_s3, loopback_only, store_size
from benchmarks.synthetic import IMAGENET_LT, LongTailSize, Problem
from explore.methods.alphanet import AlphaNetParams

NAMES = ("repeats", "recompute", "overhead", "fixedcost", "store", "scale", "heads", "nodemem", "extraction",
         "gpu")
"""``overhead`` selects ``fixedcost`` too (the per-phase table of a sweep's fixed cost)."""


@dataclass(frozen=True)
class Mode:
    """Sizes and repeats of one harness mode."""

    name: str
    big: LongTailSize
    """The 'ImageNet-LT' problem (full: the real size; quick: a reduced one)."""
    small: LongTailSize | None
    """An extra, overhead-bound size for the repeats benchmark (full mode only)."""
    epochs: int
    repeats_runs: int
    recompute_seeds: int
    recompute_runs: int
    store_mb: float
    store_runs: int
    scale_classes: tuple[int, ...]
    scale_ks: tuple[int, ...]
    overhead_trials: int = 6
    overhead_trial_seconds: float = 10.0
    overhead_placements: tuple[str, ...] = ("in_trial", "ray_train")
    heads_epochs: int = 1
    heads_seeds: int = 3
    """Rounds per head method: one seed each, beside its matrix-product floor."""
    heads_aux: int = 500
    """Auxiliary classes in neighbor silencing's synthetic pool (60 samples each)."""
    heads_batch_seeds: int = 4
    """Seeds in the batched-vs-sequential comparison of the heads' matrix products."""
    nodemem_classes: int = 250
    """Node memory: ImageNet-LT's profile with this many classes (250: a quarter of its rows)."""
    nodemem_shard_rows: int = 16_384
    """… and shards scaled like the rows (65,536 / 4), so its train split spans 2 shards too."""
    extraction_scale: int = 40
    """Extraction: ImageNet-LT's split sizes and shard size divided by this."""
    extraction_rounds: int = 2
    fixedcost_repeats: int = 5
    """Fixed cost: second sweeps per way of running (after one cold sweep each)."""


FULL = Mode("full", IMAGENET_LT, replace(IMAGENET_LT, d=256), epochs=25, repeats_runs=2, recompute_seeds=2,
            recompute_runs=2, store_mb=200, store_runs=7, scale_classes=(250, 500, 1000), scale_ks=(2, 5, 10))
QUICK = Mode("quick", replace(IMAGENET_LT, d=256).scaled(200), None, epochs=10, repeats_runs=5,
             recompute_seeds=2, recompute_runs=2, store_mb=50, store_runs=5, scale_classes=(100, 200),
             scale_ks=(2, 5), overhead_trials=4, overhead_trial_seconds=3.0, overhead_placements=("in_trial",),
             heads_epochs=2, heads_seeds=3, heads_aux=100, heads_batch_seeds=2, nodemem_classes=60,
             nodemem_shard_rows=4096, extraction_scale=200, extraction_rounds=1, fixedcost_repeats=2)


def _describe(size: LongTailSize) -> str:
    return f"C={size.num_classes}, N_train={size.train_total}, d={size.d}"


def _print(line: str) -> None:
    print(line, flush=True)  # progress shows even when stdout is a file


def run(mode: Mode, only: set[str], out: Callable[[str], None] = _print,
        device: torch.device | None = None) -> list[Figure]:
    """Run the selected benchmarks of ``mode`` (``gpu`` on ``device``: CUDA where there is
    one); print and return their figures."""
    figures: list[Figure] = []

    def report(title: str, figs: list[Figure], started: float) -> None:
        out(f"\n== {title}  ({time.perf_counter() - started:.0f} s)")
        for fig in figs:
            out(fig.line())
        figures.extend(figs)

    big: Problem | None = None

    def big_problem() -> Problem:
        nonlocal big
        if big is None:
            started = time.perf_counter()
            big = Problem.make(mode.big)
            out(f"(generated synthetic {_describe(mode.big)} in {time.perf_counter() - started:.0f} s)")
        return big

    params = AlphaNetParams(k=10, distance="euclidean", rho=0.5, epochs=mode.epochs)
    if "repeats" in only:
        started = time.perf_counter()
        figs = bench_repeats(big_problem().inputs, params, 10, mode.repeats_runs, _describe(mode.big)).figures()
        if mode.small is not None:
            small = Problem.make(mode.small)
            figs += bench_repeats(small.inputs, params, 10, mode.repeats_runs + 1, _describe(mode.small)).figures()
            del small
        report(f"1. repeats: batched vs sequential seeds, k=10, {mode.epochs} epochs", figs, started)
    if "recompute" in only:
        started = time.perf_counter()
        problem = big_problem()
        problem.drop_inputs()  # the shipped path builds its own Z, inside the timing
        figs = bench_recompute(problem, params, mode.recompute_seeds, mode.recompute_runs,
                               _describe(mode.big)).figures()
        report(f"2. work AlphaNet need not redo, k=10, {mode.epochs} epochs", figs, started)
    if "overhead" in only:
        started = time.perf_counter()
        if loopback_only():
            figs = bench_overhead(mode.overhead_trials, mode.overhead_trial_seconds, mode.overhead_placements)
            report(f"3. sweep overhead: {mode.overhead_trials} trials of ~{mode.overhead_trial_seconds:g} s, "
                   "full sweep path vs in-process", figs, started)
        else:
            out("(overhead skipped: it starts Ray, so it must run in the loopback-only namespace)")
    if "fixedcost" in only or "overhead" in only:  # overhead selects it too
        started = time.perf_counter()
        if loopback_only():
            figs = bench_fixed_cost(mode.fixedcost_repeats, out)
            report("10. fixed cost of a one-configuration 10-seed sweep, CIFAR-100-LT-shaped features: "
                   "own cluster / RAY_ADDRESS / ray job submit", figs, started)
        else:
            out("(fixedcost skipped: it starts Ray, so it must run in the loopback-only namespace)")
    if "store" in only:
        started = time.perf_counter()
        size = store_size(mode.store_mb)
        figs = bench_store_local(size, mode.store_runs).figures()
        if loopback_only():
            figs += bench_store_s3(size, mode.store_runs).figures()
        else:
            out("(S3 part skipped: not in a loopback-only network namespace; run it as "
                "`bash .ci/loopback .venv/bin/python -m benchmarks`)")
        report("4. feature store read throughput", figs, started)
    if "scale" in only:
        started = time.perf_counter()
        problem = big_problem()
        problem.drop_inputs()
        with tempfile.TemporaryDirectory(prefix="explore-bench-scale-") as tmp:
            rep = bench_scale(problem, tmp, list(mode.scale_classes), list(mode.scale_ks), 10, mode.epochs)
        report(f"5. scale: {_describe(mode.big)}, euclidean, rho=0.5, 10 seeds", rep.figures(), started)
    if "heads" in only:
        started = time.perf_counter()
        problem = big_problem()
        problem.drop_inputs()  # head methods train on the features, not on base logits
        figs = bench_heads(problem, mode.heads_epochs, mode.heads_seeds, mode.heads_aux,
                           mode.heads_batch_seeds, progress=out).figures()
        report(f"6. head methods vs their matrix-product floor: {_describe(mode.big)}, "
               f"{mode.heads_epochs} epochs, one seed per round", figs, started)
    if "nodemem" in only:
        started = time.perf_counter()
        size = replace(IMAGENET_LT, d=2048).scaled(mode.nodemem_classes)
        figs = bench_node_memory_local(size, mode.nodemem_shard_rows).figures()
        if loopback_only():
            figs += bench_node_memory_s3(size, mode.nodemem_shard_rows).figures()
        else:
            out("(S3 part skipped: not in a loopback-only network namespace)")
        report(f"7. a node's memory, 4 trial processes loading {_describe(size)}", figs, started)
    if "extraction" in only:
        started = time.perf_counter()
        if loopback_only():
            rep = bench_extraction(mode.extraction_scale, mode.extraction_rounds)
            report(f"8. extraction as Ray tasks, ImageNet-LT's splits / {mode.extraction_scale}, ResNet-32 "
                   "at 32×32", rep.figures(), started)
        else:
            out("(extraction skipped: it starts Ray, so it must run in the loopback-only namespace)")
    if "gpu" in only:
        started = time.perf_counter()
        dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        figs = bench_gpu(dev, progress=out)
        report(f"9. GPU check on {dev} ({'real' if dev.type == 'cuda' else 'smoke'} sizes)", figs, started)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (about 1–2 minutes)")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only this benchmark (repeatable)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="the gpu benchmark's device (default: cuda where available; cpu runs it at smoke size)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads (default 2; 1 steadies timings on a loaded machine)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    torch.set_num_threads(args.threads)
    mode = QUICK if args.quick else FULL
    only = set(args.only or NAMES)
    if "overhead" in only:
        only.add("fixedcost")
    _print(f"explore benchmarks, {mode.name} mode: {', '.join(n for n in NAMES if n in only)}")
    print(f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, python {sys.version.split()[0]}, "
          f"load average {load_average():.1f}")
    started = time.perf_counter()
    figures = run(mode, only, device=torch.device(args.device) if args.device else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": mode.name, "only": sorted(only), "figures": [
                {"name": fig.name.strip(), "value": None if fig.value != fig.value else fig.value,
                 "unit": fig.unit, "target": fig.target, "met": fig.met, "note": fig.note}
                for fig in figures]}, f, indent=1)
    missed = [f.name.strip() for f in figures if f.met is False]
    print(f"\ndone in {time.perf_counter() - started:.0f} s (load average {load_average():.1f}); "
          f"targets missed: {missed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
