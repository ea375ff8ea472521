"""Everything a sweep needs before its first trial, each piece cached in the store.

data → backbone (a Ray Train job) → features (Arrow shards) → the reference: a recipe and
its params run on the sweep's seeds (a base recipe's classifiers, cRT, …, cached).
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

from explore.classifier import LinearClassifier
from explore.config import SweepConfig
from explore.recipes import BaseRecipe, Recipe, ReferenceRecipe
from explore.recipes._recipe import evaluate_classifier
from explore.recipes.bases import classifier_cache_spec
from explore.splits import SplitThresholds
from explore.store import (
    CorruptShardError,
    FeatureSet,
    FeatureStore,
    feature_key,
)
from explore.store.keys import canonical_json
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import DataFacts, TrialInputs, splits_of
from explore.training.outcome import SeedResult

if TYPE_CHECKING:
    from explore.backbone.models import ModelSpec
    from explore.backbone.train_config import BackboneTrainConfig
    from explore.data.types import LongTailDataset

log = logging.getLogger("explore")

PIPELINE_VERSION = 1
"""Bumped when feature extraction or base training changes meaning (part of every key)."""

EVALUATION_VERSION = 1
"""Bumped when a classifier's metrics change meaning (``explore.evaluation``): part of the
name under which a reference classifier's metrics are cached beside it."""


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
    """Features, then the reference: a recipe and its params (:func:`reference_of`) run on
    the sweep's seeds. For a post-hoc method the reference is the one base classifier it
    corrects (trained once, on ``cfg.seed``), reported on every seed; for a training-time
    method it is trained on each of the sweep's seeds (paired with the configurations')."""
    if cfg.features:
        fkey, dataset_name, fset, given = _imported_features(cfg.features, store)
    else:
        fkey, dataset_name, fset = _backbone_features(cfg, store)
        given = None
    counts = np.bincount(fset.train.labels, minlength=fset.num_classes)
    facts = DataFacts(fset.num_classes, counts, cfg.splits, tuple(fset.meta.get("aux_classes", ())),
                      class_names_given=bool(fset.meta.get("classes_given", True)))
    if recipe.posthoc and given is not None:  # the researcher's own classifier is the base
        key = _given_classifier(store, fkey, given)
        name = "given"
        results: list[SeedResult] = [_evaluated(store, key, given, fset, cfg.splits, cfg.seed)]
        keys: list[str | None] = [key]
    else:
        ref = reference_of(cfg, recipe)
        name = ref.name
        results, keys = _run_reference(cfg, store, fset, fkey, ref,
                                       [cfg.seed] if recipe.posthoc else cfg.seeds)
    if recipe.posthoc:  # one model, the same rows on every seed
        same = [dataclasses.replace(results[0], seed=s) for s in cfg.seeds]
        reference = Reference(name, same, keys * len(same), deterministic=True)
        return Prepared(fkey, dataset_name, tuple(fset.classes), facts, reference, keys[0])
    reference = Reference(name, results, keys, deterministic=False)
    return Prepared(fkey, dataset_name, tuple(fset.classes), facts, reference)


def reference_of(cfg: SweepConfig, recipe: Recipe) -> ReferenceRecipe:
    """The reference rows' recipe and params: the method's own reference when it defines
    one (never for a post-hoc method, which corrects the base), else the ``base`` group's."""
    own = None if recipe.posthoc else recipe.own_reference(recipe.params(cfg.method_settings))
    return own or cfg.base.reference()


def _run_reference(
    cfg: SweepConfig, store: FeatureStore, fset: FeatureSet, fkey: str, ref: ReferenceRecipe,
    seeds: list[int],
) -> tuple[list[SeedResult], list[str | None]]:
    """(result, cache key) per seed. A base recipe's classifier is cached in the store by
    everything it depends on (a second sweep never trains it again); any other recipe's
    reference is trained by every sweep (key None)."""
    from explore.console import Progress

    log.info("reference: %s on cached features, seed(s) %s", ref.name, ", ".join(map(str, seeds)))
    if not isinstance(ref.recipe, BaseRecipe):
        with Progress(f"reference {ref.name}", tick=True) as bar:
            bar.note(f"{len(seeds)} seeds")
            fit = ref.recipe.fit_head(TrialInputs(fset, None, cfg.splits, cfg.head), ref.params, seeds)
        return fit.results, [None] * len(fit.results)
    results: list[SeedResult] = []
    keys: list[str | None] = []
    with Progress(f"base {ref.name}", len(seeds), "seed", tick=True) as bar:
        for seed in seeds:
            key, classifier = _cached_classifier(cfg, store, fset, fkey, ref, seed)
            results.append(_evaluated(store, key, classifier, fset, cfg.splits, seed))
            keys.append(key)
            bar.update()
    return results, keys


