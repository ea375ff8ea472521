"""Backbone training as a Ray Train job: :func:`train_backbone` on ``cfg.num_workers`` workers.

Each worker builds the model from a :class:`~explore.backbone.models.ModelSpec`, wraps it with
``ray.train.torch.prepare_model`` (DDP over gloo on CPU, NCCL on GPU) and runs the plain loop
with a ``report`` callback that turns every epoch into ``ray.train.report`` — with a
checkpoint (a ``torch.save`` of rank 0's state) at checkpoint epochs.

Restarts: the Train run is stored at ``<storage_path>/<run_name>/``. Calling
:func:`run_backbone_job` again with the same ``run_name`` and storage resumes from the
latest checkpoint there (Ray Train restores its checkpoint manager from storage, and the
workers read ``ray.train.get_checkpoint()``); worker failures inside one call are retried
``max_failures`` times from the latest checkpoint. So pick a ``run_name`` that identifies
the backbone (e.g. derived from the feature-cache key), never a timestamp.

Data: the train/val :class:`ImageSplit` objects go to the object store with ``ray.put`` and
each worker fetches them. That is right for Fashion-MNIST/CIFAR-sized arrays; a large
path-based split (ImageNet-LT) only ships its path list, and every worker decodes its own
shard's files with ``decode`` — the files must then be readable from every node (shared
filesystem, or a ``decode`` that reads from S3).

Resources and the 2-CPU deadlock (docs/operations.md#the-trial_driver-resource): each worker asks for
``resources_per_worker`` (Ray's default: 1 CPU, plus 1 GPU when ``cfg.use_gpu``). From a
plain driver nothing else holds a CPU. Inside a Tune trial, the trial itself holds one CPU
by default, so 1 + num_workers CPUs are needed; give the trial the custom ``trial_driver``
resource instead (``tune.with_resources(fn, {"trial_driver": 1})``), or pass fractional
worker CPUs, e.g. ``resources_per_worker={"CPU": 0.5}``. Forward metrics to Tune with
``callbacks=[ray.tune.integration.ray_train.TuneReportCallback()]``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import torch

from explore.backbone.loop import BackboneTrainConfig, train_backbone
from explore.backbone.models import ModelSpec
from explore.data.types import ImageSplit
from explore.training.plugins import Plugins

__all__ = ["BackboneJobError", "STATE_FILE", "load_checkpoint_state", "run_backbone_job"]

STATE_FILE = "state.pt"
"""Name of the ``torch.save``-d state inside every checkpoint directory."""


class BackboneJobError(RuntimeError):
    """The Ray Train job ended without a usable checkpoint."""


def load_checkpoint_state(checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    """The state dict (``model``, ``optimizer``, ``epoch``, ``metrics``, ``config``,
    ``model_spec``) saved in a checkpoint of this job, loaded onto the CPU."""
    with checkpoint.as_directory() as d:
        path = os.path.join(d, STATE_FILE)
        if not os.path.exists(path):
            raise BackboneJobError(f"checkpoint {checkpoint.path} has no {STATE_FILE}")
        return torch.load(path, map_location="cpu", weights_only=False)


def _report_to_ray(extra: dict[str, Any]) -> Callable[[dict[str, float], dict | None], None]:
    """A ``report`` callback for :func:`train_backbone`: every rank reports its metrics; the
    rank holding a state (rank 0) attaches it as a checkpoint."""

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save({**state, **extra}, os.path.join(d, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    return report


def _train_worker(config: dict[str, Any]) -> None:
    """Per-worker entry point (module level so that it pickles by reference)."""
    ctx = ray.train.get_context()
    spec: ModelSpec = config["model_spec"]
    cfg: BackboneTrainConfig = config["cfg"]
    train: ImageSplit = ray.get(config["train"])
    val: ImageSplit | None = ray.get(config["val"]) if config["val"] is not None else None
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = ray.train.torch.prepare_model(spec.build())
    plugins = config["plugins_factory"]() if config["plugins_factory"] is not None else Plugins()
    checkpoint = ray.train.get_checkpoint()
    start_state = load_checkpoint_state(checkpoint) if checkpoint is not None else None
    train_backbone(
        model, train, val, cfg, plugins,
        rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
        report=_report_to_ray({"model_spec": spec.as_dict()}),
        start_state=start_state, device=ray.train.torch.get_device(),
        decode=config["decode"],
    )


def run_backbone_job(
    model_spec: ModelSpec,
    train: ImageSplit,
    val: ImageSplit | None,
    cfg: BackboneTrainConfig,
    plugins_factory: Callable[[], Plugins] | None,
    storage_path: str,
    *,
    run_name: str,
    storage_filesystem: pyarrow.fs.FileSystem | None = None,
    max_failures: int = 0,
    resources_per_worker: dict[str, float] | None = None,
    decode: Callable[[str], np.ndarray] | None = None,
    keep_checkpoints: int = 2,
    callbacks: Sequence[Any] = (),
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train a backbone on ``cfg.num_workers`` Ray Train workers; returns
    ``(state_dict, metrics)``: the model weights from the last checkpoint (load them into
    ``model_spec.build()``) and rank 0's metrics of the last epoch.

    ``plugins_factory`` is called on each worker to build the method's :class:`Plugins`
    (plug-ins hold closures and tensors, so they are built where they run; the factory must
    pickle, e.g. a module-level function or a ``functools.partial``). ``storage_path`` (an
    absolute local path shared by all nodes, or ``s3://...``; without a scheme when
    ``storage_filesystem`` is given) holds the checkpoints under ``run_name``. See the
    module docstring for ``resources_per_worker`` inside Tune trials. ``callbacks`` are
    ``ray.train.UserCallback`` objects (e.g. Tune's ``TuneReportCallback``).
    """
    if model_spec.arch != cfg.arch:
        raise ValueError(f"model_spec.arch={model_spec.arch!r} but cfg.arch={cfg.arch!r}")
    if not run_name or "/" in run_name:
        raise ValueError(f"run_name must be a non-empty name without '/', got {run_name!r}")
    if max_failures < -1:
        raise ValueError(f"max_failures must be >= -1 (-1: retry forever), got {max_failures}")
    if keep_checkpoints < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
    trainer = ray.train.torch.TorchTrainer(
        _train_worker,
        train_loop_config={
            "model_spec": model_spec,
            "cfg": cfg,
            "train": ray.put(train),
            "val": ray.put(val) if val is not None else None,
            "plugins_factory": plugins_factory,
            "decode": decode,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
            resources_per_worker=resources_per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=list(callbacks),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise BackboneJobError(
            f"Ray Train run {run_name!r} finished without a checkpoint under {storage_path}"
        )
    state = load_checkpoint_state(result.checkpoint)
    metrics = dict(result.metrics) if result.metrics else dict(state["metrics"])
    metrics["plugin_records"] = state.get("plugin_records", {})
    return state["model"], metrics
