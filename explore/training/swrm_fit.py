"""SWRM and DySWRM heads on cached features (``explore.methods.swrm``; METHODS.md).

SWRM: a linear head trained with the fixed SWR weights and SWM margins of eq. (4).
The similarity coordinates are the 1-D t-SNE projection of the class prototypes. The
paper takes the prototypes from a CE-trained model; on cached features the prototypes
*are* the class means of the training features (the features are the CE-trained
backbone's, and a prototype is a mean feature), so no extra model is trained. t-SNE is
seeded with each repeat's seed, so the window order varies with the seed as it would
between the paper's runs; the perplexity and learning rate actually used are recorded
in the params (``resolved``, hence ``params_json``).

DySWRM: the head and a learnable similarity vector ``s`` are one module, optimised
together; every batch recomputes the windows (from the current order of ``s``), the
weights and the margins (differentiable in ``s``) from the standardised ``s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from explore.methods.alphanet import class_means
from explore.methods.swrm import (
    DySWRMParams,
    DySWRMSimilarity,
    SWRMParams,
    effective_perplexity,
    initial_similarity,
    swrm_loss,
    swrm_terms,
    tsne_coordinates,
    tsne_learning_rate,
)
from explore.training.head import HeadFit, fit_head
from explore.training.head_runs import HeadData, HeadTraining, head_data, run_seeds, seeded_linear
from explore.training.outcome import SeedResult

if TYPE_CHECKING:
    from explore.training.registry import TrialInputs


@dataclass(frozen=True)
class SWRMHeadParams(SWRMParams, HeadTraining):
    """SWRM's knobs (``W``, ``beta``, t-SNE, ablations) plus the head's training settings."""

    def __post_init__(self) -> None:
        SWRMParams.__post_init__(self)
        HeadTraining.__post_init__(self)


@dataclass(frozen=True)
class DySWRMHeadParams(DySWRMParams, HeadTraining):
    """DySWRM's knobs plus the head's training settings (t-SNE ones for ``init="tsne"``)."""

    tsne_perplexity: float = 30.0
    """Perplexity of the t-SNE warm start (``init="tsne"`` only); clamped to C − 1."""
    tsne_learning_rate: float | None = None
    """t-SNE learning rate of the warm start; None = ``tsne_learning_rate(C)``."""

    def __post_init__(self) -> None:
        DySWRMParams.__post_init__(self)
        HeadTraining.__post_init__(self)
        SWRMParams(self.W, self.beta, self.tsne_perplexity, self.tsne_learning_rate)  # validates t-SNE


def check_window(params: SWRMParams | DySWRMParams, num_classes: int) -> None:
    if params.W > num_classes:
        raise ValueError(f"W={params.W} must be <= the number of classes C={num_classes}")


def _tsne_settings(perplexity: float, learning_rate: float | None, num_classes: int) -> tuple[float, float]:
    used_lr = tsne_learning_rate(num_classes) if learning_rate is None else float(learning_rate)
    return effective_perplexity(perplexity, num_classes), used_lr


def _prototypes(data: HeadData) -> np.ndarray:
    """Class means of the training features: the prototypes of the CE-trained backbone."""
    return class_means(data.train[0], data.train[1], data.num_classes)


def swrm_tsne_settings(params: SWRMHeadParams, data: HeadData) -> tuple[np.ndarray, float, float]:
    """(prototypes, perplexity used, learning rate used); the two are recorded in ``resolved``."""
    perplexity, lr = _tsne_settings(params.tsne_perplexity, params.tsne_learning_rate, data.num_classes)
    params.resolved.update(tsne_perplexity=perplexity, tsne_learning_rate=lr,
                           prototypes="class means of the training features")
    return _prototypes(data), perplexity, lr


def train_swrm_seed(data: HeadData, params: SWRMHeadParams, tsne: tuple[np.ndarray, float, float],
                    seed: int) -> HeadFit:
    """One seed: t-SNE coordinates with this seed → weights and margins → the head."""
    coords = tsne_coordinates(tsne[0], seed, tsne[1], tsne[2])
    weights, margins = swrm_terms(data.counts.astype(np.float64), coords, params)
    w = torch.as_tensor(weights, dtype=torch.float32)
    m = torch.as_tensor(margins, dtype=torch.float32)
    head = seeded_linear(data.d, data.num_classes, seed)
    return fit_head(head, data.train, data.val, params.head_config(), seed=seed,
                    loss=lambda z, y: swrm_loss(z, y, w, m))


def fit_swrm(inputs: TrialInputs, params: SWRMHeadParams, seeds: list[int]) -> list[SeedResult]:
    """Train one SWRM head per seed; t-SNE coordinates (and so windows) per seed."""
    data = head_data(inputs)
    check_window(params, data.num_classes)
    tsne = swrm_tsne_settings(params, data)
    return run_seeds(seeds, data, lambda seed: train_swrm_seed(data, params, tsne, seed))


class DySWRMHead(nn.Module):
    """A linear head and DySWRM's similarity vector, optimised together.

    ``forward`` gives the head's logits; :meth:`loss` is eq. (4) with the weights and
    margins of the current standardised similarity vector.
    """

    def __init__(self, head: nn.Linear, similarity: DySWRMSimilarity, counts: np.ndarray,
                 params: DySWRMParams) -> None:
        super().__init__()
        self.head = head
        self.similarity = similarity
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.float32))
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weights, margins = swrm_terms(self.counts, self.similarity.standardised(), self.params)
        return swrm_loss(logits, targets, weights, margins)


def train_dyswrm_seed(data: HeadData, params: DySWRMHeadParams,
                      tsne: tuple[np.ndarray, float, float] | None, seed: int) -> HeadFit:
    """One seed: initial similarity (seeded draws or t-SNE) → head and ``s`` trained together."""
    coords = tsne_coordinates(tsne[0], seed, tsne[1], tsne[2]) if tsne is not None else None
    init = initial_similarity(data.num_classes, params.init, seed, coords)
    model = DySWRMHead(seeded_linear(data.d, data.num_classes, seed), DySWRMSimilarity(init),
                       data.counts, params)
    return fit_head(model, data.train, data.val, params.head_config(), seed=seed, loss=model.loss)


def fit_dyswrm(inputs: TrialInputs, params: DySWRMHeadParams, seeds: list[int]) -> list[SeedResult]:
    """Train one DySWRM head (with its similarity vector) per seed."""
    data = head_data(inputs)
    check_window(params, data.num_classes)
    tsne = None
    if params.init == "tsne":
        perplexity, lr = _tsne_settings(params.tsne_perplexity, params.tsne_learning_rate, data.num_classes)
        params.resolved.update(tsne_perplexity=perplexity, tsne_learning_rate=lr)
        tsne = (_prototypes(data), perplexity, lr)
    params.resolved["init"] = params.init
    return run_seeds(seeds, data, lambda seed: train_dyswrm_seed(data, params, tsne, seed))
