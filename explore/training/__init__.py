"""The generic parts of training: the head loop on cached features, what a trial trains
on, and the full-mode runner. Nothing here knows a method. The plug-in protocol both loops
accept is :mod:`explore.plugins` (re-exported here).

The names below are imported on first use (PEP 562), so that the torch-free parts
(``head_config``, ``outcome``) do not import torch. ``full`` is not exported here (it
imports the backbone package); import ``explore.training.full`` for
:func:`~explore.training.full.run_full_seeds`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from explore.plugins import Plugins
    from explore.training.head import HeadFit, fit_head, select_epoch
    from explore.training.head_config import HeadTrainConfig
    from explore.training.outcome import Fit, SeedResult

_HOMES = {
    "Plugins": "explore.plugins",
    "HeadFit": "explore.training.head",
    "fit_head": "explore.training.head",
    "select_epoch": "explore.training.head",
    "HeadTrainConfig": "explore.training.head_config",
    "Fit": "explore.training.outcome",
    "SeedResult": "explore.training.outcome",
}

__all__ = ["Fit", "HeadFit", "HeadTrainConfig", "Plugins", "SeedResult", "fit_head", "select_epoch"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
