"""Benchmark 9 — the GPU check (``python -m benchmarks --only gpu [--device cuda|cpu]``).

One table (and JSON with ``--json``) of what explore does on the device, each figure saying
where it actually ran:

1. **Head methods at ImageNet-LT size** (SWRM, DySWRM, neighbor silencing, LFM; one epoch
   through the recipe's ``fit_head`` on the device, ``TrialInputs.device``), seconds per
   epoch per seed against the *device's* matrix-product floor of the same epoch measured in
   the same run, and the method's own seeds trained stacked (``head.seeds_stacked=true``)
   versus one at a time.
2. **Four trials packed on one device versus one at a time**: 4 worker processes (what
   Ray starts for 4 trials of ``gpus_per_trial=0.25``: processes sharing the GPU) each
   train a linear head's epochs (its matrix products, on the device), all at once and
   then one after the other; the figure is the throughput ratio.
3. **Extraction images/s** on the device: ResNet-32 on CIFAR-shaped 32×32 images, and
   ResNeXt-50 on 224×224 images (ImageNet-LT's backbone) where torchvision is installed.
4. **One full-mode epoch**: ResNet-32 on a CIFAR-100-LT-shaped training split (10,847
   images, 100 classes, imbalance 100) through ``train_backbone``, AMP off and on (AMP is
   CUDA-only: on the CPU it is reported as not run).

``--device cuda`` (the default where CUDA is available) runs the real sizes, meant to take
well under 8 minutes on one H100; ``--device cpu`` runs the same code at smoke size, which
``tests/benchmarks/test_gpu.py`` does so that the script cannot rot.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks._pack_worker import trial_worker
from benchmarks._timing import Figure
from benchmarks.heads import AUX_PER_CLASS, case_shape, floor_epochs, head_cases, sync
from benchmarks.synthetic import IMAGENET_LT, LongTailSize, make_aux_split, make_feature_set
from explore.recipes import get_recipe
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.training.inputs import TrialInputs
from explore.training.tensors import tensor_view


@dataclass(frozen=True)
class GpuSizes:
    """What the check runs at: the real sizes on CUDA, smoke sizes on the CPU."""

    heads: LongTailSize
    heads_aux: int
    stacked_seeds: int
    pack_trials: int
    pack_epochs: int
    extract_images: int
    extract_big_images: int
    """ResNeXt-50 at 224×224 (0: not run)."""
    full_classes: int
    full_n_max: int
    """Full mode: images of the largest class; the smallest has 1/100 of it (CIFAR-100-LT)."""
    full_batch: int


REAL = GpuSizes(IMAGENET_LT, heads_aux=500, stacked_seeds=4, pack_trials=4, pack_epochs=5,
                extract_images=50_000, extract_big_images=2_048, full_classes=100, full_n_max=500, full_batch=128)
SMOKE = GpuSizes(LongTailSize(num_classes=40, train_total=4634, d=16), heads_aux=8, stacked_seeds=2,
                 pack_trials=4, pack_epochs=1, extract_images=128, extract_big_images=0, full_classes=10,
                 full_n_max=8, full_batch=8)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


# --------------------------------------------------------------------------- 1. heads


def _fit_seconds(recipe: Any, trial: TrialInputs, params: Any, seeds: list[int],
                 device: torch.device) -> tuple[float, Any]:
    """Wall seconds of one ``fit_head`` (the device synchronised: a result read without it
    would time only the kernel launches) and the fit."""
    sync(device)
    started = time.perf_counter()
    fit = recipe.fit_head(trial, params, seeds)
    sync(device)
    return time.perf_counter() - started, fit


def bench_heads_on_device(sizes: GpuSizes, device: torch.device) -> list[Figure]:
    """Each head method trained on ``device`` (``TrialInputs.device``: features copied there
    once, batches sliced there), against the device's matrix-product floor of the same
    epoch; then ``stacked_seeds`` seeds trained stacked against one at a time."""
    fset = make_feature_set(sizes.heads)
    aux, names, _ = make_aux_split(sizes.heads, num_aux=sizes.heads_aux, per_class=AUX_PER_CLASS)
    with_aux = FeatureSet({**fset.splits, "aux": aux}, fset.classes, {**fset.meta, "aux_classes": list(names)})
    th = SplitThresholds()
    plain = TrialInputs(fset, None, th, device=device)
    ns_inputs = TrialInputs(with_aux, None, th, device=device)
    x = tensor_view(fset.train.features).to(device)
    val_x = tensor_view(fset.val.features).to(device)
    seeds = list(range(sizes.stacked_seeds))
    figures = []
    for case in head_cases(1):
        inputs = ns_inputs if case.method == "neighbor_silencing" else plain
        recipe = get_recipe(case.method)
        params = recipe.params(case.settings)
        one = dataclasses.replace(inputs, head=dataclasses.replace(case.head, seeds_stacked=False))
        try:
            shape = case_shape(case, one)
            seconds, fit = _fit_seconds(recipe, one, params, [0], device)
            stacked_s, _ = _fit_seconds(recipe, dataclasses.replace(
                inputs, head=dataclasses.replace(case.head, seeds_stacked=True)), params, seeds, device)
            sequential_s, _ = _fit_seconds(recipe, one, params, seeds, device)
        except Exception as exc:  # noqa: BLE001 - one method's failure (e.g. no text encoder) is a line
            figures.append(Figure(f"{case.method}: not run", math.nan, "", note=f"{type(exc).__name__}: {exc}"))
            continue
        result = fit.results[0]
        epochs = max(case.head.epochs, 1)
        floor_epochs(shape, x, val_x, 1)  # warm-up: kernels chosen, memory allocated
        floor = floor_epochs(shape, x, val_x, 1)
        figures += [
            Figure(f"{case.method}: s per epoch per seed", seconds / epochs, "s",
                   note=f"on {describe(device)} (its evaluation included); {shape.rows} rows, "
                        f"batch {shape.batch}; test top-1 {result.test['acc_overall']:.3f}"),
            Figure("  device's matrix-product floor, s per epoch", floor, "s",
                   note=f"on {describe(device)}: {shape.gflop:.0f} GFLOP → {shape.gflop / floor:.0f} GFLOP/s"),
            Figure("  ratio to the device's floor", seconds / epochs / floor, "x"),
            Figure(f"  {len(seeds)} seeds stacked vs one at a time (the method itself)",
                   sequential_s / stacked_s, "x", note=f"on {describe(device)}: "
                   f"{sequential_s:.2f} s one at a time, {stacked_s:.2f} s stacked"),
        ]
    return figures


# --------------------------------------------------------------------------- 2. packing


def bench_packing(sizes: GpuSizes, device: torch.device) -> list[Figure]:
    size = sizes.heads
    ctx = multiprocessing.get_context("spawn")
    jobs, done = [ctx.Queue() for _ in range(sizes.pack_trials)], ctx.Queue()
    procs = [ctx.Process(target=trial_worker, args=(str(device), size.d, size.num_classes, size.train_total,
                                                    sizes.pack_epochs, q, done))
             for q in jobs]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            done.get(timeout=300)
        start = time.perf_counter()
        for q in jobs:  # one at a time
            q.put(1)
            done.get(timeout=600)
        one_at_a_time = time.perf_counter() - start
        start = time.perf_counter()
        for q in jobs:  # all packed on the device at once
            q.put(1)
        for _ in jobs:
            done.get(timeout=600)
        packed = time.perf_counter() - start
    finally:
        for q in jobs:
            q.put(None)
        for p in procs:
            p.join(60)
    n = sizes.pack_trials
    return [
        Figure(f"{n} trials packed on one device vs one at a time", one_at_a_time / packed, "x",
               note=f"on {describe(device)}: {n} processes × {sizes.pack_epochs} epochs of a {size.d}→"
                    f"{size.num_classes} head's products; one at a time {one_at_a_time:.2f} s, packed {packed:.2f} s"),
    ]


# --------------------------------------------------------------------------- 3. extraction


def _images_per_second(arch: str, images: int, side: int, device: torch.device, batch: int) -> float:
    from explore.backbone import ModelSpec, extract_features
    from explore.data.types import ImageSplit

    model = ModelSpec(arch, 1000, 3).build()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (min(images, 4 * batch), side, side, 3), dtype=np.uint8)
    reps = -(-images // len(pixels))
    split = ImageSplit(labels=np.zeros(len(pixels), np.int64), images=pixels)
    extract_features(model, ImageSplit(labels=split.labels[:batch], images=pixels[:batch]), batch, device)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        extract_features(model, split, batch, device)
    sync(device)
    return reps * len(pixels) / (time.perf_counter() - start)


def bench_extraction_on_device(sizes: GpuSizes, device: torch.device) -> list[Figure]:
    rate = _images_per_second("resnet32", sizes.extract_images, 32, device, 512)
    figures = [Figure("extraction, ResNet-32 at 32×32", rate, "img/s",
                      note=f"on {describe(device)}; float32, eval mode, batches of 512")]
    if sizes.extract_big_images:
        try:
            big = _images_per_second("resnext50_32x4d", sizes.extract_big_images, 224, device, 256)
            figures.append(Figure("extraction, ResNeXt-50 at 224×224", big, "img/s",
                                  note=f"on {describe(device)}; float32, batches of 256"))
        except Exception as exc:  # noqa: BLE001 - torchvision missing: say so, go on
            figures.append(Figure("extraction, ResNeXt-50 at 224×224: not run", math.nan, "",
                                  note=f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    return figures


# --------------------------------------------------------------------------- 4. full mode


def bench_full_epoch(sizes: GpuSizes, device: torch.device) -> list[Figure]:
    from explore.backbone import BackboneTrainConfig, build_model, train_backbone
    from explore.data.types import ImageSplit

    # CIFAR-100-LT's profile: n_c = n_max · 0.01^(c/(C−1)), 10,847 images for 100 classes of ≤ 500.
    C = sizes.full_classes
    counts = (sizes.full_n_max * 0.01 ** (np.arange(C) / (C - 1))).astype(int)
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(0)
    train = ImageSplit(labels=labels, images=rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8))
    figures = []
    for amp in (False, True):
        if amp and device.type != "cuda":
            figures.append(Figure("full-mode ResNet-32 epoch, AMP on: not run", math.nan, "",
                                  note="AMP is CUDA-only"))
            continue
        cfg = BackboneTrainConfig(arch="resnet32", epochs=1, batch_size=sizes.full_batch,
                                  use_gpu=device.type == "cuda", amp=amp)
        torch.manual_seed(0)
        model = build_model("resnet32", sizes.full_classes, 3)
        start = time.perf_counter()
        out = train_backbone(model, train, None, cfg, device=device)
        sync(device)
        seconds = time.perf_counter() - start
        figures.append(Figure(f"full-mode ResNet-32 epoch, AMP {'on' if amp else 'off'}", seconds, "s",
                              note=f"on {describe(device)}: {len(labels)} images, {sizes.full_classes} classes, "
                                   f"batch {sizes.full_batch}; loss {out['final']['train_loss']:.3f}"))
    figures.append(Figure("full mode with NCCL on two workers: not run", math.nan, "",
                          note="needs two GPUs" if torch.cuda.device_count() < 2
                          else "not part of this check yet"))
    return figures


PARTS: dict[str, Callable[[GpuSizes, torch.device], list[Figure]]] = {
    "heads": bench_heads_on_device,
    "packing": bench_packing,
    "extraction": bench_extraction_on_device,
    "full": bench_full_epoch,
}


def bench_gpu(device: torch.device, progress: Callable[[str], None] | None = None) -> list[Figure]:
    """Every part at the sizes for ``device`` (real on CUDA, smoke on the CPU)."""
    sizes = REAL if device.type == "cuda" else SMOKE
    figures = []
    for name, part in PARTS.items():
        started = time.perf_counter()
        figures += part(sizes, device)
        if progress is not None:
            progress(f"  ({name}: {time.perf_counter() - started:.0f} s)")
    return figures
