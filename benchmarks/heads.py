"""Benchmark 6 — the head methods at ImageNet-LT scale against their matrix-product floor.

SWRM, DySWRM, neighbor silencing (with a synthetic auxiliary pool) and LFM, each trained in
head mode through its recipe's ``fit_head`` as its search space trains it: a linear head
(SGD, batches of 256, best-validation selection) for the first three, and for LFM stage 2
the cosine classifier onto fixed text features with Adam, batches of 32 and the last epoch
(``search_spaces/lfm_alpha_tau.yaml``). A round trains one seed for a few epochs and, next
to it, runs the *floor*: the same epochs' matrix products alone — per batch of the epoch's
size, the head's forward products and the weight-gradient products of its backward pass
(plus the validation pass's forward products where the head selects by validation), on
tensors of the same shapes, with nothing else. Seconds per epoch of a seed is the recipe's
own training time of that seed (``SeedResult.train_seconds``, set-up and the final
evaluation excluded) over the epochs; the ratio is the median over rounds of
(seed's seconds per epoch ÷ floor's seconds per epoch), the two measured back to back.

The seeds of these methods train one after the other (see BENCHMARKS.md §6 for why no
batched path): each seed draws its own batches, so R seeds share no matrix product, and the
most a batched run could save is the part of each epoch above the floor.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from benchmarks._timing import Figure, Timed, fmt_times, load_average, speedup, time_side_by_side
from benchmarks.fast_paths import PathReport, bench_fast_paths
from benchmarks.synthetic import Problem, make_aux_split
from explore.recipes import get_recipe
from explore.recipes.neighbor_silencing import build_ns_problem
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import TrialInputs, head_data
from explore.training.tensors import tensor_view

TARGET = 2.0
"""Wanted: a seed's epoch within this many times its matrix-product floor."""
PREDICT_BATCH = 8192
"""Rows per validation forward pass (``explore.training.head.predict_logits``)."""
AUX_PER_CLASS = 60
"""Samples per auxiliary class: above the default per-epoch cap of 50, so the sampler subsamples."""
METHODS = ("swrm", "dyswrm", "neighbor_silencing", "lfm")


@dataclass(frozen=True)
class HeadCase:
    """One method as the benchmark trains it."""

    method: str
    settings: dict[str, Any]
    head: HeadTrainConfig


def head_cases(epochs: int) -> list[HeadCase]:
    """The four head methods with ImageNet-LT settings where the papers give them."""
    linear = HeadTrainConfig(epochs=epochs)  # the head group's defaults (search_spaces/head)
    # LFM stage 2 as its search space trains it (Adam, batch 32, last epoch).
    lfm = HeadTrainConfig(epochs=epochs, batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0,
                          min_lr_ratio=0.001, select="last")
    return [
        HeadCase("swrm", {"W": 30, "beta": 10.0}, linear),  # the SWRM paper's ImageNet-LT values
        HeadCase("dyswrm", {"W": 30, "beta": 10.0}, linear),
        # Prototype neighbours: synthetic class names carry no meaning for a text encoder.
        HeadCase("neighbor_silencing", {"lambda_s": 0.1, "aux_base_count": 1,
                                        "neighbor_source": "prototype"}, linear),
        HeadCase("lfm", {}, lfm),
    ]


