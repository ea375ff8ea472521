"""AlphaNet recipe: training and evaluation of the post-hoc correction
(maths: :mod:`explore.methods.alphanet`; docs/methods.md#alphanet).

All seeds of one configuration train together. The R seeds' α-networks are stacked into one
batched model (``StackedAlphaNetworks`` gives each seed its own initialisation); each seed
keeps its own sample order and model selection, and AdamW is element-wise, so the result
equals R sequential runs up to float rounding (tested). Training and evaluation only
recombine precomputed base logits (``PosthocInputs``) with
:func:`~explore.methods.alphanet.combine_logits`, never the features.

Where the time goes (benchmarks/, ImageNet-LT size): the first layer, a (k+1)·d → 32 matrix
per seed, is >95% of the FLOPs, so its weights are kept as one (in, R·32) matrix and every
seed's forward and weight gradient is a single wide GEMM; AdamW runs fused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.methods.params import AlphaNetParams
from explore.recipes._recipe import Recipe, RecipeError
from explore.training.inputs import DataFacts, TrialInputs
from explore.training.outcome import Fit, SeedResult

if TYPE_CHECKING:  # torch (and the maths, which uses it) is imported where AlphaNet trains
    import torch

    from explore.methods.alphanet import WideAlphaNetworks
    from explore.training.posthoc import PosthocInputs, SplitLogits

__all__ = ["AlphaNetCorrections", "AlphaNetRecipe", "evaluate_alphanet", "fit_alphanet",
           "train_alphanet"]


@dataclass(frozen=True)
class _Corrections:
    """Few-class corrections of all seeds at one epoch: α̃ (R, n_few, k), bias (R, n_few)."""

    alpha_tilde: torch.Tensor
    few_bias: torch.Tensor


@dataclass(frozen=True)
class AlphaNetCorrections:
    """What training produced for each of R seeds, at each seed's selected epoch."""

    seeds: list[int]
    few: np.ndarray
    """(n_few,) the corrected classes."""
    neighbors: np.ndarray
    """(R, n_few, k) each few class's base-class neighbours, nearest first."""
    alpha_tilde: np.ndarray
    """(R, n_few, k) normalised α̃ at the selected epoch."""
    few_bias: np.ndarray
    """(R, n_few) few-class biases at the selected epoch (the base model's unless learned)."""
    best_epoch: list[int]
    """1-based selected epoch per seed."""
    val_curves: np.ndarray
    """(R, epochs) validation top-1 per epoch; (R, 0) without a validation split."""
    train_seconds: float
    """Wall time of training all seeds together (with the per-epoch validation)."""


def fit_alphanet(inputs: PosthocInputs, params: AlphaNetParams, seeds: Sequence[int]) -> list[SeedResult]:
    """Train AlphaNet once per seed (batched) and evaluate each at its selected epoch."""
    return evaluate_alphanet(inputs, train_alphanet(inputs, params, seeds))


def evaluate_alphanet(inputs: PosthocInputs, trained: AlphaNetCorrections) -> list[SeedResult]:
    """Each seed's test (and validation) metrics with its selected corrections, computed
    where the base logits are."""
    import torch

    seeds = trained.seeds
    device = inputs.test.logits.device
    few_t = torch.from_numpy(trained.few).to(device)
    nbrs_t = torch.from_numpy(trained.neighbors).to(device)
    bias = torch.from_numpy(inputs.classifier.bias.astype(np.float32)).to(device)
    views = {"test": _EvalView(inputs.test, few_t, nbrs_t, bias)}
    if inputs.val is not None:
        views["val"] = _EvalView(inputs.val, few_t, nbrs_t, bias)
    alpha = torch.from_numpy(trained.alpha_tilde).to(device)
    few_bias = torch.from_numpy(trained.few_bias).to(device)
    results = []
    for r, seed in enumerate(seeds):
        metrics = {name: view.metrics(alpha[r], few_bias[r], r, inputs.split_of_class)
                   for name, view in views.items()}
        results.append(SeedResult(seed, trained.best_epoch[r], metrics["test"], metrics.get("val", {}),
                                  trained.val_curves[r].tolist(), trained.train_seconds / len(seeds)))
    return results


