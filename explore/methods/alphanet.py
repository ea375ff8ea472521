"""AlphaNet: post-hoc rare-class classifier correction.

Chang, Koushik et al., "AlphaNet: Improving Long-Tail Classification By Combining
Classifiers" (§3, App. A/B; reference code github.com/jayanthkoushik/alphanet). For each few class c with
base-model classifier row w^c and its k nearest base classes' rows v_1..v_k
(nearest first, by the distance between class-mean features):

    α   = f([w^c; v_1; …; v_k])          a small MLP shared by every few class
    α̃   = α / ‖α‖₁
    ŵ^c = w^c + Σ_i α̃_i v_i                                        (eq. 1)

Few classes score ``f(x)·ŵ^c + b_c``; base rows and biases stay frozen.

Because ŵ^c is linear in the rows, ``f(x)·ŵ^c = f(x)·w^c + Σ_i α̃_i f(x)·v_i``: a
few-class logit is the same combination of *base-model logits*. So the logits
``Z = F Wᵀ`` of every split are computed once and serve every epoch, seed and
configuration that shares the features and base model (docs/methods.md#alphanet).

Resolutions (docs/methods.md#alphanet): biases stay frozen as in the reference code
(``learn_bias=True`` gives the paper's learned few biases); model selection keeps
the epoch with the best overall validation top-1 among epochs >= ``select_from_epoch``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explore.methods._arrays import ArrayT
from explore.methods._arrays import like as _like
from explore.methods.params import AlphaNetParams as AlphaNetParams  # re-exported
from explore.methods.params import Distance


def pairwise_distances(a: np.ndarray, b: np.ndarray, distance: Distance) -> np.ndarray:
    """μ(a_i, b_j): euclidean ‖a−b‖₂ or cosine 1 − a·b/(‖a‖‖b‖)."""
    if distance == "euclidean":
        sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.maximum(sq, 0.0))
    if distance == "cosine":
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - an @ bn.T
    raise ValueError(f"unknown distance {distance!r}")


def nearest_base_classes(
    means: np.ndarray, few: np.ndarray, base: np.ndarray, k: int, distance: Distance
) -> np.ndarray:
    """For each few class (in ``few`` order), its k nearest base classes, nearest first.

    Ties are broken by class index (stable sort), so the result is deterministic.
    """
    dist = pairwise_distances(means[few], means[base], distance)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return base[order]


def random_base_classes(few: np.ndarray, base: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's control: k distinct random base classes per few class."""
    return np.stack([rng.choice(base, size=k, replace=False) for _ in few])


def normalize_alphas(alphas: torch.Tensor) -> torch.Tensor:
    """α̃ = α / ‖α‖₁ over the last axis."""
    return alphas / alphas.abs().sum(dim=-1, keepdim=True).clamp_min(1e-12)


def combine(w: ArrayT, neighbors: ArrayT, alphas: ArrayT) -> ArrayT:
    """ŵ = w + Σ_i α̃_i v_i from a class's row ``w`` (…, d), its k neighbour rows
    ``neighbors`` (…, k, d) and the raw (unnormalised) ``alphas`` (…, k).

    numpy arrays in → numpy out; torch tensors in → torch out. Training never forms ŵ:
    it applies the same combination to logits (:func:`combine_logits`), which equals
    ``f·combine(...)`` by linearity (tested).
    """
    w_t, v_t, a_t = (torch.as_tensor(x) for x in (w, neighbors, alphas))
    w_hat = w_t + (normalize_alphas(a_t).unsqueeze(-1) * v_t).sum(dim=-2)
    return _like(w_hat, w)


