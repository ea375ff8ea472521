"""The generic parts of training: the head loop on cached features, what a trial trains
on, and the full-mode runner. Nothing here knows a method. The plug-in protocol both loops
accept is :mod:`explore.plugins` (re-exported here).

``full`` is not imported here (it imports the backbone package); import
``explore.training.full`` for :func:`~explore.training.full.run_full_seeds`.
"""

from explore.plugins import Plugins
from explore.training.head import HeadFit, HeadTrainConfig, fit_head, select_epoch
from explore.training.outcome import Fit, SeedResult

__all__ = ["Fit", "HeadFit", "HeadTrainConfig", "Plugins", "SeedResult", "fit_head", "select_epoch"]