def _evaluated(store: FeatureStore, key: str, classifier: LinearClassifier, fset: FeatureSet,
               thresholds: SplitThresholds, seed: int) -> SeedResult:
    """:func:`evaluate_classifier` of a stored reference classifier (cache ``key``), its
    metrics cached beside it by the split thresholds: the metrics are a function of the
    classifier, the features (both in the key) and the thresholds, so a warm sweep reads
    them instead of computing them (and its driver never imports torch)."""
    spec = canonical_json(dataclasses.asdict(thresholds), "split thresholds")
    name = (f"metrics-v{EVALUATION_VERSION}-"
            f"{hashlib.sha256(spec.encode()).hexdigest()[:16]}")
    if store.has_json(key, name):
        try:
            cached = store.get_json(key, name)
            return SeedResult(seed=seed, best_epoch=0, test=cached["test"], val=cached["val"])
        except CorruptShardError as exc:
            log.warning("reference metrics: %s; computing them again", exc)
    result = evaluate_classifier(classifier, fset, thresholds, seed)
    try:
        store.put_json(key, name, {"test": result.test, "val": result.val})
    except ValueError:  # a metric that is not plain JSON (NaN): computed every time
        pass
    return result


# ---------------------------------------------------------------------------------------------
# features


def _imported_features(
    uri: str, store: FeatureStore
) -> tuple[str, str, FeatureSet, LinearClassifier | None]:
    from explore.console import Progress
    from explore.store.imported import import_classifier, import_feature_dir, imported_feature_key

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
    # On a cache hit only the classifier (part of the key) is read from the directory:
    # the feature files were read once already, for the key's digest.
    given = (holder["classifier"] if holder else
             import_classifier(uri, fset.num_classes, fset.train.features.shape[1]))
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


def _classifier_key(fkey: str, ref: ReferenceRecipe, head: HeadTrainConfig, seed: int) -> str:
    return feature_key(
        {"kind": "base", "v": PIPELINE_VERSION, "features": fkey,
         **classifier_cache_spec(ref.name, head, ref.params), "seed": seed}
    )


def _cached_classifier(
    cfg: SweepConfig, store: FeatureStore, fset: FeatureSet, fkey: str, ref: ReferenceRecipe,
    seed: int,
) -> tuple[str, LinearClassifier]:
    """(cache key, classifier) of a base recipe on the features with ``seed``: read from
    the store, or trained and stored."""
    assert isinstance(ref.recipe, BaseRecipe)
    key = _classifier_key(fkey, ref, cfg.head, seed)
    if store.has_arrays(key, "classifier"):
        arrays, _ = store.get_arrays(key, "classifier")
        log.info("base: cached %s seed %d (%s)", ref.name, seed, key)
        return key, LinearClassifier(arrays["weight"], arrays["bias"])
    log.info("base: training %s on cached features, seed %d", ref.name, seed)
    classifier = ref.recipe.train_classifier(splits_of(fset), fset.num_classes, cfg.head,
                                             ref.params, seed)
    store.put_arrays(key, "classifier", {"weight": classifier.weight, "bias": classifier.bias},
                     {"base": ref.name})
    return key, classifier


def _given_classifier(store: FeatureStore, fkey: str, given: LinearClassifier) -> str:
    """The cache key of a given classifier (classifier.npz), stored once: keyed by its
    content, so a replaced classifier.npz is a new entry."""
    digest = hashlib.sha256(np.ascontiguousarray(given.weight).tobytes()
                            + np.ascontiguousarray(given.bias).tobytes()).hexdigest()
    key = feature_key({"kind": "base", "features": fkey, "base": "given", "classifier": digest})
    if not store.has_arrays(key, "classifier"):
        store.put_arrays(key, "classifier", {"weight": given.weight, "bias": given.bias},
                         {"base": "given"})
    return key


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
                          tuple(fset.meta.get("aux_classes", ())),
                          class_names_given=bool(fset.meta.get("classes_given", True)))
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
    if recipe.posthoc and given:
        reference = "given"
        steps.append(("base", True, "the given classifier.npz"))
    else:
        ref = reference_of(cfg, recipe)
        reference = ref.name
        seeds = [cfg.seed] if recipe.posthoc else list(cfg.seeds)
        if isinstance(ref.recipe, BaseRecipe):
            cached = sum(fkey is not None and store.has_arrays(
                _classifier_key(fkey, ref, cfg.head, s), "classifier") for s in seeds)
            what = f"{ref.name} on the features, seed(s) {', '.join(map(str, seeds))}"
            if 0 < cached < len(seeds):
                what += f" ({cached} of {len(seeds)} cached)"
            steps.append(("base", cached == len(seeds), what))
        else:
            steps.append(("reference", False, f"{ref.name} on the features, "
                          f"{len(seeds)} seeds (trained by every sweep)"))
    return Plan(name, facts, samples, samples.get("val", 0) > 0, reference, steps)
