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

GPUs: a ``"GPU"`` entry in ``resources_per_worker`` (fractional allowed) places each worker by
GPU; which device it trains on is decided on the worker (:func:`worker_device`: CUDA only
with ``cfg.use_gpu`` and CUDA present), and the backend by :func:`torch_backend`, so workers
on a node whose GPUs Ray only counts (``ray start --num-gpus=2`` without CUDA) train on the
CPU over gloo. Each checkpoint records the GPU ids of every worker (``worker_gpu_ids``, rank
order), returned in the metrics.

Progress: with ``progress=`` the caller sees rank 0's epochs while ``fit`` runs. Train V2
runs its controller (and any ``UserCallback``) in an actor, and the driver may not print
worker logs (``log_to_driver=False``), so rank 0 sends small messages to a zero-CPU
``_ProgressSink`` actor, which a driver thread drains every half second: ``{"kind":
"batch", "epoch", "batch", "batches"}`` at most once a second and ``{"kind": "epoch",
...metrics}`` after every epoch (``epoch`` 0-based).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import torch

from explore.backbone.loop import train_backbone
from explore.backbone.models import ModelSpec
from explore.backbone.train_config import BackboneTrainConfig
from explore.data.types import ImageSplit
from explore.plugins import Plugins

__all__ = ["BackboneJobError", "STATE_FILE", "load_checkpoint_state", "run_backbone_job",
           "torch_backend", "worker_device"]

STATE_FILE = "state.pt"
"""Name of the ``torch.save``-d state inside every checkpoint directory."""

BATCH_MESSAGE_EVERY_S = 1.0
"""Rank 0 sends a within-epoch progress message at most this often."""

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class _ProgressSink:
    """Holds rank 0's progress messages until the driver takes them (zero CPUs: it must
    never wait for the CPUs the workers hold)."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []

    def put(self, item: dict[str, Any]) -> None:
        self._items.append(item)

    def drain(self) -> list[dict[str, Any]]:
        items, self._items = self._items, []
        return items


def _batch_sender(sink: Any) -> Callable[[int, int, int], None]:
    """Within-epoch progress for the sink, rate-limited (the last step of an epoch is
    covered by the epoch message)."""
    last = [-float("inf")]

    def on_batch(epoch: int, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] >= BATCH_MESSAGE_EVERY_S:
            last[0] = now
            sink.put.remote({"kind": "batch", "epoch": epoch, "batch": done, "batches": total})

    return on_batch


class _Drain:
    """A driver thread that hands the sink's messages to ``progress`` while ``fit`` runs."""

    def __init__(self, sink: Any, progress: Callable[[dict[str, Any]], None]) -> None:
        self.sink, self.progress = sink, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="train-progress")
        self._thread.start()

    def _deliver(self) -> None:
        for item in ray.get(self.sink.drain.remote(), timeout=30):
            try:
                self.progress(item)
            except Exception as exc:  # noqa: BLE001 - a display error must not stop training
                log.warning("progress display failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._deliver()
            except Exception:  # noqa: BLE001 - the sink is gone or slow: try again later
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=35)
        try:
            self._deliver()  # the last epoch's message
        except Exception:  # noqa: BLE001
            pass
        ray.kill(self.sink)


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


