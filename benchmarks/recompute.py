"""Benchmark 2 — the work AlphaNet need not redo.

The shipped path computes the base logits ``Z = F Wᵀ`` of every split once
(``build_posthoc_inputs``) and trains and evaluates by recombining their columns. The
reference here is AlphaNet written the straightforward way: every training step and
every evaluation builds the corrected classifier ``Ŵ`` with ``combine`` and computes
full logits ``F Ŵᵀ + b`` from the features. Same seeds, same samples, same optimiser
settings (plain, non-fused AdamW), so the two must select the same epochs and reach the
same accuracies; this doubles as an independent check of the shipped implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._timing import Figure, Timed, fmt_times, speedup, time_side_by_side
from benchmarks.synthetic import Problem, as_splits
from explore.evaluation import evaluate_logits
from explore.methods.alphanet import (
    AlphaNetParams,
    combine,
    epoch_sample_indices,
    make_alpha_network,
    nearest_base_classes,
    network_input,
    normalize_alphas,
)
from explore.methods.prototypes import class_means
from explore.recipes.alphanet import AlphaNetCorrections, evaluate_alphanet, train_alphanet
from explore.splits import SplitThresholds
from explore.training.outcome import SeedResult
from explore.training.posthoc import build_posthoc_inputs


@dataclass(frozen=True)
class ReferenceRun:
    """One seed of the reference: its selected epoch (1-based), test metrics and α̃ there."""

    seed: int
    best_epoch: int
    test: dict[str, float]
    alpha_tilde: np.ndarray


def fit_alphanet_from_features(problem: Problem, params: AlphaNetParams, seed: int) -> ReferenceRun:
    """AlphaNet (nearest neighbours) for one seed, recomputing logits from features.

    Follows docs/methods.md#alphanet directly: the network ``make_alpha_network`` after
    ``torch.manual_seed(seed)``, ``epoch_sample_indices`` with ``default_rng(seed)``,
    logits ``F Ŵᵀ + b`` for every batch and every validation pass.
    """
    if params.neighbors != "nearest":
        raise ValueError("the reference implements nearest-neighbour AlphaNet only")
    fset, clf = problem.features, problem.classifier
    C = problem.size.num_classes
    train_x, train_y = fset.train.features, fset.train.labels
    counts = np.bincount(train_y, minlength=C)
    few_mask = SplitThresholds().few_mask(counts)
    split_of_class = SplitThresholds().split_of_class(counts)
    few, base = np.flatnonzero(few_mask), np.flatnonzero(~few_mask)
    means = class_means(train_x, train_y, C)
    nbrs = nearest_base_classes(means, few, base, params.k, params.distance)

    W = torch.from_numpy(clf.weight)
    b = torch.from_numpy(clf.bias)
    few_t, nbrs_t = torch.from_numpy(few), torch.from_numpy(nbrs)
    x = torch.from_numpy(network_input(clf.weight, few, nbrs).astype(np.float32))
    torch.manual_seed(seed)
    net = make_alpha_network(x.shape[1], params.k, params.hidden)
    few_bias = torch.nn.Parameter(b[few_t].clone(), requires_grad=params.learn_bias)
    groups: list[dict[str, Any]] = [{"params": list(net.parameters())}]
    if params.learn_bias:
        groups.append({"params": [few_bias], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=params.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=params.lr_step_epochs, gamma=params.lr_gamma)
    rng = np.random.default_rng(seed)

    def corrected(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_hat = W.index_copy(0, few_t, combine(W[few_t], W[nbrs_t], alpha))
        return w_hat, b.index_copy(0, few_t, few_bias)

    xs = {name: torch.from_numpy(fset.splits[name].features) for name in ("train", "val", "test")}
    ys = {name: torch.from_numpy(fset.splits[name].labels) for name in ("train", "val", "test")}
    val_acc, alphas = [], []
    for _epoch in range(params.epochs):
        order = torch.from_numpy(epoch_sample_indices(train_y, few_mask, params.rho, rng))
        for start in range(0, len(order), params.batch_size):
            idx = order[start : start + params.batch_size]
            w_hat, b_hat = corrected(net(x))
            loss = F.cross_entropy(xs["train"][idx] @ w_hat.T + b_hat, ys["train"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            alpha = net(x)
            w_hat, b_hat = corrected(alpha)
            pred = (xs["val"] @ w_hat.T + b_hat).argmax(1)
            val_acc.append(float((pred == ys["val"]).float().mean()))
            alphas.append(alpha)
    first = min(params.select_from_epoch, params.epochs) - 1
    best = first + int(np.argmax(val_acc[first:]))  # first maximum: ties keep the earlier epoch
    with torch.no_grad():
        w_hat, b_hat = corrected(alphas[best])
        test = evaluate_logits(xs["test"] @ w_hat.T + b_hat, fset.test.labels, split_of_class)
    return ReferenceRun(seed, best + 1, test, normalize_alphas(alphas[best]).numpy())


@dataclass(frozen=True)
class RecomputeReport:
    label: str
    num_seeds: int
    shipped: Timed
    reference: Timed
    max_abs_acc_diff: float
    max_abs_alpha_diff: float

    @property
    def speedup(self) -> float:
        return speedup(self.reference, self.shipped)

    def figures(self) -> list[Figure]:
        return [
            Figure(f"Z reuse vs recomputing logits, R={self.num_seeds} ({self.label})", self.speedup, "x",
                   note=f"shipped (Z + train + eval) {fmt_times(self.shipped)}, "
                        f"reference {fmt_times(self.reference)}"),
            Figure("  max |Δ test accuracy| shipped vs reference", self.max_abs_acc_diff, ""),
            Figure("  max |Δ α̃| at the selected epochs", self.max_abs_alpha_diff, ""),
        ]


def check_against_reference(trained: AlphaNetCorrections, results: list[SeedResult],
                            reference: list[ReferenceRun]) -> tuple[float, float]:
    """(max |Δ accuracy|, max |Δα̃|); raises AssertionError when the runs disagree."""
    acc, alpha = 0.0, 0.0
    for r, (got, ref) in enumerate(zip(results, reference, strict=True)):
        if got.best_epoch != ref.best_epoch:
            raise AssertionError(f"seed {got.seed}: shipped selected epoch {got.best_epoch}, "
                                 f"reference {ref.best_epoch}")
        diff = max(abs(got.test[m] - ref.test[m]) for m in ref.test)
        if not diff <= 1e-6:
            raise AssertionError(f"seed {got.seed}: test metrics differ from the reference by {diff:.3g}")
        acc = max(acc, diff)
        alpha = max(alpha, float(np.abs(trained.alpha_tilde[r] - ref.alpha_tilde).max()))
    return acc, alpha


def bench_recompute(problem: Problem, params: AlphaNetParams, num_seeds: int, repeats: int,
                    label: str) -> RecomputeReport:
    """Shipped path (Z once, then all seeds) vs the reference run once per seed."""
    seeds = list(range(num_seeds))

    def shipped() -> tuple[AlphaNetCorrections, list[SeedResult]]:
        inputs = build_posthoc_inputs(as_splits(problem.features), problem.classifier,
                                      problem.size.num_classes, SplitThresholds())
        trained = train_alphanet(inputs, params, seeds)
        return trained, evaluate_alphanet(inputs, trained)

    timed = time_side_by_side(
        {"shipped": shipped,
         "reference": lambda: [fit_alphanet_from_features(problem, params, s) for s in seeds]},
        repeats,
    )
    trained, results = timed["shipped"].value
    acc, alpha = check_against_reference(trained, results, timed["reference"].value)
    return RecomputeReport(label, num_seeds, timed["shipped"], timed["reference"], acc, alpha)