@dataclass(frozen=True)
class Shape:
    """What the floor multiplies: the head's matrices and the epoch's batches."""

    kind: Literal["linear", "cosine"]
    d: int
    num_classes: int
    rows: int
    """Training rows per epoch (neighbor silencing: targets + the epoch's auxiliary samples)."""
    batch: int
    val_rows: int
    """Rows of the per-epoch validation pass (0 when the head keeps its last epoch)."""
    d_text: int = 0
    """Cosine head: width of the text features."""

    @property
    def batches(self) -> int:
        return -(-self.rows // self.batch)

    @property
    def gflop(self) -> float:
        """Floating-point work of one floor epoch (2·m·n·k per product), in GFLOP."""
        if self.kind == "linear":
            train = 2 * 2 * self.rows * self.d * self.num_classes  # forward + weight gradient
            val = 2 * self.val_rows * self.d * self.num_classes
        else:
            per_row = self.d * self.d_text + self.d_text * self.num_classes
            train = 2 * 2 * self.rows * per_row  # X·W, F·Tᵀ; G·T, Xᵀ·dF
            val = 2 * self.val_rows * per_row
        return (train + val) / 1e9


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_epochs(shape: Shape, x: torch.Tensor, val_x: torch.Tensor, epochs: int, seed: int = 0) -> float:
    """Seconds for ``epochs`` epochs of the head's matrix products alone, on ``x``'s device.

    Batches are contiguous row blocks of ``x`` (wrapping around when the epoch has more rows
    than ``x``): the products see the same shapes as training, without its gathers.
    """
    g = torch.Generator().manual_seed(seed)
    C, d, device = shape.num_classes, shape.d, x.device
    if shape.kind == "linear":
        weight, bias = (0.01 * torch.randn(C, d, generator=g)).to(device), torch.zeros(C, device=device)
    else:
        proj = (0.01 * torch.randn(d, shape.d_text, generator=g)).to(device)
        text = torch.randn(C, shape.d_text, generator=g).to(device)
    grad_out = torch.randn(shape.batch, C, generator=g).to(device)
    span = max(len(x) - shape.batch, 1)
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for b in range(shape.batches):
            lo = (b * shape.batch) % span
            xb = x[lo : lo + min(shape.batch, shape.rows - b * shape.batch)]
            go = grad_out[: len(xb)]
            if shape.kind == "linear":
                torch.addmm(bias, xb, weight.t())
                go.t().mm(xb)
            else:
                f = xb.mm(proj)
                f.mm(text.t())
                df = go.mm(text)
                xb.t().mm(df)
        for lo in range(0, shape.val_rows, PREDICT_BATCH):
            vb = val_x[lo : lo + PREDICT_BATCH]
            if shape.kind == "linear":
                torch.addmm(bias, vb, weight.t())
            else:
                vb.mm(proj).mm(text.t())
    sync(device)
    return time.perf_counter() - start


def floor_seeds(shape: Shape, x: torch.Tensor, seeds: int, batches: int, batched: bool) -> float:
    """Seconds for ``batches`` training batches of ``seeds`` heads' matrix products, each seed
    on its own rows and weights: one batched product (``bmm``) per product for all seeds,
    or one product per seed (what sequential training runs).

    The cosine head's text matrix is the same for every seed, so its two products become
    one product over all seeds' rows when batched; the linear head has nothing shared.
    """
    g = torch.Generator().manual_seed(0)
    R, B, C, d, device = seeds, shape.batch, shape.num_classes, shape.d, x.device
    span = max(len(x) - B * R, 1)
    grad_out = torch.randn(R, B, C, generator=g).to(device)
    if shape.kind == "linear":
        weight, bias = (0.01 * torch.randn(R, C, d, generator=g)).to(device), torch.zeros(R, 1, C, device=device)
    else:
        proj = (0.01 * torch.randn(R, d, shape.d_text, generator=g)).to(device)
        text = torch.randn(C, shape.d_text, generator=g).to(device)
    sync(device)
    start = time.perf_counter()
    for b in range(batches):
        lo = (b * B * R) % span
        xb = x[lo : lo + B * R].view(R, B, d)  # seed r's batch: rows lo + rB … lo + (r+1)B
        if batched and shape.kind == "linear":
            torch.baddbmm(bias, xb, weight.transpose(1, 2))
            torch.bmm(grad_out.transpose(1, 2), xb)
        elif batched:
            f = torch.bmm(xb, proj)
            f.view(R * B, -1).mm(text.t())
            df = grad_out.view(R * B, C).mm(text).view(R, B, -1)
            torch.bmm(xb.transpose(1, 2), df)
        else:
            for r in range(R):
                if shape.kind == "linear":
                    torch.addmm(bias[r, 0], xb[r], weight[r].t())
                    grad_out[r].t().mm(xb[r])
                else:
                    f = xb[r].mm(proj[r])
                    f.mm(text.t())
                    xb[r].t().mm(grad_out[r].mm(text))
    sync(device)
    return time.perf_counter() - start


def with_aux_pool(problem: Problem, num_aux: int, per_class: int = AUX_PER_CLASS) -> FeatureSet:
    """The problem's feature set plus a synthetic ``aux`` split (no copy of the targets)."""
    aux, names, _ = make_aux_split(problem.size, num_aux=num_aux, per_class=per_class)
    fset = problem.features
    return FeatureSet({**fset.splits, "aux": aux}, fset.classes, {**fset.meta, "aux_classes": list(names)})


def case_shape(case: HeadCase, inputs: TrialInputs) -> Shape:
    """The floor's shapes for ``case`` on ``inputs`` (the same data the recipe trains on)."""
    data = head_data(inputs)
    val_rows = len(data.val[1]) if data.val is not None and case.head.select == "best_val" else 0
    common = {"d": data.d, "batch": case.head.batch_size, "val_rows": val_rows}
    if case.method == "neighbor_silencing":
        params = get_recipe(case.method).params(case.settings)
        problem = build_ns_problem(inputs.features, params, data)
        # An epoch holds every target sample and min(n_a, cap) of each auxiliary class.
        return Shape("linear", num_classes=problem.num_classes, rows=int(problem.counts.sum()), **common)
    if case.method == "lfm":
        from explore.text_encoder import class_text_features

        text, _ = class_text_features(inputs.features.classes, get_recipe("lfm").params(case.settings).prompt)
        return Shape("cosine", num_classes=data.num_classes, rows=len(data.train[1]), d_text=text.shape[1],
                     **common)
    return Shape("linear", num_classes=data.num_classes, rows=len(data.train[1]), **common)


@dataclass(frozen=True)
class HeadReport:
    case: HeadCase
    shape: Shape
    per_epoch: Timed
    """A seed's training seconds per epoch, one entry per round."""
    floor: Timed
    """The floor's seconds per epoch, one entry per round."""
    other: list[float]
    """Per round: the recipe call's wall time minus the seed's training time (set-up such as
    t-SNE, the neighbour search or the text features; the seed's final evaluation)."""
    test_acc: list[float]
    batched: Timed
    """:func:`floor_seeds` for ``batch_seeds`` seeds, batched; one entry per round."""
    sequential: Timed
    """The same, one seed after the other."""
    batch_seeds: int
    batch_batches: int
    load: tuple[float, float]
    """The machine's 1-minute load average before and after this method's rounds."""

    @property
    def ratio(self) -> float:
        return speedup(self.per_epoch, self.floor)  # median over rounds of method / floor

    @property
    def batching_speedup(self) -> float:
        return speedup(self.sequential, self.batched)

    def figures(self) -> list[Figure]:
        s = self.shape
        head = (f"{s.d}→{s.num_classes}" if s.kind == "linear"
                else f"{s.d}→{s.d_text}, cosine onto {s.num_classes} text rows")
        cfg = self.case.head
        return [
            Figure(f"{self.case.method}: seconds per epoch per seed", self.per_epoch.median, "s",
                   note=f"head {head}; {s.rows} rows/epoch in batches of {s.batch}, {cfg.optimizer}, "
                        f"select {cfg.select}; rounds {fmt_times(self.per_epoch)}; "
                        f"load {self.load[0]:.1f}→{self.load[1]:.1f}"),
            Figure("  matrix-product floor, seconds per epoch", self.floor.median, "s",
                   note=f"{s.gflop:.0f} GFLOP/epoch → {s.gflop / self.floor.median:.0f} GFLOP/s; "
                        f"rounds {fmt_times(self.floor)}"),
            Figure("  ratio to the floor (median of round ratios)", self.ratio, "x", f"<= {TARGET:g}x",
                   self.ratio <= TARGET),
            Figure("  set-up + final evaluation per seed (not per epoch)", float(np.median(self.other)), "s",
                   note=f"mean test top-1 {np.mean(self.test_acc):.3f}"),
            Figure(f"  {self.batch_seeds} seeds' matrix products: batched vs sequential", self.batching_speedup,
                   "x", note=f"{self.batch_batches} batches per seed; batched {fmt_times(self.batched)}, "
                             f"sequential {fmt_times(self.sequential)}"),
        ]


def bench_head(case: HeadCase, inputs: TrialInputs, seeds: Sequence[int], batch_seeds: int = 4,
               batch_rows: int = 8192) -> HeadReport:
    """One round per seed: the recipe trains that seed, and the floor runs the same epochs;
    the order alternates between rounds (method first in even rounds). Then, as many
    rounds again, ``batch_seeds`` seeds' products over ``batch_rows`` rows per seed,
    batched against sequential."""
    recipe = get_recipe(case.method)
    params = recipe.params(case.settings)
    trial = dataclasses.replace(inputs, head=case.head)
    shape = case_shape(case, trial)
    fset = inputs.features
    x = tensor_view(fset.train.features)
    val_x = tensor_view(fset.val.features)
    epochs = case.head.epochs
    load_before = load_average()
    per_epoch, floor = Timed(), Timed()
    other: list[float] = []
    acc: list[float] = []
    for i, seed in enumerate(seeds):
        for which in ("method", "floor") if i % 2 == 0 else ("floor", "method"):
            if which == "floor":
                floor.seconds.append(floor_epochs(shape, x, val_x, epochs, seed) / epochs)
                continue
            start = time.perf_counter()
            result = recipe.fit_head(trial, params, [seed]).results[0]
            wall = time.perf_counter() - start
            per_epoch.seconds.append(result.train_seconds / epochs)
            other.append(wall - result.train_seconds)
            acc.append(result.test["acc_overall"])
    batches = max(1, min(shape.batches, batch_rows // shape.batch))
    timed = time_side_by_side({
        "batched": lambda: floor_seeds(shape, x, batch_seeds, batches, batched=True),
        "sequential": lambda: floor_seeds(shape, x, batch_seeds, batches, batched=False),
    }, len(seeds))
    return HeadReport(case, shape, per_epoch, floor, other, acc, timed["batched"], timed["sequential"],
                      batch_seeds, batches, (load_before, load_average()))


@dataclass(frozen=True)
class HeadsReport:
    methods: list[HeadReport]
    paths: list[PathReport]
    """The per-batch code paths made faster, old vs new (:mod:`benchmarks.fast_paths`)."""

    def figures(self) -> list[Figure]:
        return ([f for rep in self.methods for f in rep.figures()]
                + [f for rep in self.paths for f in rep.figures()])


def bench_heads(problem: Problem, epochs: int, seeds: int, num_aux: int, batch_seeds: int = 4,
                methods: Sequence[str] = METHODS,
                progress: Callable[[str], None] | None = None) -> HeadsReport:
    """Every method in ``methods`` on ``problem`` (neighbor silencing with a ``num_aux``-class
    auxiliary pool), ``seeds`` rounds each; then the per-batch fast paths, ``seeds`` rounds.
    ``progress`` hears one line as each method finishes (the whole run takes minutes)."""
    th = SplitThresholds()
    plain = TrialInputs(problem.features, None, th)
    ns_inputs = TrialInputs(with_aux_pool(problem, num_aux), None, th)
    reports = []
    for case in head_cases(epochs):
        if case.method not in methods:
            continue
        inputs = ns_inputs if case.method == "neighbor_silencing" else plain
        reports.append(bench_head(case, inputs, list(range(seeds)), batch_seeds))
        if progress is not None:
            rep = reports[-1]
            progress(f"  ({case.method}: {rep.per_epoch.median:.3g} s per epoch, floor "
                     f"{rep.floor.median:.3g} s, load {rep.load[1]:.1f})")
    floors = {rep.case.method: rep.floor.median for rep in reports}
    return HeadsReport(reports, bench_fast_paths(problem.features, ns_inputs, seeds, floors))
