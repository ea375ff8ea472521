"""AlphaNet training: all seeds of one configuration trained together.

The R seeds' α-networks are stacked into one batched model (``StackedAlphaNetworks``);
each seed keeps its own initialisation, sample order and model selection, and AdamW
is element-wise, so the result equals R sequential runs (checked in tests, measured
in benchmarks). Training and evaluation only recombine precomputed base logits
(``PosthocInputs``), never the features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from explore.evaluation import evaluate_logits
from explore.methods.alphanet import (
    AlphaNetParams,
    StackedAlphaNetworks,
    epoch_sample_indices,
    nearest_base_classes,
    network_input,
    normalize_alphas,
    random_base_classes,
)
from explore.training.outcome import SeedResult
from explore.training.posthoc import PosthocInputs, SplitLogits


@dataclass(frozen=True)
class _Corrections:
    """Few-class corrections of all seeds at one epoch: α̃ (R, n_few, k), bias (R, n_few)."""

    alpha_tilde: torch.Tensor
    few_bias: torch.Tensor


def fit_alphanet(inputs: PosthocInputs, params: AlphaNetParams, seeds: list[int]) -> list[SeedResult]:
    """Train AlphaNet once per seed (batched) and evaluate each at its selected epoch."""
    params.check_against(inputs.num_base_classes)
    start = time.perf_counter()
    few = np.flatnonzero(inputs.few_mask)
    base = np.flatnonzero(~inputs.few_mask)
    if len(few) == 0:
        raise ValueError("alphanet: this dataset has no few classes to correct; check the split thresholds")
    nbrs = _neighbours(inputs, params, few, base, seeds)  # (R, n_few, k)
    weight = inputs.classifier.weight
    x = torch.from_numpy(np.stack([network_input(weight, few, n) for n in nbrs]).astype(np.float32))
    bias = torch.from_numpy(inputs.classifier.bias.astype(np.float32))
    few_t, nbrs_t = torch.from_numpy(few), torch.from_numpy(nbrs)
    shared = bool((nbrs == nbrs[:1]).all())  # nearest neighbours: one input for all seeds

    R = len(seeds)
    net = StackedAlphaNetworks(x.shape[-1], params.k, params.hidden, seeds)
    few_bias = torch.nn.Parameter(bias[few_t].repeat(R, 1), requires_grad=params.learn_bias)
    groups = [{"params": list(net.parameters())}]
    if params.learn_bias:
        groups.append({"params": [few_bias], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=params.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=params.lr_step_epochs, gamma=params.lr_gamma)
    rngs = [np.random.default_rng(s) for s in seeds]

    val_view = _EvalView(inputs.val, few_t, nbrs_t, bias) if inputs.val is not None else None
    snapshots: list[_Corrections] = []
    val_curves: list[torch.Tensor] = []
    for _epoch in range(params.epochs):
        _train_one_epoch(net, few_bias, opt, x, shared, inputs, params, rngs, few_t, nbrs_t, bias)
        sched.step()
        with torch.no_grad():
            corr = _Corrections(normalize_alphas(_forward(net, x, shared)), few_bias.detach().clone())
        snapshots.append(corr)
        if val_view is not None:
            val_curves.append(val_view.top1(corr))
    best = _select_epochs(val_curves, params, R)
    elapsed = time.perf_counter() - start

    test_view = _EvalView(inputs.test, few_t, nbrs_t, bias)
    results = []
    for r, seed in enumerate(seeds):
        corr = snapshots[best[r]]
        test = evaluate_logits(test_view.full_logits(corr, r), test_view.labels_np, inputs.split_of_class)
        val = {}
        if val_view is not None:
            val = evaluate_logits(val_view.full_logits(corr, r), val_view.labels_np, inputs.split_of_class)
        curve = [float(c[r]) for c in val_curves]
        results.append(SeedResult(seed, best[r] + 1, test, val, curve, elapsed / R))
    return results


def _neighbours(
    inputs: PosthocInputs, params: AlphaNetParams, few: np.ndarray, base: np.ndarray, seeds: list[int]
) -> np.ndarray:
    if params.neighbors == "nearest":
        nbrs = nearest_base_classes(inputs.class_means, few, base, params.k, params.distance)
        return np.broadcast_to(nbrs, (len(seeds), *nbrs.shape)).copy()
    return np.stack([random_base_classes(few, base, params.k, np.random.default_rng([s, 1])) for s in seeds])


def _forward(net: StackedAlphaNetworks, x: torch.Tensor, shared: bool) -> torch.Tensor:
    """Raw α (R, n_few, k). x is (R, n_few, in): one input per seed."""
    if shared:
        return net(x[0])  # nearest neighbours: every seed sees the same classifier rows
    # Random neighbours: each seed's network runs on its own input.
    return torch.stack([_single(net, x[r], r) for r in range(x.shape[0])])


def _single(net: StackedAlphaNetworks, x: torch.Tensor, r: int) -> torch.Tensor:
    h = x @ net.weights[0][r] + net.biases[0][r]
    for w, b in zip(net.weights[1:], net.biases[1:]):
        h = F.leaky_relu(h, 0.01) @ w[r] + b[r]
    return h


def _train_one_epoch(
    net: StackedAlphaNetworks,
    few_bias: torch.Tensor,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    shared: bool,
    inputs: PosthocInputs,
    params: AlphaNetParams,
    rngs: list[np.random.Generator],
    few: torch.Tensor,
    nbrs: torch.Tensor,
    bias: torch.Tensor,
) -> None:
    order = np.stack(
        [epoch_sample_indices(inputs.train_labels, inputs.few_mask, params.rho, rng) for rng in rngs]
    )  # (R, n) — every seed draws the same number of samples
    order_t = torch.from_numpy(order)
    z_train, y_train = inputs.train.logits, inputs.train.labels
    R, n_few, k = nbrs.shape
    for start in range(0, order.shape[1], params.batch_size):
        idx = order_t[:, start : start + params.batch_size]  # (R, B)
        z = z_train[idx]  # (R, B, C) bias-free base logits
        alpha_tilde = normalize_alphas(_forward(net, x, shared))  # (R, n_few, k)
        neigh = torch.gather(z, 2, nbrs.reshape(R, 1, n_few * k).expand(-1, z.shape[1], -1))
        few_logits = z[..., few] + (neigh.view(R, -1, n_few, k) * alpha_tilde[:, None]).sum(-1)
        logits = (z + bias).index_copy(2, few, few_logits + few_bias[:, None, :])
        # Sum over seeds of each seed's mean loss: the seeds' gradients stay independent.
        loss = F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten(), reduction="none")
        loss = loss.view(R, -1).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class _EvalView:
    """Fast evaluation of every seed's corrected classifier on one split.

    Base-class logits never change, so their best value per sample is computed once;
    a seed's top-1 prediction only needs its few-class logits. Neighbour logits are
    gathered once when all seeds share the neighbours (nearest-neighbour AlphaNet).
    """

    def __init__(self, split: SplitLogits, few: torch.Tensor, nbrs: torch.Tensor, bias: torch.Tensor) -> None:
        self.z, self.few, self.nbrs, self.bias = split.logits, few, nbrs, bias
        self.labels = split.labels
        self.labels_np = split.labels.numpy()
        base_mask = torch.ones(self.z.shape[1], dtype=torch.bool)
        base_mask[few] = False
        base_logits = (self.z + bias)[:, base_mask]
        self.base_classes = torch.nonzero(base_mask).squeeze(1)
        self.base_best, arg = base_logits.max(dim=1)
        self.base_pred = self.base_classes[arg]
        self.shared = bool((nbrs == nbrs[:1]).all())
        self.neigh = self.z[:, nbrs[0]] if self.shared else None  # (N, n_few, k)

    def few_logits(self, corr: _Corrections) -> torch.Tensor:
        """(R, N, n_few) few-class logits with bias."""
        own = self.z[:, self.few]
        if self.shared:
            mixed = torch.einsum("nfk,rfk->rnf", self.neigh, corr.alpha_tilde)
        else:
            mixed = torch.stack(
                [(self.z[:, self.nbrs[r]] * corr.alpha_tilde[r]).sum(-1) for r in range(len(self.nbrs))]
            )
        return own + mixed + corr.few_bias[:, None, :]

    def top1(self, corr: _Corrections) -> torch.Tensor:
        """(R,) overall top-1 accuracy of every seed."""
        few_best, arg = self.few_logits(corr).max(dim=2)
        pred = torch.where(few_best > self.base_best, self.few[arg], self.base_pred)
        return (pred == self.labels).float().mean(dim=1)

    def full_logits(self, corr: _Corrections, r: int) -> torch.Tensor:
        logits = self.z + self.bias
        single = _Corrections(corr.alpha_tilde[r : r + 1], corr.few_bias[r : r + 1])
        if self.shared:
            logits[:, self.few] = self.few_logits(single)[0]
        else:
            own = self.z[:, self.few] + (self.z[:, self.nbrs[r]] * corr.alpha_tilde[r]).sum(-1)
            logits[:, self.few] = own + corr.few_bias[r]
        return logits


def _select_epochs(val_curves: list[torch.Tensor], params: AlphaNetParams, num_seeds: int) -> list[int]:
    """Per seed, the 0-based epoch with the best validation top-1 among epochs >=
    ``select_from_epoch`` (strictly better wins, so ties keep the earlier); the last
    epoch when there is no validation set."""
    if not val_curves:
        return [params.epochs - 1] * num_seeds
    curves = torch.stack(val_curves)  # (E, R)
    first = min(params.select_from_epoch, params.epochs) - 1
    window = curves[first:]
    # argmax returns the first maximum: ties keep the earlier epoch.
    return [first + int(i) for i in window.argmax(dim=0)]
