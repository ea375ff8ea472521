"""The linear classifier on features, ``logits = F Wᵀ + b``: what every base recipe
produces, what post-hoc methods correct, and what a feature directory may bring along
(``classifier.npz``). A ground-floor type: the store and the training code both use it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearClassifier"]


@dataclass(frozen=True, eq=False)
class LinearClassifier:
    """A linear classifier over C classes; weight and bias are kept as contiguous float32."""

    weight: np.ndarray
    """C×d."""
    bias: np.ndarray
    """C."""

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weight), np.asarray(self.bias)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"classifier weight must be C×d and bias C; got {w.shape} and {b.shape}")
        if not (np.issubdtype(w.dtype, np.number) and np.issubdtype(b.dtype, np.number)):
            raise ValueError("classifier weight and bias must be numeric")
        object.__setattr__(self, "weight", np.ascontiguousarray(w, np.float32))
        object.__setattr__(self, "bias", np.ascontiguousarray(b, np.float32))

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias
