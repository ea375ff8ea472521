"""Everything a sweep needs before its first trial, each piece cached in the store.

data → backbone (a Ray Train job) → features (Arrow shards) → base model (cRT, …).
Each step is keyed by everything that determines it, so a second sweep on the same
data re-trains and re-extracts nothing, and concurrent sweeps extract once (the
store's lock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.config import SweepConfig
from explore.evaluation import evaluate_logits
from explore.recipes import Recipe
from explore.recipes.bases import train_base
from explore.splits import SplitThresholds
from explore.store import (
    CorruptShardError,
    FeatureSet,
    FeatureStore,
    feature_key,
)
from explore.training.inputs import DataFacts, TrialInputs, splits_of
from explore.training.outcome import SeedResult
from explore.training.posthoc import LinearClassifier

if TYPE_CHECKING:
    from explore.backbone.loop import BackboneTrainConfig
    from explore.backbone.models import ModelSpec
    from explore.data.types import LongTailDataset

log = logging.getLogger("explore")

PIPELINE_VERSION = 1
"""Bumped when feature extraction or base training changes meaning (part of every key)."""


@dataclass(frozen=True)
class Reference:
    """The sweep's reference rows: one result per seed (the same seeds as every
    configuration), and what they are."""

    name: str
    """The base model's name (``crt``, ``ce``, ``given``, ...)."""
    results: list[SeedResult]
    keys: list[str | None]
    """The base model's cache key per seed (None: trained by the recipe, not cached)."""
    deterministic: bool
    """The same model on every seed (a given classifier, or the one base a post-hoc
    method corrects)."""


@dataclass(frozen=True)
class Prepared:
    """Keys of the cached inputs every trial of a sweep loads, and the reference rows."""

    feature_key: str
    dataset_name: str
    classes: tuple[str, ...]
    facts: DataFacts
    reference: Reference
    base_key: str | None = None
    """The base model a post-hoc method corrects (None for training-time methods)."""


def prepare(cfg: SweepConfig, recipe: Recipe, store: FeatureStore) -> Prepared:
    """Features, then the base model: for a post-hoc method the one model it corrects
    (the reference on every seed); for a training-time method the base trained on each
    of the sweep's seeds (paired with the configurations' seeds)."""
    if cfg.features:
        fkey, dataset_name, fset, given = _imported_features(cfg.features, store)
    else:
        fkey, dataset_name, fset = _backbone_features(cfg, store)
        given = None
    counts = np.bincount(fset.train.labels, minlength=fset.num_classes)
    facts = DataFacts(fset.num_classes, counts, cfg.splits, tuple(fset.meta.get("aux_classes", ())))
    if recipe.posthoc:
        name, key, classifier = _base_model(cfg, store, fset, fkey, given, cfg.seed)
        one = evaluate_classifier(classifier, fset, cfg.splits, seed=cfg.seed)
        same = [dataclasses.replace(one, seed=s) for s in cfg.seeds]
        reference = Reference(name, same, [key] * len(same), deterministic=True)
        return Prepared(fkey, dataset_name, tuple(fset.classes), facts, reference, key)
    if recipe.reference_name is not None:  # the method's own reference, on the same seeds
        from explore.console import Progress

        log.info("reference: training %s on cached features, %d seeds", recipe.reference_name,
                 len(cfg.seeds))
        params = recipe.reference_params(recipe.params(cfg.method_settings))
        with Progress(f"reference {recipe.reference_name}", tick=True) as bar:
            bar.note(f"{len(cfg.seeds)} seeds")
            fit = recipe.fit_head(TrialInputs(fset, None, cfg.splits, cfg.head), params,
                                  cfg.seeds)
        reference = Reference(recipe.reference_name, fit.results, [None] * len(fit.results),
                              deterministic=False)
        return Prepared(fkey, dataset_name, tuple(fset.classes), facts, reference)
    from explore.console import Progress

    results: list[SeedResult] = []
    keys: list[str | None] = []
    with Progress(f"base {cfg.base.name}", len(cfg.seeds), "seed", tick=True) as bar:
        for seed in cfg.seeds:  # a given classifier is not a training-time method's reference
            name, key, classifier = _base_model(cfg, store, fset, fkey, None, seed, spinner=False)
            results.append(evaluate_classifier(classifier, fset, cfg.splits, seed=seed))
            keys.append(key)
            bar.update()
    reference = Reference(name, results, keys, deterministic=False)
    return Prepared(fkey, dataset_name, tuple(fset.classes), facts, reference)