def train_alphanet(inputs: PosthocInputs, params: AlphaNetParams,
                   seeds: Sequence[int]) -> AlphaNetCorrections:
    """Train the R seeds' α-networks together, on the device of the base logits
    (:func:`~explore.training.posthoc.posthoc_on`); keep each seed's best validation epoch."""
    import torch

    from explore.methods.alphanet import (
        StackedAlphaNetworks,
        WideAlphaNetworks,
        network_input,
        normalize_alphas,
    )

    try:
        params.check_against(inputs.num_base_classes)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    start = time.perf_counter()
    few = np.flatnonzero(inputs.few_mask)
    base = np.flatnonzero(~inputs.few_mask)
    if len(few) == 0:
        raise RecipeError("alphanet: this dataset has no few classes to correct; check the split "
                          "thresholds")
    nbrs = _neighbours(inputs, params, few, base, seeds)  # (R, n_few, k)
    shared = bool((nbrs == nbrs[:1]).all())  # nearest neighbours: one input for all seeds
    weight = inputs.classifier.weight
    device = inputs.train.logits.device
    if shared:
        x = torch.from_numpy(network_input(weight, few, nbrs[0]).astype(np.float32))
    else:
        x = torch.from_numpy(np.stack([network_input(weight, few, n) for n in nbrs]).astype(np.float32))
    x = x.to(device)
    bias = torch.from_numpy(inputs.classifier.bias.astype(np.float32)).to(device)
    few_t, nbrs_t = torch.from_numpy(few).to(device), torch.from_numpy(nbrs).to(device)

    R = len(seeds)
    net = WideAlphaNetworks(StackedAlphaNetworks(x.shape[-1], params.k, params.hidden, list(seeds)))
    net.to(device)
    few_bias = torch.nn.Parameter(bias[few_t].repeat(R, 1), requires_grad=params.learn_bias)
    groups: list[dict[str, Any]] = [{"params": list(net.parameters())}]
    if params.learn_bias:
        groups.append({"params": [few_bias], "weight_decay": 0.0})
    # fused: one pass over all R·(k+1)·d·32 first-layer weights instead of ~10.
    opt = torch.optim.AdamW(groups, lr=params.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=params.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=params.lr_step_epochs, gamma=params.lr_gamma)
    sampler = _EpochSampler(inputs.train_labels, inputs.few_mask, params.rho)
    rngs = [np.random.default_rng(s) for s in seeds]

    val_view = _EvalView(inputs.val, few_t, nbrs_t, bias) if inputs.val is not None else None
    snapshots: list[_Corrections] = []
    val_curves: list[torch.Tensor] = []
    for _epoch in range(params.epochs):
        order = torch.from_numpy(np.stack([sampler.draw(rng) for rng in rngs])).to(device)  # (R, n)
        _train_one_epoch(net, few_bias, opt, x, order, inputs.train, params.batch_size, few_t, nbrs_t, bias)
        sched.step()
        with torch.no_grad():
            corr = _Corrections(normalize_alphas(net(x)), few_bias.detach().clone())
        snapshots.append(corr)
        if val_view is not None:
            val_curves.append(val_view.top1(corr))
    best = _select_epochs(val_curves, params, R)
    curves = torch.stack(val_curves, dim=1).cpu().numpy() if val_curves else np.zeros((R, 0))
    return AlphaNetCorrections(
        seeds=list(seeds),
        few=few,
        neighbors=nbrs,
        alpha_tilde=np.stack([snapshots[b].alpha_tilde[r].cpu().numpy() for r, b in enumerate(best)]),
        few_bias=np.stack([snapshots[b].few_bias[r].cpu().numpy() for r, b in enumerate(best)]),
        best_epoch=[b + 1 for b in best],
        val_curves=curves,
        train_seconds=time.perf_counter() - start,
    )


