"""Full mode: the backbone trained on images with a long-tail method (``mode=full``).

Head mode trains a classifier on the cached features of a CE-trained backbone; full mode
trains the whole backbone with the method, as the papers do. Every method enters the one
backbone loop (:func:`explore.backbone.loop.train_backbone`) only through
:class:`~explore.backbone.loop.TrainHooks`, built here from the SAME pure functions the
head-mode trainers use (``explore/methods/*``):

* **SWRM / DySWRM** — the paper trains with LDAM-DRW's schedule: plain CE first, the
  method's loss deferred to the last epochs. ``loss`` is CE before ``drw_start`` and
  eq. (4) (:func:`~explore.methods.swrm.swrm_loss`) from it on. SWRM's t-SNE coordinates
  come from the class prototypes of the sweep's CE-trained backbone (its cached train
  features), seeded per repeat as in head mode. DySWRM's similarity vector is a hook
  parameter, optimised with the model.
* **Neighbor silencing** — the auxiliary IMAGES join the training set with labels
  L..L+K−1 (the backbone's classifier has L+K outputs); ``sample_indices`` keeps every
  target sample and at most ``aux_per_class_cap`` images of each auxiliary class per
  epoch (:func:`~explore.methods.neighbor_silencing.sample_aux_indices`); ``loss`` is
  :func:`~explore.methods.neighbor_silencing.ns_loss`. Which auxiliary classes join and
  whose neighbours they are is head mode's own choice
  (:func:`explore.training.ns_fit.build_ns_problem` on the CE backbone's features: a
  neighbour map, or text / prototype similarity with the paper's 1 : ⌈N_h/N_m⌉ :
  ⌈N_h/N_t⌉ ratio). The auxiliary logits are dropped at evaluation.
* **LFM** — stage 1: image-level mixup (``mix``) with text-guided partners (``p(j|i)``
  at temperature τ) and the label shift α, soft-label CE on the backbone's own linear
  classifier. Stage 2: the cosine-classifier projection ``W_I`` trained on the stage-1
  backbone's features — the head-mode LFM trainer of the registry, unchanged.

One Ray Train run per (trial, seed) with a stable name (``full-<trial>-seed<s>``), a
checkpoint every epoch (:func:`~explore.backbone.ray_job.run_backbone_job`), so a retried
trial resumes its seed where it stopped; a finished seed's result is stored, so a retry
never retrains it. Each seed is evaluated at its last epoch (the Train run keeps the
latest checkpoints, not the best; ``best_epoch`` = the number of epochs).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from explore.backbone.loop import BackboneTrainConfig, TrainHooks
from explore.backbone.models import Preprocess, load_batch
from explore.data.types import ImageSplit, LongTailDataset
from explore.evaluation import evaluate_logits
from explore.methods.lfm import (
    LFMParams,
    mix,
    pair_probabilities,
    sample_lambda,
    soft_cross_entropy,
)
from explore.methods.neighbor_silencing import NSParams, ns_loss, sample_aux_indices
from explore.methods.swrm import (
    DySWRMParams,
    DySWRMSimilarity,
    SWRMParams,
    effective_perplexity,
    initial_similarity,
    prototypes,
    swrm_loss,
    swrm_terms,
    tsne_coordinates,
    tsne_learning_rate,
)
from explore.splits import SplitThresholds
from explore.training.outcome import SeedResult

if TYPE_CHECKING:
    from explore.store.feature_store import FeatureSet

__all__ = [
    "FullModeConfig",
    "FullModeError",
    "dyswrm_hooks",
    "full_method_kind",
    "lfm_hooks",
    "ns_hooks",
    "ns_training_split",
    "run_full_seeds",
    "swrm_hooks",
]

log = logging.getLogger("explore")

DRW_FRACTION = 0.8
"""Default start of SWRM's deferred loss, as a fraction of the epochs: LDAM-DRW (and the
SWRM paper after it) switches at epoch 160 of 200."""


class FullModeError(ValueError):
    """A full-mode setting or method that cannot run; the message says what to change."""


@dataclass(frozen=True)
class FullModeConfig:
    """Settings of full mode beyond the ``backbone`` group (the sweep's ``full:`` block)."""

    drw_start: int | None = None
    """SWRM/DySWRM: the 0-based epoch from which the method's loss replaces CE; None =
    ``floor(0.8 · epochs)`` (LDAM-DRW's 160 of 200). 0 uses the method's loss throughout."""

    def __post_init__(self) -> None:
        if self.drw_start is not None and (
            isinstance(self.drw_start, bool) or not isinstance(self.drw_start, int) or self.drw_start < 0
        ):
            raise FullModeError(f"full.drw_start must be an integer >= 0 or null, got {self.drw_start!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> FullModeConfig:
        values = dict(values or {})
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise FullModeError(f"full: unknown setting(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        return cls(**values)

    def method_start(self, epochs: int) -> int:
        """The epoch SWRM's loss starts at, checked against ``epochs``."""
        start = math.floor(DRW_FRACTION * epochs) if self.drw_start is None else self.drw_start
        if not 0 <= start < epochs:
            raise FullModeError(
                f"full.drw_start={start} must be below backbone.epochs={epochs} (the method "
                "loss needs at least one epoch)"
            )
        return start


def full_method_kind(params: Any) -> str:
    """Which full-mode recipe a method's params select: swrm | dyswrm | ns | lfm."""
    for kind, cls in (("swrm", SWRMParams), ("dyswrm", DySWRMParams), ("ns", NSParams), ("lfm", LFMParams)):
        if isinstance(params, cls):
            return kind
    raise FullModeError(
        f"mode=full is not available for {type(params).__name__} (full mode covers swrm, dyswrm, "
        "neighbor_silencing and lfm); use mode=head"
    )


# ---------------------------------------------------------------------------------------------
# Hooks (module-level factories: they are pickled by reference into the Train workers)
# ---------------------------------------------------------------------------------------------


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="none")


def swrm_hooks(weights: np.ndarray, margins: np.ndarray, start_epoch: int) -> TrainHooks:
    """SWRM with a deferred loss: CE before ``start_epoch``, eq. (4) with the fixed SWR
    ``weights`` and SWM ``margins`` from it on."""
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    m = torch.as_tensor(np.asarray(margins), dtype=torch.float32)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch < start_epoch:
            return _cross_entropy(logits, targets)
        return swrm_loss(logits.float(), targets, w.to(logits.device), m.to(logits.device))

    return TrainHooks(loss=loss)


def dyswrm_hooks(counts: np.ndarray, init_coords: np.ndarray, params: DySWRMParams,
                 start_epoch: int, use_gpu: bool = False) -> TrainHooks:
    """DySWRM: as :func:`swrm_hooks`, with weights and margins recomputed every batch from a
    learnable similarity vector (a hook parameter, so it is optimised, all-reduced and
    checkpointed with the model). With ``use_gpu`` the vector lives on this worker's GPU
    (Ray Train has set the current device): NCCL all-reduces only CUDA tensors."""
    device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
    similarity = DySWRMSimilarity(init_coords).to(device)
    n = torch.as_tensor(np.asarray(counts), dtype=torch.float32, device=device)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch < start_epoch:
            return _cross_entropy(logits, targets)
        w, m = swrm_terms(n, similarity.standardised(), params)  # margins keep their gradient in s
        return swrm_loss(logits.float(), targets, w.to(logits.device), m.to(logits.device))

    return TrainHooks(loss=loss, parameters=(similarity.s,))


def ns_hooks(counts: np.ndarray, neighbor: np.ndarray, lambda_s: float, num_targets: int,
             aux_cap: int) -> TrainHooks:
    """Neighbor silencing on targets + auxiliary images (labels ≥ ``num_targets`` are
    auxiliary): every target sample and ≤ ``aux_cap`` images per auxiliary class each
    epoch, loss eq. (4) with the epoch's counts (auxiliary ones capped)."""
    n = torch.as_tensor(np.asarray(counts), dtype=torch.float32)
    nb = torch.as_tensor(np.asarray(neighbor), dtype=torch.bool)

    def sample_indices(labels: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
        labels = np.asarray(labels)
        aux = np.flatnonzero(labels >= num_targets)
        chosen = aux[sample_aux_indices(labels[aux], aux_cap, rng)]
        return np.concatenate([np.flatnonzero(labels < num_targets), chosen])

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return ns_loss(logits.float(), targets, n.to(logits.device), nb.to(logits.device), lambda_s)

    return TrainHooks(loss=loss, sample_indices=sample_indices)


def draw_partners(y_i: np.ndarray, labels: np.ndarray, pair_probs: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """LFM's partner of each sample: ``y_j ~ p(·|y_i)``, then a uniform training sample of
    class y_j (Algorithm 1, given the batch's i). Returns indices into ``labels``."""
    C = pair_probs.shape[0]
    cdf = np.cumsum(pair_probs, axis=1)
    cdf[:, -1] = 1.0
    y_j = np.minimum((rng.random(len(y_i))[:, None] >= cdf[y_i]).sum(axis=1), C - 1)
    by_class = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=C)
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    offset = np.minimum(np.floor(rng.random(len(y_i)) * counts[y_j]).astype(np.int64), counts[y_j] - 1)
    return by_class[start[y_j] + offset]


def lfm_hooks(train: ImageSplit, pair_probs: np.ndarray, params: LFMParams,
              preprocess: Preprocess) -> TrainHooks:
    """LFM stage 1: each batch sample i is mixed with a text-guided partner j at
    ``λ_x ~ Beta(a, a)`` (one per batch or per sample), targets ``λ_y e_i + (1−λ_y) e_j``
    with the label shift α; soft-label CE. ``train`` is the training split the loop runs
    on (partners are read from it)."""
    labels = np.asarray(train.labels, dtype=np.int64)
    C = pair_probs.shape[0]
    counts = torch.as_tensor(np.bincount(labels, minlength=C), dtype=torch.float64)
    if int(counts.min()) == 0:
        raise FullModeError("LFM needs every class in the training split")

    def mix_batch(x: torch.Tensor, y: torch.Tensor, epoch: int,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y_i = y.cpu().numpy()
        j = draw_partners(y_i, labels, pair_probs, rng)
        x_j = load_batch(train, j, preprocess).to(x.device)
        lam = sample_lambda(params.beta_param, 1 if params.lambda_per_batch else len(y_i), rng)
        lam_x: float | torch.Tensor = float(lam[0]) if params.lambda_per_batch else torch.as_tensor(lam)
        y_j = torch.as_tensor(labels[j], device=x.device)
        return mix(x, x_j, y, y_j, lam_x, counts.to(x.device), params.alpha, C)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if targets.ndim == 1:
            return _cross_entropy(logits, targets)
        return soft_cross_entropy(logits.float(), targets.float())

    return TrainHooks(loss=loss, mix=mix_batch)


def ns_training_split(dataset: LongTailDataset, aux_classes: Sequence[str]) -> ImageSplit:
    """Target train images, then the images of the chosen auxiliary classes, class
    ``aux_classes[k]`` relabelled L+k (the layout of the head-mode label space)."""
    if dataset.aux is None or dataset.train.images is None or dataset.aux.images is None:
        raise FullModeError("neighbor silencing in full mode needs in-memory target and auxiliary images")
    L = dataset.num_classes
    relabel = np.full(len(dataset.aux_classes), -1, dtype=np.int64)
    for k, name in enumerate(aux_classes):
        relabel[dataset.aux_classes.index(name)] = L + k
    aux_labels = relabel[dataset.aux.labels]
    keep = aux_labels >= 0
    return ImageSplit(
        labels=np.concatenate([dataset.train.labels, aux_labels[keep]]),
        images=np.concatenate([dataset.train.images, dataset.aux.images[keep]]),
    )


# ---------------------------------------------------------------------------------------------
# One configuration: every seed a Ray Train run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SeedPlan:
    train: ImageSplit
    num_outputs: int
    hooks_factory: Callable[[], TrainHooks]


def _plan(kind: str, params: Any, dataset: LongTailDataset, features: FeatureSet,
          fcfg: FullModeConfig, bcfg: BackboneTrainConfig, thresholds: SplitThresholds,
          seed: int, in_channels: int) -> _SeedPlan:
    """What one seed trains on and with which hooks (numbers computed here, on the trial
    driver; the workers only wrap them in tensors)."""
    from explore.backbone.models import default_preprocess

    L = dataset.num_classes
    counts = dataset.class_counts().astype(np.float64)
    resolved = getattr(params, "resolved", {})
    if kind in ("swrm", "dyswrm"):
        if params.W > L:
            raise FullModeError(f"W={params.W} must be <= the number of classes C={L}")
        start = fcfg.method_start(bcfg.epochs)
        resolved.update(drw_start=start, prototypes="class means of the CE backbone's train features")
        protos = prototypes(features.train.features.astype(np.float64), features.train.labels, L)
        perplexity = effective_perplexity(getattr(params, "tsne_perplexity", 30.0), L)
        lr = getattr(params, "tsne_learning_rate", None) or tsne_learning_rate(L)
        if kind == "swrm":
            resolved.update(tsne_perplexity=perplexity, tsne_learning_rate=lr)
            weights, margins = swrm_terms(counts, tsne_coordinates(protos, seed, perplexity, lr), params)
            factory = functools.partial(swrm_hooks, np.asarray(weights), np.asarray(margins), start)
        else:
            coords = tsne_coordinates(protos, seed, perplexity, lr) if params.init == "tsne" else None
            init = initial_similarity(L, params.init, seed, coords)
            plain = DySWRMParams(W=params.W, beta=params.beta, init=params.init,
                                 reweight=params.reweight, margin=params.margin)
            factory = functools.partial(dyswrm_hooks, counts, init, plain, start, bcfg.use_gpu)
        return _SeedPlan(dataset.train, L, factory)
    if kind == "ns":
        from explore.training.ns_fit import build_ns_problem
        from explore.training.registry import TrialInputs

        if dataset.aux is None or "aux" not in features.splits:
            raise FullModeError(
                "neighbor silencing needs auxiliary images: use an open-set dataset, e.g. "
                "dataset=fashion_mnist_lt_open"
            )
        # The head-mode label space, found on the CE features (same neighbours, same counts).
        problem = build_ns_problem(TrialInputs(features, None, thresholds), params)
        train = ns_training_split(dataset, problem.aux_classes)
        image_counts = np.bincount(train.labels, minlength=problem.num_classes)[L:]
        if not np.array_equal(np.minimum(image_counts, params.aux_per_class_cap), problem.counts[L:]):
            raise FullModeError("the auxiliary images do not match the cached aux features; re-extract")
        factory = functools.partial(ns_hooks, problem.counts, problem.neighbor, params.lambda_s, L,
                                    params.aux_per_class_cap)
        return _SeedPlan(train, problem.num_classes, factory)
    if kind == "lfm":
        from explore.training.lfm_fit import class_text_features

        text, encoder = class_text_features(dataset.classes, params.prompt)
        resolved["text_encoder"] = encoder
        probs = np.asarray(pair_probabilities(np.asarray(text, np.float64), params.tau))
        pre = default_preprocess(bcfg.arch, in_channels)
        factory = functools.partial(lfm_hooks, dataset.train, probs, params, pre)
        return _SeedPlan(dataset.train, L, factory)
    raise FullModeError(f"unknown full-mode recipe {kind!r}")


def _logits(model: torch.nn.Module, split: ImageSplit, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([
            model(load_batch(split, np.arange(s, min(s + batch_size, len(split))), model.preprocess)).float()
            for s in range(0, len(split), batch_size)
        ])


def run_full_seeds(
    params: Any,
    seeds: Sequence[int],
    dataset: LongTailDataset,
    features: FeatureSet,
    bcfg: BackboneTrainConfig,
    fcfg: FullModeConfig,
    thresholds: SplitThresholds,
    *,
    storage_path: str,
    run_prefix: str,
    storage_filesystem: Any = None,
    max_failures: int = 0,
    resources_per_worker: dict[str, float] | None = None,
    callbacks_for_seed: Callable[[int], Sequence[Any]] = lambda seed: (),
    stage2: Callable[[FeatureSet, int], SeedResult] | None = None,
    done: Callable[[int], SeedResult | None] = lambda seed: None,
    save: Callable[[SeedResult], None] = lambda result: None,
) -> list[SeedResult]:
    """Train the backbone with the method once per seed (Ray Train run
    ``<run_prefix>-seed<s>``) and evaluate it on val/test (auxiliary logits dropped).

    ``features``: the sweep's CE-backbone features (SWRM prototypes, NS prototype
    neighbours). ``stage2(stage1_features, seed)``: LFM's head on the stage-1 features.
    ``done``/``save``: a stored result of a seed (skip it) / store one when finished.
    """
    from explore.backbone.extract import extract_features
    from explore.backbone.models import ModelSpec
    from explore.backbone.ray_job import run_backbone_job
    from explore.store.feature_store import FeatureSet, FeatureSplit

    kind = full_method_kind(params)
    if kind == "lfm" and stage2 is None:
        raise FullModeError("LFM in full mode needs its stage-2 head trainer (stage2=...)")
    L = dataset.num_classes
    in_channels = 1 if dataset.train.images is not None and dataset.train.images.ndim == 3 else 3
    split_of_class = thresholds.split_of_class(dataset.class_counts())
    results = []
    for seed in seeds:
        previous = done(seed)
        if previous is not None:
            results.append(previous)
            continue
        start = time.perf_counter()
        plan = _plan(kind, params, dataset, features, fcfg, bcfg, thresholds, seed, in_channels)
        spec = ModelSpec(bcfg.arch, plan.num_outputs, in_channels)
        state, _ = run_backbone_job(
            spec, plan.train, dataset.val if len(dataset.val) else None,
            dataclasses.replace(bcfg, seed=seed), plan.hooks_factory, storage_path,
            run_name=f"{run_prefix}-seed{seed}", storage_filesystem=storage_filesystem,
            max_failures=max_failures, resources_per_worker=resources_per_worker,
            callbacks=callbacks_for_seed(seed),
        )
        model = spec.build()
        model.load_state_dict(state)
        if kind == "lfm":
            assert stage2 is not None
            splits = {name: FeatureSplit(extract_features(model, getattr(dataset, name)),
                                         getattr(dataset, name).labels)
                      for name in ("train", "val", "test")}
            stage1 = FeatureSet(splits, tuple(dataset.classes), {"stage": "lfm-1", "seed": seed})
            result = stage2(stage1, seed)
            result.train_seconds = time.perf_counter() - start
        else:
            test = evaluate_logits(_logits(model, dataset.test)[:, :L], dataset.test.labels, split_of_class)
            val = (evaluate_logits(_logits(model, dataset.val)[:, :L], dataset.val.labels, split_of_class)
                   if len(dataset.val) else {})
            result = SeedResult(seed=seed, best_epoch=bcfg.epochs, test=test, val=val,
                                train_seconds=time.perf_counter() - start)
        log.info("full %s seed %d: test top-1 %.3f (%.0f s)", kind, seed, result.test["acc_overall"],
                 result.train_seconds)
        save(result)
        results.append(result)
    return results