def evaluate_classifier(
    classifier: LinearClassifier, fset: FeatureSet, thresholds: SplitThresholds, seed: int
) -> SeedResult:
    counts = np.bincount(fset.train.labels, minlength=fset.num_classes)
    split_of_class = thresholds.split_of_class(counts)
    test = evaluate_logits(classifier.logits(fset.test.features), fset.test.labels, split_of_class)
    val = {}
    if "val" in fset.splits and len(fset.val.labels):
        val = evaluate_logits(classifier.logits(fset.val.features), fset.val.labels, split_of_class)
    return SeedResult(seed=seed, best_epoch=0, test=test, val=val)


# ---------------------------------------------------------------------------------------------
# features


def _imported_features(
    uri: str, store: FeatureStore
) -> tuple[str, str, FeatureSet, LinearClassifier | None]:
    from explore.console import Progress
    from explore.store.imported import import_feature_dir, imported_feature_key

    holder: dict[str, Any] = {}

    def build() -> FeatureSet:
        bar.note(f"reading and checking {uri}")
        fset, classifier = import_feature_dir(uri)
        holder["classifier"] = classifier
        bar.note(f"writing {sum(len(s.labels) for s in fset.splits.values())} samples to the "
                 "store")
        return fset

    with Progress("features: import", tick=True) as bar:
        bar.note(f"digest of {uri}")
        key = imported_feature_key(uri)
        bar.note("reading the store")
        fset = store.get_or_build(key, build)  # verified; rebuilt when missing or corrupt
        bar.note(f"{sum(len(s.labels) for s in fset.splits.values())} samples")
    # On a cache hit the classifier (part of the key) is read from the directory again.
    c = holder["classifier"] if holder else import_feature_dir(uri)[1]
    given = (None if c is None else
             LinearClassifier(np.asarray(c.weight, np.float32), np.asarray(c.bias, np.float32)))
    log.info("features: imported %s (key %s)", uri, key)
    return key, "imported", fset, given


def _backbone_features(cfg: SweepConfig, store: FeatureStore) -> tuple[str, str, FeatureSet]:
    """Train (or find) the backbone, then extract (or find) its features. A cached entry
    whose shards fail their checksums is deleted and extracted again, never used."""
    from explore.data.registry import load_dataset

    assert cfg.dataset is not None
    dataset = load_dataset(cfg.dataset)
    backbone = _backbone_run(cfg, dataset)
    backbone_key, bcfg = backbone.key, cfg.backbone
    if store.has_json(backbone_key, "backbone"):
        record = store.get_json(backbone_key, "backbone")
        if store.has(record["feature_key"]):
            try:
                fset = store.read(record["feature_key"])
                log.info("features: cache hit %s (backbone %s)", record["feature_key"], bcfg.arch)
                return record["feature_key"], dataset.name, fset
            except CorruptShardError as exc:
                log.warning("features: %s; extracting them again", exc)
                store.delete(record["feature_key"])
    state = _trained_backbone(cfg, store, backbone)
    fkey, fset = _extract(cfg, store, backbone, state)
    return fkey, dataset.name, fset


@dataclass(frozen=True)
class BackboneRun:
    """One backbone of the pipeline: its cache key, architecture, training recipe and data."""

    key: str
    spec: ModelSpec
    train: BackboneTrainConfig | None
    dataset: LongTailDataset


def _backbone_run(cfg: SweepConfig, dataset: LongTailDataset) -> BackboneRun:
    from explore.backbone.models import ModelSpec

    bcfg = cfg.backbone
    in_channels = 1 if dataset.train.images is not None and dataset.train.images.ndim == 3 else 3
    spec = ModelSpec(bcfg.arch, dataset.num_classes, in_channels)
    backbone_key = feature_key(
        {"kind": "backbone", "v": PIPELINE_VERSION, "dataset": dataset.params,
         "model": spec.as_dict(), "train": bcfg.as_dict()}
    )
    return BackboneRun(backbone_key, spec, bcfg, dataset)


def _trained_backbone(cfg: SweepConfig, store: FeatureStore, backbone: BackboneRun) -> dict[str, np.ndarray]:
    """The backbone's weights: from the store, or trained as a Ray Train job and stored."""
    backbone_key, spec, bcfg, dataset = backbone.key, backbone.spec, backbone.train, backbone.dataset
    assert bcfg is not None
    if store.has_arrays(backbone_key, "weights"):
        log.info("backbone: cached weights %s", backbone_key)
        return store.get_arrays(backbone_key, "weights")[0]
    from explore.backbone.ray_job import run_backbone_job
    from explore.store.uri import is_s3, resolve

    log.info(
        "backbone: training %s on %d images as a Ray Train job (%d workers, %d epochs)",
        bcfg.arch, len(dataset.train), bcfg.num_workers, bcfg.epochs,
    )
    from explore.console import EpochProgress

    fs, root = resolve(cfg.storage_uri)
    progress = EpochProgress(f"backbone {bcfg.arch}", bcfg.epochs, bcfg.num_workers)
    try:
        state, metrics = run_backbone_job(
            spec, dataset.train, dataset.val if len(dataset.val) else None, bcfg, None,
            f"{root}/ray-train", run_name=f"backbone-{backbone_key}",
            storage_filesystem=fs if is_s3(cfg.storage_uri) else None,
            max_failures=cfg.runner.max_failures,
            decode=_decoder(cfg),
            progress=progress,
        )
    finally:
        progress.close()
    log.info("backbone: done, val top-1 %.3f", float(metrics.get("val_acc", float("nan"))))
    arrays = {name: t.detach().cpu().numpy() for name, t in state.items()}
    store.put_arrays(backbone_key, "weights", arrays, {"arch": bcfg.arch})
    return arrays