def _neighbours(
    inputs: PosthocInputs, params: AlphaNetParams, few: np.ndarray, base: np.ndarray,
    seeds: Sequence[int],
) -> np.ndarray:
    from explore.methods.alphanet import nearest_base_classes, random_base_classes

    if params.neighbors == "nearest":
        nbrs = nearest_base_classes(inputs.class_means, few, base, params.k, params.distance)
        return np.broadcast_to(nbrs, (len(seeds), *nbrs.shape)).copy()
    return np.stack([random_base_classes(few, base, params.k, np.random.default_rng([s, 1])) for s in seeds])


class _EpochSampler:
    """``explore.methods.alphanet.epoch_sample_indices`` with the label sort done once.

    Draws from the generator exactly as that function does (same calls, same order), so
    the indices are identical; only the per-epoch ``argsort`` of all labels is saved.
    """

    def __init__(self, labels: np.ndarray, few_mask_by_class: np.ndarray, rho: float) -> None:
        self.few_idx = np.flatnonzero(few_mask_by_class[labels])
        self.n_base = int(np.floor(rho * len(self.few_idx)))
        base_classes = np.flatnonzero(~few_mask_by_class)
        self.order = np.argsort(labels, kind="stable")
        sorted_labels = labels[self.order]
        self.starts = np.searchsorted(sorted_labels, base_classes)
        self.sizes = np.searchsorted(sorted_labels, base_classes, side="right") - self.starts

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        picked = rng.choice(len(self.starts), size=self.n_base)
        base_idx = self.order[self.starts[picked] + rng.integers(0, self.sizes[picked])]
        idx = np.concatenate([self.few_idx, base_idx])
        rng.shuffle(idx)
        return idx


def _train_one_epoch(
    net: WideAlphaNetworks,
    few_bias: torch.Tensor,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    order: torch.Tensor,
    train: SplitLogits,
    batch_size: int,
    few: torch.Tensor,
    nbrs: torch.Tensor,
    bias: torch.Tensor,
) -> None:
    """One pass over ``order`` (R, n): seed r's batches are its own rows of the sample order."""
    import torch
    import torch.nn.functional as F

    from explore.methods.alphanet import combine_logits, normalize_alphas

    z_train, y_train = train.logits, train.labels
    R, n_few, k = nbrs.shape
    for start in range(0, order.shape[1], batch_size):
        idx = order[:, start : start + batch_size]  # (R, B)
        z = z_train[idx]  # (R, B, C) bias-free base logits
        alpha_tilde = normalize_alphas(net(x))  # (R, n_few, k)
        neigh = torch.gather(z, 2, nbrs.reshape(R, 1, n_few * k).expand(-1, z.shape[1], -1))
        few_logits = combine_logits(z[..., few], neigh.view(R, -1, n_few, k), alpha_tilde)
        logits = (z + bias).index_copy(2, few, few_logits + few_bias[:, None, :])
        # Sum over seeds of each seed's mean loss: the seeds' gradients stay independent.
        loss = F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten(), reduction="none")
        loss = loss.view(R, -1).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()


