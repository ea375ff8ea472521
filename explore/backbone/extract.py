"""Feature extraction: a trained backbone's ``embed`` over a whole split, as a numpy array.

The feature store (``explore.store``) caches these arrays keyed by the dataset, the
backbone's :class:`~explore.backbone.models.Preprocess` and its
:func:`~explore.backbone.models.weights_digest`; every head-level sweep then reads them
instead of running the backbone again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from explore.backbone.models import load_batch, unwrap
from explore.data.types import ImageSplit

__all__ = ["extract_features"]


def extract_features(
    model: nn.Module,
    split: ImageSplit,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    decode: Callable[[str], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``float32 (N, feature_dim)`` features of every image of ``split``, in split order.

    Runs in eval mode (BatchNorm uses its running statistics, so a sample's features do not
    depend on its batch) under ``torch.inference_mode``, in float32 (no autocast: cached
    features should not depend on the precision a GPU happened to run at). The model's
    train/eval mode and device are restored afterwards. ``decode`` reads path-based splits;
    ``progress(n)`` is told after every batch that ``n`` more images are done.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = unwrap(model)
    device = torch.device(device)
    was_training = net.training
    original_device = next(net.parameters()).device
    net.eval().to(device)
    out = np.empty((len(split), net.feature_dim), dtype=np.float32)
    try:
        with torch.inference_mode():
            for start in range(0, len(split), batch_size):
                idx = np.arange(start, min(start + batch_size, len(split)))
                x = load_batch(split, idx, net.preprocess, decode).to(device)
                out[start:start + len(idx)] = net.embed(x).float().cpu().numpy()
                if progress is not None:
                    progress(len(idx))
    finally:
        net.train(was_training).to(original_device)
    return out