def _decoder(cfg: SweepConfig) -> Callable[[str], np.ndarray] | None:
    size = cfg.dataset.image_size if cfg.dataset is not None else None
    if not size:
        return None
    import functools

    from explore.data.list_datasets import load_image

    return functools.partial(load_image, size=size)


def _extract(
    cfg: SweepConfig, store: FeatureStore, backbone: BackboneRun, state: dict[str, np.ndarray]
) -> tuple[str, FeatureSet]:
    """The backbone's features of every split, keyed by its weights' digest: extracted by
    Ray tasks on the cluster's workers, each writing its shards to the store (once; read
    back when already stored)."""
    import torch

    from explore.backbone.extract_job import extract_to_store
    from explore.backbone.models import weights_digest
    from explore.console import Progress

    backbone_key, spec, dataset = backbone.key, backbone.spec, backbone.dataset
    model = spec.build()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    digest = weights_digest(model)
    fkey = feature_key(
        {"kind": "features", "v": PIPELINE_VERSION, "dataset": dataset.params, "arch": spec.arch,
         "weights": digest, "preprocess": spec.resolved_preprocess().as_dict()}
    )
    # An open-set dataset's auxiliary images (never seen in backbone training) go through
    # the same backbone, as split "aux" labelled 0..A−1 by meta["aux_classes"].
    names = ("train", "val", "test") + (("aux",) if dataset.aux is not None else ())
    splits = {name: getattr(dataset, name) for name in names}
    meta: dict[str, Any] = {"dataset": dataset.params, "arch": spec.arch, "weights": digest}
    if dataset.aux is not None:
        meta["aux_classes"] = list(dataset.aux_classes)
    log.info("features: extracting %s for %s", spec.arch, "/".join(names))
    total = sum(len(s) for s in splits.values())
    with Progress("features: extract", total, "img", tick=True) as bar:
        bar.note("/".join(names))
        fset = extract_to_store(store, fkey, splits, spec, state, tuple(dataset.classes), meta,
                                decode=_decoder(cfg), use_gpu=_gpu_if_asked(backbone),
                                progress=bar.update)
    store.put_json(backbone_key, "backbone", {"feature_key": fkey, "weights": digest})
    log.info("features: cached as %s", fkey)
    return fkey, fset


def _gpu_if_asked(backbone: BackboneRun) -> bool | None:
    """Extraction on GPUs when the backbone trained on them, else wherever the cluster has
    them (None: on a GPU when there is one)."""
    return True if backbone.train is not None and backbone.train.use_gpu else None


# ---------------------------------------------------------------------------------------------
# base model


def _base_key(cfg: SweepConfig, fkey: str, seed: int) -> str:
    return feature_key(
        {"kind": "base", "v": PIPELINE_VERSION, "features": fkey, **cfg.base.cache_spec(),
         "seed": seed}
    )


def _base_model(
    cfg: SweepConfig, store: FeatureStore, fset: FeatureSet, fkey: str,
    given: LinearClassifier | None, seed: int, spinner: bool = True,
) -> tuple[str, str, LinearClassifier]:
    """(name, cache key, classifier): a given classifier, or the ``base`` group's model
    trained on the features with ``seed`` (cached by everything it depends on); ``spinner``:
    show the training's elapsed time (off when the caller counts seeds itself)."""
    if given is not None:  # the researcher's own classifier is the base (classifier.npz)
        # Keyed by the classifier's content: a replaced classifier.npz is a new entry.
        digest = hashlib.sha256(np.ascontiguousarray(given.weight).tobytes()
                                + np.ascontiguousarray(given.bias).tobytes()).hexdigest()
        key = feature_key({"kind": "base", "features": fkey, "base": "given", "classifier": digest})
        if not store.has_arrays(key, "classifier"):
            store.put_arrays(key, "classifier", {"weight": given.weight, "bias": given.bias},
                             {"base": "given"})
        return "given", key, given
    spec = cfg.base
    key = _base_key(cfg, fkey, seed)
    if store.has_arrays(key, "classifier"):
        arrays, _ = store.get_arrays(key, "classifier")
        log.info("base: cached %s seed %d (%s)", spec.name, seed, key)
        return spec.name, key, LinearClassifier(arrays["weight"], arrays["bias"])
    from explore.console import Progress

    log.info("base: training %s on cached features, seed %d", spec.name, seed)
    if not spinner:
        classifier = train_base(spec, splits_of(fset), fset.num_classes, seed)
    else:
        with Progress(f"base {spec.name} seed {seed}", tick=True):
            classifier = train_base(spec, splits_of(fset), fset.num_classes, seed)
    store.put_arrays(key, "classifier", {"weight": classifier.weight, "bias": classifier.bias},
                     {"base": spec.name})
    return spec.name, key, classifier