class _EvalView:
    """Fast evaluation of every seed's corrected classifier on one split.

    Base-class logits never change, so their best five values per sample are found
    once; a seed's predictions then only need its few-class logits: its top-1 is the
    better of the base best and the few best, and its top-5 lies among the base top-5
    and the few classes. Neighbour logits are gathered once when all seeds share the
    neighbours (nearest-neighbour AlphaNet).
    """

    def __init__(self, split: SplitLogits, few: torch.Tensor, nbrs: torch.Tensor, bias: torch.Tensor) -> None:
        import torch

        self.z, self.few, self.nbrs = split.logits, few, nbrs
        self.labels = split.labels
        self.labels_np = split.labels.cpu().numpy()
        base_mask = torch.ones(self.z.shape[1], dtype=torch.bool, device=self.z.device)
        base_mask[few] = False
        base_classes = torch.nonzero(base_mask).squeeze(1)
        base_logits = self.z[:, base_classes] + bias[base_classes]
        top = base_logits.topk(min(5, len(base_classes)), dim=1)
        self.base_top_values = top.values  # (N, 5), best first
        self.base_top_classes = base_classes[top.indices]
        self.base_best, self.base_pred = top.values[:, 0], self.base_top_classes[:, 0]
        self.shared = bool((nbrs == nbrs[:1]).all())
        self.neigh = self.z[:, nbrs[0]] if self.shared else None  # (N, n_few, k)

    def few_logits(self, corr: _Corrections) -> torch.Tensor:
        """(R, N, n_few) few-class logits with bias."""
        import torch

        from explore.methods.alphanet import combine_logits

        own = self.z[:, self.few]
        if self.shared:
            assert self.neigh is not None
            mixed = combine_logits(own, self.neigh, corr.alpha_tilde)  # (R, N, n_few)
        else:
            mixed = torch.stack([combine_logits(own, self.z[:, self.nbrs[r]], corr.alpha_tilde[r])
                                 for r in range(len(self.nbrs))])
        return mixed + corr.few_bias[:, None, :]

    def top1(self, corr: _Corrections) -> torch.Tensor:
        """(R,) overall top-1 accuracy of every seed."""
        import torch

        few_best, arg = self.few_logits(corr).max(dim=2)
        pred = torch.where(few_best > self.base_best, self.few[arg], self.base_pred)
        return (pred == self.labels).float().mean(dim=1)

    def metrics(self, alpha_tilde: torch.Tensor, few_bias: torch.Tensor, r: int,
                split_of_class: np.ndarray) -> dict[str, float]:
        """Seed r's metrics with its α̃ (n_few, k) and few biases (n_few,), as
        ``evaluate_logits`` gives them on its full logits (equal unless two logits tie exactly)."""
        import torch

        from explore.evaluation import accuracy_by_split
        from explore.methods.alphanet import combine_logits

        nbrs = self.nbrs[r]
        neigh = self.neigh if self.neigh is not None else self.z[:, nbrs]
        few_logits = combine_logits(self.z[:, self.few], neigh, alpha_tilde) + few_bias
        values = torch.cat([self.base_top_values, few_logits], dim=1)
        classes = torch.cat([self.base_top_classes, self.few.expand(len(few_logits), -1)], dim=1)
        top5 = classes.gather(1, values.topk(min(5, values.shape[1]), dim=1).indices)
        metrics = accuracy_by_split(top5[:, 0].cpu().numpy(), self.labels_np, split_of_class)
        metrics["top5_overall"] = float((top5 == self.labels[:, None]).any(dim=1).float().mean())
        return metrics


def _select_epochs(val_curves: list[torch.Tensor], params: AlphaNetParams, num_seeds: int) -> list[int]:
    """Per seed, the 0-based epoch with the best validation top-1 among epochs >=
    ``select_from_epoch`` (ties keep the earlier); the last epoch without validation."""
    import torch

    from explore.training.head import select_epoch

    curves = torch.stack(val_curves).T.tolist() if val_curves else [[] for _ in range(num_seeds)]
    return [select_epoch(curve, params.epochs, params.select_from_epoch) - 1 for curve in curves]


class AlphaNetRecipe(Recipe[AlphaNetParams]):
    """Post-hoc: corrects the few-class rows of the sweep's base model; no full mode."""

    name = "alphanet"
    params_type = AlphaNetParams
    knobs = ("k", "distance", "rho")
    posthoc = True

    def limits(self, facts: DataFacts) -> dict[str, int]:
        return {"k": facts.num_base_classes}

    def check(self, params: AlphaNetParams, facts: DataFacts) -> None:
        try:
            params.check_against(facts.num_base_classes)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None

    def fit_head(self, inputs: TrialInputs, params: AlphaNetParams, seeds: Sequence[int]) -> Fit:
        if inputs.posthoc is None:
            raise RecipeError("alphanet corrects a base model: its trials need the base logits")
        from explore.training.posthoc import posthoc_on

        posthoc = posthoc_on(inputs.posthoc, inputs.device)
        # Its seeds train stacked unless told otherwise, on the CPU too: the wide first-layer
        # GEMM pays there (BENCHMARKS.md), unlike the linear heads' stacking.
        if inputs.head.seeds_stacked is False:
            return Fit([r for seed in seeds for r in fit_alphanet(posthoc, params, [seed])])
        return Fit(fit_alphanet(posthoc, params, seeds))
