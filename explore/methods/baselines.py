"""Decoupling baselines as pure pieces.

Paper: Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020 (docs/methods.md#baselines); balanced softmax from
Ren et al., NeurIPS 2020; logit adjustment from Menon et al., "Long-tail learning via
logit adjustment", ICLR 2021. Pieces:

* cRT: re-train the linear classifier on frozen features with class-balanced sampling
  — a class uniformly, then a sample uniformly within it
  (:func:`class_balanced_indices`).
* τ-normalised classifier: ``w_c / ‖w_c‖^τ`` (:func:`tau_normalize`).
* LWS: a learned per-class scale ``s_c`` of the classifier; the logits are
  ``s_c · (f·w_c + b_c)`` — the bias is scaled with the weight row, as in the
  reference implementation (:func:`lws_logits`).
* NCM: nearest class mean; the logit is the negative euclidean distance to each class
  mean (argmax = nearest mean), or the cosine similarity (:func:`ncm_logits`).
* Logit adjustment (loss form): train on ``z_j + τ·log π_j`` with the class priors
  ``π_j = n_j / Σn`` and predict with the plain logits (:func:`logit_adjusted_logits`).
  Balanced softmax / BalCE is the same loss at τ = 1.
* Plain CE, per sample (:func:`cross_entropy_loss`): the default loss of both training
  loops (head and backbone).

Functions take numpy arrays or torch tensors and return the same kind. No Ray, Hydra
or S3 here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explore.methods._arrays import ArrayT
from explore.methods._arrays import as_tensor as _as_tensor
from explore.methods._arrays import like as _like
from explore.methods.params import LogitAdjustmentParams as LogitAdjustmentParams  # re-exported
from explore.methods.params import NCMParams as NCMParams  # re-exported
from explore.methods.params import TauNormParams as TauNormParams  # re-exported
from explore.methods.params import check_nonnegative_tau as _check_tau


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int = 0) -> torch.Tensor:
    """Per-sample cross-entropy (N,) with class-index (N) or probability (N×C) targets: the
    default loss of every training loop. ``epoch`` is unused (the plug-in loss signature)."""
    return F.cross_entropy(logits, targets, reduction="none")


def class_balanced_indices(
    labels: np.ndarray, C: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` sample indices drawn with replacement: a class uniformly, then a sample
    uniformly within it. Every class in [0, C) must have a sample."""
    y = np.asarray(labels).astype(np.int64)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels must be class indices in [0, {C})")
    counts = np.bincount(y, minlength=C)
    if np.any(counts == 0):
        raise ValueError(
            f"classes {np.flatnonzero(counts == 0).tolist()} have no samples to draw from"
        )
    by_class = np.argsort(y, kind="stable")
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    cls = rng.integers(0, C, size=n)
    offset = rng.integers(0, counts[cls])
    return by_class[start[cls] + offset].astype(np.int64)


def logit_adjusted_logits(logits: ArrayT, counts: ArrayT, tau: float = 1.0) -> ArrayT:
    """Logit-adjusted training logits ``z_j + τ·log π_j`` (all counts > 0; τ = 1: balanced
    softmax).

    Computed as ``z_j + τ·log n_j``: ``log π_j = log n_j − log Σn`` differs by a constant per
    sample, which moves no softmax probability and no cross-entropy loss.
    """
    _check_tau(tau)
    z = _as_tensor(logits)
    n = _as_tensor(counts).to(z.dtype)
    if z.ndim != 2 or n.shape != (z.shape[1],):
        raise ValueError(f"logits must be N×C and counts (C,), got {tuple(z.shape)}, "
                         f"{tuple(n.shape)}")
    if not bool(torch.all(n > 0)):
        raise ValueError("counts must all be > 0")
    return _like(z + tau * torch.log(n), logits)


def tau_normalize(weight: ArrayT, tau: float) -> ArrayT:
    """τ-normalised classifier rows ``w_c / ‖w_c‖^τ`` (weight is C×d)."""
    _check_tau(tau)
    w = _as_tensor(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be C×d, got shape {tuple(w.shape)}")
    norms = w.norm(dim=1, keepdim=True)
    if tau > 0 and bool(torch.any(norms == 0)):
        raise ValueError("weight has an all-zero row; it cannot be τ-normalised")
    return _like(w / norms.pow(tau), weight)


def lws_logits(
    features: ArrayT, weight: ArrayT, bias: ArrayT | None, scales: ArrayT
) -> ArrayT:
    """LWS logits ``s_c · (f·w_c + b_c)``; ``scales`` (C,) are the learned parameters."""
    f = _as_tensor(features)
    w = _as_tensor(weight).to(f.dtype)
    s = _as_tensor(scales).to(f.dtype)
    if f.ndim != 2 or w.ndim != 2 or w.shape[1] != f.shape[1] or s.shape != (w.shape[0],):
        raise ValueError(f"need features N×d, weight C×d, scales (C,); got {tuple(f.shape)}, "
                         f"{tuple(w.shape)}, {tuple(s.shape)}")
    z = f @ w.T
    if bias is not None:
        z = z + _as_tensor(bias).to(f.dtype)
    return _like(z * s, features)


class ScaledClassifier(nn.Module):
    """LWS's model: a frozen linear classifier (``weight`` C×d, ``bias`` C) whose logits are
    scaled per class, ``s_c·(f·w_c + b_c)``; the scales (init 1) are what trains (the
    torch form of :func:`lws_logits`)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weight.copy()))
        self.register_buffer("bias", torch.from_numpy(bias.copy()))
        self.scales = nn.Parameter(torch.ones(len(bias), device="cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.get_buffer("weight"), self.get_buffer("bias")
        return (x @ weight.T + bias) * self.scales


def ncm_logits(
    features: ArrayT,
    class_means: ArrayT,
    metric: Literal["euclidean", "cosine"] = "euclidean",
) -> ArrayT:
    """NCM scores: ``−‖f − μ_c‖₂`` (euclidean) or ``cos(f, μ_c)``; argmax = nearest mean."""
    f = _as_tensor(features)
    mu = _as_tensor(class_means).to(f.dtype)
    if f.ndim != 2 or mu.ndim != 2 or mu.shape[1] != f.shape[1]:
        raise ValueError(f"need features N×d and class_means C×d, got {tuple(f.shape)}, "
                         f"{tuple(mu.shape)}")
    if metric == "euclidean":
        out = -torch.cdist(f, mu)
    elif metric == "cosine":
        fn = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        mn = mu / mu.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = fn @ mn.T
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    return _like(out, features)
