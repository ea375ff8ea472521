"""Tiny synthetic image splits and models shared by the backbone tests."""

from __future__ import annotations

import numpy as np
import torch

from explore.backbone import Backbone, build_model
from explore.data.types import ImageSplit


def bars(n: int, seed: int, channels: int = 0, size: int = 28) -> ImageSplit:
    """Two classes of noisy images: class 0 has a bright horizontal bar, class 1 a vertical
    one, at a random position. ``channels=3`` gives N×H×W×3 images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 90, (n, size, size)).astype(np.uint8)
    for i in range(n):
        p = rng.integers(2, size - 6)
        if y[i]:
            x[i, :, p:p + 4] += 120
        else:
            x[i, p:p + 4, :] += 120
    if channels == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    return ImageSplit(labels=y, images=x)


def fresh_cnn(seed: int = 0) -> Backbone:
    """The small CNN for two classes, initialised from ``seed``."""
    torch.manual_seed(seed)
    return build_model("small_cnn", 2)