# ---------------------------------------------------------------------------------------------
# dry run


@dataclass(frozen=True)
class Plan:
    """What :func:`prepare` would do, found by reading only (``dry_run=true``)."""

    dataset_name: str
    facts: DataFacts
    samples: dict[str, int]
    """Samples per split."""
    has_val: bool
    reference: str
    """The reference rows' model (``crt``, ``given``, a method's own reference, ...)."""
    steps: list[tuple[str, bool, str]]
    """(step, already cached, what it is) in the order :func:`prepare` runs them."""


def plan(cfg: SweepConfig, recipe: Recipe, store: FeatureStore) -> Plan:
    """Check the data (every check an import or a dataset load makes) and look up which
    steps are cached, training nothing and writing nothing."""
    steps: list[tuple[str, bool, str]] = []
    fkey: str | None
    given = False
    if cfg.features:
        from explore.store.imported import import_feature_dir, imported_feature_key

        key = imported_feature_key(cfg.features)
        fset, classifier = import_feature_dir(cfg.features)
        given = classifier is not None
        fkey = key if store.has(key) else None
        steps.append(("features", fkey is not None, f"import {cfg.features} (key {key})"))
        samples = {name: len(s.labels) for name, s in fset.splits.items()}
        counts = np.bincount(fset.train.labels, minlength=fset.num_classes)
        facts = DataFacts(fset.num_classes, counts, cfg.splits,
                          tuple(fset.meta.get("aux_classes", ())))
        name = "imported"
    else:
        from explore.data.registry import load_dataset

        assert cfg.dataset is not None
        # A dry run never downloads: missing files are reported like any other error.
        dataset = load_dataset(dataclasses.replace(cfg.dataset, download=False))
        backbone = _backbone_run(cfg, dataset)
        bcfg = cfg.backbone
        steps.append(("backbone", store.has_arrays(backbone.key, "weights"),
                      f"{bcfg.arch}, {bcfg.epochs} epochs as a Ray Train job, "
                      f"{bcfg.num_workers} worker(s){' with GPU' if bcfg.use_gpu else ''} "
                      f"(key {backbone.key})"))
        fkey = None
        if store.has_json(backbone.key, "backbone"):
            record = store.get_json(backbone.key, "backbone")
            fkey = record["feature_key"] if store.has(record["feature_key"]) else None
        names = ("train", "val", "test") + (("aux",) if dataset.aux is not None else ())
        samples = {n: len(getattr(dataset, n)) for n in names}
        steps.append(("features", fkey is not None,
                      f"extract {'/'.join(names)} ({sum(samples.values())} images)"
                      + (f" (key {fkey})" if fkey else "")))
        counts = np.bincount(np.asarray(dataset.train.labels), minlength=dataset.num_classes)
        facts = DataFacts(dataset.num_classes, counts, cfg.splits,
                          tuple(dataset.aux_classes) if dataset.aux is not None else ())
        name = dataset.name
    reference = cfg.base.name
    if recipe.posthoc and given:
        reference = "given"
        steps.append(("base", True, "the given classifier.npz"))
    elif recipe.posthoc or recipe.reference_name is None:
        seeds = [cfg.seed] if recipe.posthoc else list(cfg.seeds)
        cached = sum(fkey is not None and store.has_arrays(_base_key(cfg, fkey, s), "classifier")
                     for s in seeds)
        what = f"{cfg.base.name} on the features, seed(s) {', '.join(map(str, seeds))}"
        if 0 < cached < len(seeds):
            what += f" ({cached} of {len(seeds)} cached)"
        steps.append(("base", cached == len(seeds), what))
    else:
        reference = str(recipe.reference_name)
        steps.append(("reference", False, f"{reference} on the features, "
                      f"{len(cfg.seeds)} seeds (trained by every sweep)"))
    return Plan(name, facts, samples, samples.get("val", 0) > 0, reference, steps)
