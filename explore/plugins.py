"""The one way a method plugs into training: :class:`Plugins`, and the default loss.

Both loops accept it — the head loop on cached features (:func:`explore.training.head.fit_head`)
and the backbone loop on images (:func:`explore.backbone.loop.train_backbone`) — so a recipe
writes each piece once and head mode and full mode run the same code. Every piece sees the
epoch (0-based) and, where it draws, the seed's generator of that loop. This module sits
below both loops (it imports neither), so the backbone never imports ``explore.training``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the aliases name torch types as strings: no torch import to declare a method
    import torch
    from torch import nn

__all__ = ["EpochEndFn", "LoadStateFn", "LossFn", "MixFn", "Plugins", "SampleFn", "StateFn"]

LossFn = Callable[["torch.Tensor", "torch.Tensor", int], "torch.Tensor"]
"""``loss(logits, targets, epoch)`` → per-sample losses (N,). ``targets`` are class indices,
or N×C probabilities after a ``mix``."""
SampleFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
"""``sample_indices(train_labels, epoch, rng)`` → the epoch's training indices (repeats
allowed). The head loop trains on them in the order given; the backbone loop shuffles them
and shards them over its ranks (every rank gets the same ``rng``)."""
MixFn = Callable[["torch.Tensor", "torch.Tensor", int, np.random.Generator],
                 tuple["torch.Tensor", "torch.Tensor"]]
"""``mix(x, y, epoch, rng)`` → ``(inputs, targets)`` of a batch (e.g. mixup, soft targets)."""
EpochEndFn = Callable[[int, "nn.Module", dict[str, float]], None]
"""``on_epoch_end(epoch, model, stats)`` after each training epoch; ``stats`` holds what the
loop measured (e.g. ``train_loss``). A plug-in may add entries (they reach the epoch's
report)."""
StateFn = Callable[[], dict[str, Any]]
"""``state_dict()`` → the plug-ins' own state (tensors, optimiser states, plain values)."""
LoadStateFn = Callable[[dict[str, Any]], None]
"""``load_state_dict(state)`` restores what ``state_dict()`` returned, in place."""


@dataclass(frozen=True)
class Plugins:
    """What a method changes in a training loop. Every field is optional; the default is
    plain cross-entropy on uniformly shuffled samples.

    Plug-ins must be deterministic given the generator they are handed, so a resumed run
    repeats what an uninterrupted one does. The backbone loop checkpoints ``parameters``
    and ``records`` itself; any other state that outlives an epoch (a running average, an
    optimiser of the plug-in's own) must be given by ``state_dict``/``load_state_dict``,
    which it checkpoints and restores too.
    """

    loss: LossFn | None = None
    sample_indices: SampleFn | None = None
    mix: MixFn | None = None
    on_epoch_end: EpochEndFn | None = None
    parameters: Sequence[nn.Parameter] = field(default_factory=tuple)
    """Extra trainable tensors the method owns (e.g. DySWRM's similarity vector), optimised
    with the model and saved with its state."""
    records: dict[str, Any] = field(default_factory=dict)
    """Values the plug-ins measured while training (e.g. the last epoch's mean margin):
    they end up in the seed's result row."""
    state_dict: StateFn | None = None
    """The plug-ins' state beyond ``parameters`` and ``records``, saved in every checkpoint
    (copied: it must not follow training afterwards)."""
    load_state_dict: LoadStateFn | None = None
    """Restores a ``state_dict()`` on resume, after ``parameters`` and ``records``."""

    def __post_init__(self) -> None:
        if (self.state_dict is None) != (self.load_state_dict is None):
            raise ValueError("Plugins: give both state_dict and load_state_dict, or neither")
