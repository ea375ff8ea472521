"""LFM on cached features: stage 2 of the paper, a text-feature cosine head trained
with local feature mixup (``explore.methods.lfm``; METHODS.md "LFM").

Per batch: pairs (i, j) drawn by local sampling (``sample_pairs``: i uniform, y_j ~
p(·|y_i) with temperature τ), one λ_x ~ Beta(a, a) per batch (or per sample), features
mixed, labels shifted by α, soft-label cross-entropy on the cosine logits between the
learned projection ``W_Iᵀ f`` and the fixed class text features (optionally MMS). The
loop's batch only fixes how many pairs a step draws: an epoch is ⌈N / batch⌉ steps
of freshly drawn pairs.

``W_I`` (d_img × d_txt) starts at the identity when the dimensions match (the paper's
stage-2 init). Otherwise it starts as a seeded random matrix with orthonormal columns
(d_img ≥ d_txt) or rows (d_img < d_txt), i.e. an isometry on its smaller side: the
closest thing to the identity a rectangular map has, and it keeps the cosines of the
projected features as informative as such a map can at the start.

Text features of "a photo of a {class}" are encoded once per process and kept in a
module-level cache keyed by (classes, prompt, encoder name). :func:`class_text_features`
also takes an optional ``store`` (a ``FeatureStore``): then the embeddings are read
from / written to the store under a key of the same three inputs, so a cluster encodes
each class list once. Trials do not pass a store yet (``TrialInputs`` carries no
storage URI); the per-process cache is what they use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explore.methods.lfm import (
    LFMParams,
    cosine_logits,
    mix,
    mms_logits,
    pair_probabilities,
    sample_lambda,
    sample_pairs,
    soft_cross_entropy,
    text_distance,
)
from explore.text_encoder import (
    DEFAULT_PROMPT,
    TextEncoderUnavailableError,
    encode_class_names,
    encoder_name,
)
from explore.training.head import HeadTrainConfig, LossFn, MixFn, fit_head
from explore.training.head_runs import HeadData, HeadTraining, head_data, run_seeds
from explore.training.outcome import SeedResult

if TYPE_CHECKING:
    from explore.training.registry import TrialInputs

_TEXT_CACHE: dict[tuple[tuple[str, ...], str, str], np.ndarray] = {}


def class_text_features(classes: Sequence[str], prompt: str = DEFAULT_PROMPT, store: Any = None) -> tuple[np.ndarray, str]:
    """(C×D unit-norm text features of ``prompt`` per class, encoder name), cached.

    Raises :class:`TextEncoderUnavailableError` (one line: what to install) when this
    machine has no text encoder.
    """
    name = encoder_name()
    key = (tuple(classes), prompt, name)
    if key in _TEXT_CACHE:
        return _TEXT_CACHE[key], name
    emb = None
    store_key = None
    if store is not None:
        from explore.store.feature_store import feature_key

        store_key = feature_key({"kind": "text_features", "classes": list(key[0]), "prompt": prompt,
                                 "encoder": name})
        if store.has_arrays(store_key, "text_features"):
            emb = store.get_arrays(store_key, "text_features")[0]["embeddings"]
    if emb is None:
        emb = encode_class_names(key[0], prompt).embeddings
        if store is not None:
            store.put_arrays(store_key, "text_features", {"embeddings": emb}, {"encoder": name})
    _TEXT_CACHE[key] = np.asarray(emb, dtype=np.float32)
    return _TEXT_CACHE[key], name


def require_text_encoder(method: str) -> None:
    """A ValueError with the encoder's one-line fix, before any trial starts."""
    try:
        encoder_name()
    except TextEncoderUnavailableError as exc:
        raise ValueError(f"{method} needs a text encoder: {exc}") from None


@dataclass(frozen=True)
class LFMHeadParams(LFMParams, HeadTraining):
    """LFM's knobs (``alpha``, ``tau``, Beta, scale, MMS) plus the head's training settings."""

    mixup: bool = True
    """False: no pairs and no mixing, plain (hard-label) CE on the cosine logits — the
    control that isolates what local feature mixup adds."""

    def __post_init__(self) -> None:
        LFMParams.__post_init__(self)
        HeadTraining.__post_init__(self)


class CosineTextHead(nn.Module):
    """Logits ``scale · cos(W_Iᵀ f, f_T,c)`` against fixed text features (rows by class)."""

    def __init__(self, d_img: int, text_features: np.ndarray, scale: float, seed: int) -> None:
        super().__init__()
        text = torch.as_tensor(np.asarray(text_features), dtype=torch.float32)
        self.register_buffer("text", text / text.norm(dim=1, keepdim=True))
        self.scale = float(scale)
        self.projection = nn.Parameter(initial_projection(d_img, text.shape[1], seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cosine_logits(x, self.projection, self.text, self.scale)


def initial_projection(d_img: int, d_txt: int, seed: int) -> torch.Tensor:
    """Identity when square; else seeded orthonormal columns/rows (see module docstring)."""
    if d_img == d_txt:
        return torch.eye(d_img)
    g = torch.Generator().manual_seed(seed)
    big, small = max(d_img, d_txt), min(d_img, d_txt)
    q, _ = torch.linalg.qr(torch.randn(big, small, generator=g))  # big×small, orthonormal columns
    return (q if d_img >= d_txt else q.T).contiguous()


def _loss(params: LFMHeadParams, text: np.ndarray) -> LossFn:
    """Soft-label CE (hard-label CE without mixup) on the cosine or MMS logits."""
    D = torch.as_tensor(text_distance(text), dtype=torch.float32) if params.mms else None

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if D is not None:  # MMS on the (scaled) cosines: exactly the paper's with logit_scale 1
            logits = mms_logits(logits, targets, D, params.mms_margin, params.mms_temperature)
        if targets.ndim == 2:
            return soft_cross_entropy(logits, targets)
        return F.cross_entropy(logits, targets, reduction="none")

    return loss


def _mixer(params: LFMHeadParams, data: HeadData, text: np.ndarray) -> MixFn:
    """Local feature mixup of freshly drawn pairs; the batch only sets their number."""
    labels = np.asarray(data.train[1], dtype=np.int64)
    x = torch.from_numpy(np.require(data.train[0], np.float32, ["C", "W"]))  # store reads are read-only
    y = torch.from_numpy(labels)
    counts = data.counts
    counts_t = torch.as_tensor(counts, dtype=torch.float32)
    probs = pair_probabilities(text.astype(np.float64), params.tau)
    C = data.num_classes

    def mix_batch(batch_x: torch.Tensor, _batch_y: torch.Tensor, rng: np.random.Generator):  # type: ignore[no-untyped-def]
        B = len(batch_x)
        i, j = sample_pairs(labels, counts, probs, B, rng)
        lam = sample_lambda(params.beta_param, 1 if params.lambda_per_batch else B, rng)
        lam_x = float(lam[0]) if params.lambda_per_batch else torch.from_numpy(lam).float()
        return mix(x[i], x[j], y[i], y[j], lam_x, counts_t, params.alpha, C)

    return mix_batch


def train_lfm_seed(data: HeadData, params: LFMHeadParams, text: np.ndarray, seed: int,
                   cfg: HeadTrainConfig | None = None):  # type: ignore[no-untyped-def]
    head = CosineTextHead(data.d, text, params.logit_scale, seed)
    return fit_head(head, data.train, data.val, cfg or params.head_config(), seed=seed,
                    loss=_loss(params, text), mix=_mixer(params, data, text) if params.mixup else None)


def fit_lfm(inputs: TrialInputs, params: LFMHeadParams, seeds: list[int]) -> list[SeedResult]:
    """Train one LFM head per seed."""
    data = head_data(inputs)
    if data.num_classes < 2:
        raise ValueError("lfm needs at least 2 classes to pair")
    if params.mixup and (data.counts == 0).any():
        raise ValueError(f"lfm: classes {np.flatnonzero(data.counts == 0).tolist()} have no training samples")
    text, encoder = class_text_features(inputs.features.classes, params.prompt)
    params.resolved.update(text_encoder=encoder, d_text=int(text.shape[1]),
                           projection_init="identity" if text.shape[1] == data.d else "orthonormal")
    return run_seeds(seeds, data, lambda seed: train_lfm_seed(data, params, text, seed))