def _report_to_ray(extra: dict[str, Any],
                   sink: Any = None) -> Callable[[dict[str, float], dict | None], None]:
    """A ``report`` callback for :func:`train_backbone`: every rank reports its metrics; the
    rank holding a state (rank 0) attaches it as a checkpoint; ``sink`` (rank 0 only) gets
    the epoch's metrics for the driver's progress display."""

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if sink is not None:
            sink.put.remote({"kind": "epoch", **metrics})
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save({**state, **extra}, os.path.join(d, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    return report


def torch_backend(use_gpu: bool) -> str:
    """The process-group backend: nccl only when the backbone trains on CUDA and this torch
    has NCCL, else gloo. Ray Train would pick nccl whenever the workers request GPUs, which
    fails on a CPU-only torch (docs/operations.md#gpus-in-ray-train)."""
    import torch.distributed as dist

    return "nccl" if use_gpu and dist.is_available() and dist.is_nccl_available() else "gloo"


def worker_device(use_gpu: bool) -> torch.device:
    """This Train worker's device: its CUDA device when ``use_gpu`` and CUDA is available
    here, else the CPU. A worker holding a GPU Ray merely counts (``ray start --num-gpus``
    without CUDA, or ``backbone.use_gpu=false``) trains on the CPU;
    ``ray.train.torch.get_device()`` alone would name ``cuda:N`` whenever GPU ids are
    assigned (docs/operations.md#gpus-in-ray-train)."""
    if use_gpu and torch.cuda.is_available():
        return ray.train.torch.get_device()
    if use_gpu:
        log.warning("backbone.use_gpu=true but CUDA is not available on this worker "
                    "(GPU ids %s): training on the CPU", ray.get_gpu_ids())
    return torch.device("cpu")


def _worker_gpu_ids(world_size: int) -> list[str]:
    """The GPU ids Ray gave each worker, in rank order (comma-separated per worker, ``""``
    for none); every rank takes part in the gather."""
    import torch.distributed as dist

    mine = ",".join(str(g) for g in ray.get_gpu_ids())
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [mine]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, mine)
    return [str(g) for g in gathered]


def _train_worker(config: dict[str, Any]) -> None:
    """Per-worker entry point (module level so that it pickles by reference)."""
    ctx = ray.train.get_context()
    spec: ModelSpec = config["model_spec"]
    cfg: BackboneTrainConfig = config["cfg"]
    train: ImageSplit = ray.get(config["train"])
    val: ImageSplit | None = ray.get(config["val"]) if config["val"] is not None else None
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    device = worker_device(cfg.use_gpu)
    model = ray.train.torch.prepare_model(spec.build(), move_to_device=device)
    plugins = config["plugins_factory"]() if config["plugins_factory"] is not None else Plugins()
    checkpoint = ray.train.get_checkpoint()
    start_state = load_checkpoint_state(checkpoint) if checkpoint is not None else None
    rank = ctx.get_world_rank()
    sink = config.get("progress_sink") if rank == 0 else None
    extra = {"model_spec": spec.as_dict(), "worker_gpu_ids": _worker_gpu_ids(ctx.get_world_size())}
    train_backbone(
        model, train, val, cfg, plugins,
        rank=rank, world_size=ctx.get_world_size(),
        report=_report_to_ray(extra, sink),
        start_state=start_state, device=device,
        decode=config["decode"],
        on_batch=_batch_sender(sink) if sink is not None else None,
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
    progress: Callable[[dict[str, Any]], None] | None = None,
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
    ``ray.train.UserCallback`` objects (e.g. Tune's ``TuneReportCallback``). ``progress`` is
    called on this process (from a thread) with rank 0's progress messages, see the module
    docstring.
    """
    if model_spec.arch != cfg.arch:
        raise ValueError(f"model_spec.arch={model_spec.arch!r} but cfg.arch={cfg.arch!r}")
    if not run_name or "/" in run_name:
        raise ValueError(f"run_name must be a non-empty name without '/', got {run_name!r}")
    if max_failures < -1:
        raise ValueError(f"max_failures must be >= -1 (-1: retry forever), got {max_failures}")
    if keep_checkpoints < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
    sink = _ProgressSink.remote() if progress is not None else None  # type: ignore[attr-defined]
    gpus = (resources_per_worker or {}).get("GPU", 1.0 if cfg.use_gpu else 0.0)
    trainer = ray.train.torch.TorchTrainer(
        _train_worker,
        train_loop_config={
            "model_spec": model_spec,
            "cfg": cfg,
            "train": ray.put(train),
            "val": ray.put(val) if val is not None else None,
            "plugins_factory": plugins_factory,
            "decode": decode,
            "progress_sink": sink,
        },
        # Ray refuses GPU in resources_per_worker without use_gpu (and use_gpu with GPU 0).
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=gpus > 0,
            resources_per_worker=resources_per_worker,
        ),
        torch_config=ray.train.torch.TorchConfig(backend=torch_backend(cfg.use_gpu)),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=list(callbacks),
        ),
    )
    drain = _Drain(sink, progress) if sink is not None and progress is not None else None
    try:
        result = trainer.fit()
    finally:
        if drain is not None:
            drain.stop()
    if result.checkpoint is None:
        raise BackboneJobError(
            f"Ray Train run {run_name!r} finished without a checkpoint under {storage_path}"
        )
    state = load_checkpoint_state(result.checkpoint)
    metrics = dict(result.metrics) if result.metrics else dict(state["metrics"])
    metrics["plugin_records"] = state.get("plugin_records", {})
    metrics["worker_gpu_ids"] = list(state.get("worker_gpu_ids", []))
    return state["model"], metrics
