"""Benchmark 6, second part — per-batch work the head plug-ins no longer redo, timed against
the code they used to run, side by side.

Each pair below computes the same values (tests/benchmarks/test_heads.py checks them equal);
the "before" side is the public function the plug-in called on every batch, which still
exists unchanged. Times are per training epoch at the benchmark's size: a sample of the
epoch's batches (up to ``MAX_BATCHES``), scaled to the epoch's number of batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks._timing import Figure, Timed, speedup, time_side_by_side
from explore.methods.lfm import (
    PairSampler,
    cosine_logits,
    cosine_logits_unit_text,
    initial_projection,
    pair_probabilities,
    sample_pairs,
    unit_text_rows,
)
from explore.methods.neighbor_silencing import NSLoss, ns_loss
from explore.methods.swrm import DySWRMParams, initial_similarity, standardise, swrm_terms
from explore.recipes import get_recipe
from explore.recipes.neighbor_silencing import build_ns_problem
from explore.store import FeatureSet
from explore.text_encoder import class_text_features
from explore.training.inputs import TrialInputs, head_data

MAX_BATCHES = 400


@dataclass(frozen=True)
class PathReport:
    method: str
    what: str
    before: Timed
    """Seconds per epoch of the code the plug-in used to run, one entry per round."""
    after: Timed
    floor: float | None
    """The method's matrix-product floor per epoch (from the first part), if it ran."""

    def figures(self) -> list[Figure]:
        saved = self.before.median - self.after.median
        share = f", {100 * saved / self.floor:.1f}% of the floor epoch" if self.floor else ""
        return [Figure(f"{self.method}: {self.what}", speedup(self.before, self.after), "x",
                       note=f"per epoch {self.before.median:.3g} s → {self.after.median:.3g} s, "
                            f"saves {saved:.3g} s{share}")]


def _per_epoch(step: Callable[[int], object], batches: int) -> Callable[[], float]:
    """A timed path: ``step(b)`` for a sample of the epoch's ``batches``, scaled to all of them."""
    n = min(batches, MAX_BATCHES)

    def run() -> float:
        for b in range(n):
            step(b)
        return batches / n

    return run


def _pair(paths: dict[str, Callable[[], float]], repeats: int) -> tuple[Timed, Timed]:
    timed = time_side_by_side(paths, repeats)
    for t in timed.values():  # seconds for the sample → seconds per epoch
        t.seconds = [s * t.value for s in t.seconds]
    return timed["before"], timed["after"]


def bench_fast_paths(features: FeatureSet, ns_inputs: TrialInputs, repeats: int,
                     floors: dict[str, float]) -> list[PathReport]:
    """The four per-batch paths at the shapes the heads benchmark trains."""
    labels = np.asarray(features.train.labels, np.int64)
    C, n_train = len(features.classes), len(labels)
    counts = np.bincount(labels, minlength=C)
    reports = []

    # LFM (batches of 32): pair sampling.
    lfm = get_recipe("lfm").params({})
    text, _ = class_text_features(features.classes, lfm.prompt)
    probs = np.asarray(pair_probabilities(np.asarray(text, np.float64), lfm.tau))
    sampler = PairSampler(labels, counts, probs)
    lfm_batches = -(-n_train // 32)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    before, after = _pair({
        "before": _per_epoch(lambda b: sample_pairs(labels, counts, probs, 32, rng_a), lfm_batches),
        "after": _per_epoch(lambda b: sampler(32, rng_b), lfm_batches),
    }, repeats)
    reports.append(PathReport("lfm", "text-guided pairs: sample_pairs vs PairSampler", before, after,
                              floors.get("lfm")))

    # LFM: the cosine head's text rows, normalised per batch vs once.
    x = torch.from_numpy(np.require(features.train.features, np.float32, ["C", "W"]))
    proj = initial_projection(x.shape[1], text.shape[1], 0)
    buffer = torch.as_tensor(text) / torch.as_tensor(text).norm(dim=1, keepdim=True)  # TextCosineClassifier's
    unit = unit_text_rows(buffer)
    span = n_train - 32

    @torch.no_grad()
    def cos_before(b: int) -> object:
        lo = (32 * b) % span
        return cosine_logits(x[lo : lo + 32], proj, buffer, lfm.logit_scale)

    @torch.no_grad()
    def cos_after(b: int) -> object:
        lo = (32 * b) % span
        return cosine_logits_unit_text(x[lo : lo + 32], proj, unit, lfm.logit_scale)

    before, after = _pair({"before": _per_epoch(cos_before, lfm_batches),
                           "after": _per_epoch(cos_after, lfm_batches)}, repeats)
    reports.append(PathReport("lfm", "cosine logits: text normalised per batch vs once", before, after,
                              floors.get("lfm")))

    # DySWRM (batches of 256): windows, weights and margins per batch vs once per value of s.
    params = DySWRMParams(W=30, beta=10.0)
    n = torch.as_tensor(counts, dtype=torch.float32)
    s = torch.as_tensor(initial_similarity(C, "random", 0), dtype=torch.float32)
    cached = s.clone()
    linear_batches = -(-n_train // 256)
    before, after = _pair({
        "before": _per_epoch(lambda b: swrm_terms(n, standardise(s), params), linear_batches),
        "after": _per_epoch(lambda b: torch.equal(cached, s), linear_batches),  # the cache's check
    }, repeats)
    reports.append(PathReport("dyswrm", "SWRM terms: per batch vs once per value of s", before, after,
                              floors.get("dyswrm")))

    # Neighbor silencing (batches of 256 over targets + auxiliary classes): the loss.
    ns_params = get_recipe("neighbor_silencing").params({"lambda_s": 0.1, "aux_base_count": 1,
                                                         "neighbor_source": "prototype"})
    problem = build_ns_problem(ns_inputs.features, ns_params, head_data(ns_inputs))
    nc = torch.as_tensor(problem.counts, dtype=torch.float32)
    nb = torch.as_tensor(problem.neighbor)
    table = NSLoss(nc, nb, ns_params.lambda_s)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, problem.num_classes, generator=g)
    y = torch.from_numpy(problem.y[torch.randint(0, len(problem.y), (256,), generator=g).numpy()])
    ns_batches = -(-int(problem.counts.sum()) // 256)
    before, after = _pair({
        "before": _per_epoch(lambda b: ns_loss(z, y, nc, nb, ns_params.lambda_s), ns_batches),
        "after": _per_epoch(lambda b: table(z, y), ns_batches),
    }, repeats)
    reports.append(PathReport("neighbor_silencing", "loss: ns_loss vs NSLoss (tables built once)",
                              before, after, floors.get("neighbor_silencing")))
    return reports