def network_input(weight: np.ndarray, few: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """The α-network's input per few class: the flattened (k+1)×d stack [w^c; v_1..v_k]."""
    stack = np.concatenate([weight[few][:, None, :], weight[nbrs]], axis=1)
    return stack.reshape(len(few), -1)


def make_alpha_network(in_dim: int, k: int, hidden: int = 32) -> nn.Sequential:
    """Linear → (LeakyReLU(0.01) → Linear) × 3, no output activation, PyTorch default init."""
    # Built on the CPU so that a seed gives the same weights whatever the default device.
    return nn.Sequential(
        nn.Linear(in_dim, hidden, device="cpu"),
        nn.LeakyReLU(0.01),
        nn.Linear(hidden, hidden, device="cpu"),
        nn.LeakyReLU(0.01),
        nn.Linear(hidden, hidden, device="cpu"),
        nn.LeakyReLU(0.01),
        nn.Linear(hidden, k, device="cpu"),
    )


class StackedAlphaNetworks(nn.Module):
    """R independent α-networks evaluated as one batched model (one per seed).

    Seed r's layers are initialised exactly as ``make_alpha_network`` would be after
    ``torch.manual_seed(seeds[r])``, so training the stack with an element-wise
    optimiser (AdamW) equals R separate runs up to float rounding.
    """

    def __init__(self, in_dim: int, k: int, hidden: int, seeds: list[int]) -> None:
        super().__init__()
        nets = []
        for seed in seeds:
            torch.manual_seed(seed)
            nets.append(make_alpha_network(in_dim, k, hidden))
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([layers[i].weight.detach().T for layers in linears]))
            for i in range(4)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([layers[i].bias.detach() for layers in linears]))
            for i in range(4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n_few, in_dim), shared by all seeds → raw α (R, n_few, k)."""
        h = torch.einsum("fi,rio->rfo", x, self.weights[0]) + self.biases[0][:, None, :]
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = torch.nn.functional.leaky_relu(h, 0.01)
            h = torch.bmm(h, w) + b[:, None, :]
        return h


class WideAlphaNetworks(nn.Module):
    """The seeds' α-networks of a ``StackedAlphaNetworks``, first layer laid out wide.

    Seed r's first-layer weights are columns ``r·h … r·h+h−1`` of one (in, R·h) matrix
    (same values as ``stack.weights[0][r]``): with a shared input, the forward pass and
    the weight gradient of all seeds are each one GEMM with R·h columns, and no
    per-step transposes of the largest tensor are needed. The later (tiny) layers are
    the stack's own parameters.
    """

    def __init__(self, stack: StackedAlphaNetworks) -> None:
        super().__init__()
        w0 = stack.weights[0].detach()  # (R, in, h)
        self.num_seeds, self.hidden = w0.shape[0], w0.shape[2]
        self.w0 = nn.Parameter(w0.permute(1, 0, 2).reshape(w0.shape[1], -1).clone())
        self.b0 = nn.Parameter(stack.biases[0].detach().reshape(-1).clone())
        self.weights = nn.ParameterList(list(stack.weights[1:]))
        self.biases = nn.ParameterList(list(stack.biases[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw α (R, n_few, k) from a shared input (n_few, in) or one per seed (R, n_few, in)."""
        R, h = self.num_seeds, self.hidden
        if x.dim() == 2:
            out = torch.addmm(self.b0, x, self.w0).view(x.shape[0], R, h).transpose(0, 1)
        else:  # random neighbours: each seed's input meets its own columns (a strided view)
            w0 = self.w0.view(-1, R, h).transpose(0, 1)
            out = torch.baddbmm(self.b0.view(R, 1, h), x, w0)
        for w, b in zip(self.weights, self.biases):
            out = torch.baddbmm(b[:, None, :], torch.nn.functional.leaky_relu(out, 0.01), w)
        return out


def combine_logits(own: torch.Tensor, neighbor_logits: torch.Tensor,
                   alpha_tilde: torch.Tensor) -> torch.Tensor:
    """Eq. (1) in logit space: ``f·ŵ^c = f·w^c + Σ_i α̃_i (f·v_i)``.

    own: (..., N, n_few) bias-free logits of the few classes' own rows; neighbor_logits:
    (..., N, n_few, k) those of their neighbours; alpha_tilde: (..., n_few, k) normalised
    α̃. Leading dimensions broadcast (e.g. R seeds' α̃ against one split's logits), and
    the sum over k never materialises the (R, N, n_few, k) product. This is the one place
    the combination is computed: training, evaluation and :func:`few_class_logits` call it.
    """
    return own + torch.einsum("...nfk,...fk->...nf", neighbor_logits, alpha_tilde)


def few_class_logits(
    base_logits: torch.Tensor, few: torch.Tensor, nbrs: torch.Tensor, alpha_tilde: torch.Tensor
) -> torch.Tensor:
    """Few-class logits without bias, as combinations of bias-free base-model logits.

    base_logits: (..., N, C) = F Wᵀ; few: (n_few,); nbrs: (n_few, k);
    alpha_tilde: (..., n_few, k) → (..., N, n_few).
    """
    return combine_logits(base_logits[..., few], base_logits[..., nbrs], alpha_tilde)


def epoch_sample_indices(
    labels: np.ndarray, few_mask_by_class: np.ndarray, rho: float, rng: np.random.Generator
) -> np.ndarray:
    """One epoch's training samples: every few-split sample plus floor(rho·F) base
    samples drawn with replacement (a base class uniformly, then a sample uniformly
    within it), shuffled."""
    is_few = few_mask_by_class[labels]
    few_idx = np.flatnonzero(is_few)
    n_base = int(np.floor(rho * len(few_idx)))
    base_classes = np.flatnonzero(~few_mask_by_class)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], base_classes)
    sizes = np.searchsorted(labels[order], base_classes, side="right") - starts
    picked = rng.choice(len(base_classes), size=n_base)
    base_idx = order[starts[picked] + rng.integers(0, sizes[picked])]
    idx = np.concatenate([few_idx, base_idx])
    rng.shuffle(idx)
    return idx
