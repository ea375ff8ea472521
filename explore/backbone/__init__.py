"""Backbones: the registry of architectures, their training loop (plain or as a Ray Train job),
and feature extraction for the feature store (in one process here; as Ray tasks writing
shards to the store in ``explore.backbone.extract_job``).

The names below are imported on first use (PEP 562), so that ``explore.backbone.train_config``
(the torch-free training config a sweep driver validates) does not import torch. ``ray_job``
is not exported here, so that the models, the loop and extraction stay usable without
starting (or importing) Ray; import ``explore.backbone.ray_job`` for
:func:`~explore.backbone.ray_job.run_backbone_job`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from explore.backbone.extract import extract_features
    from explore.backbone.loop import evaluate, lr_at, train_backbone
    from explore.backbone.models import (
        Backbone,
        BackboneError,
        ModelSpec,
        Preprocess,
        build_model,
        default_preprocess,
        load_batch,
        to_tensor,
        unwrap,
        weights_digest,
    )
    from explore.backbone.train_config import ARCHITECTURES, BackboneTrainConfig

_HOMES = {
    "ARCHITECTURES": "train_config",
    "BackboneTrainConfig": "train_config",
    "extract_features": "extract",
    "evaluate": "loop",
    "lr_at": "loop",
    "train_backbone": "loop",
    **{name: "models" for name in (
        "Backbone", "BackboneError", "ModelSpec", "Preprocess", "build_model",
        "default_preprocess", "load_batch", "to_tensor", "unwrap", "weights_digest")},
}

__all__ = [
    "ARCHITECTURES",
    "Backbone",
    "BackboneError",
    "BackboneTrainConfig",
    "ModelSpec",
    "Preprocess",
    "build_model",
    "default_preprocess",
    "evaluate",
    "extract_features",
    "load_batch",
    "lr_at",
    "to_tensor",
    "train_backbone",
    "unwrap",
    "weights_digest",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
