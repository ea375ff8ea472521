"""Top-1 / top-5 accuracy per split on a class-balanced evaluation set.

Per-split accuracy is sample-level over the evaluation samples whose *true* class
is in the split; overall is the mean over all samples (docs/methods.md#splits-and-metrics).
"""

from __future__ import annotations

import numpy as np
import torch

from explore.splits import SPLITS


def accuracy_by_split(
    predictions: np.ndarray, labels: np.ndarray, split_of_class: np.ndarray
) -> dict[str, float]:
    """``acc_<split>`` and ``acc_overall`` from top-1 predictions (fractions in [0, 1]).

    A split with no evaluation samples gets NaN, not 0, so it cannot pass for a result.
    """
    correct = np.asarray(predictions) == np.asarray(labels)
    sample_split = np.asarray(split_of_class)[labels]
    out = {"acc_overall": float(correct.mean()) if len(correct) else float("nan")}
    for split in SPLITS:
        mask = sample_split == split.value
        out[f"acc_{split.value}"] = float(correct[mask].mean()) if mask.any() else float("nan")
    return out


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (N,) — is the true label among the k highest logits."""
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1)


def evaluate_logits(
    logits: torch.Tensor | np.ndarray, labels: np.ndarray | torch.Tensor,
    split_of_class: np.ndarray,
) -> dict[str, float]:
    """All test metrics of one model: per-split and overall top-1, overall top-5. Tensors
    are reduced where they are (the trial's device); only predictions come back."""
    logits_t = logits if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits))
    labels_t = (labels.to(logits_t.device, torch.long) if isinstance(labels, torch.Tensor)
                else torch.tensor(np.asarray(labels), dtype=torch.long, device=logits_t.device))
    labels_np = labels_t.cpu().numpy()
    metrics = accuracy_by_split(logits_t.argmax(-1).cpu().numpy(), labels_np, split_of_class)
    metrics["top5_overall"] = float(topk_correct(logits_t, labels_t, 5).float().mean())
    return metrics
