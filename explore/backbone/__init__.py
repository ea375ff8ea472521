"""Backbones: the registry of architectures, their training loop (plain or as a Ray Train job),
and feature extraction for the feature store (in one process here; as Ray tasks writing
shards to the store in ``explore.backbone.extract_job``).

``ray_job`` is not imported here, so that the models, the loop and extraction stay usable
without starting (or importing) Ray; import ``explore.backbone.ray_job`` for
:func:`~explore.backbone.ray_job.run_backbone_job`.
"""

from explore.backbone.extract import extract_features
from explore.backbone.loop import BackboneTrainConfig, evaluate, lr_at, train_backbone
from explore.backbone.models import (
    ARCHITECTURES,
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
