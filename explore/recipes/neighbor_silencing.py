"""Neighbor-silencing recipe (maths: :mod:`explore.methods.neighbor_silencing`;
docs/methods.md#neighbor-silencing).

The label space is the L target classes followed by K auxiliary classes picked from an
auxiliary pool: the feature split ``aux`` (labels 0..A−1, names in ``meta["aux_classes"]``).
Which auxiliary classes, and whose neighbours they are, comes from a JSON neighbour map
(``{"target name": ["aux name", ...]}``) or, without one, from the cosine similarity of
class-name text embeddings or of class prototypes, with the paper's head : medium : tail
ratio of auxiliary classes per target.

Every epoch holds all target samples plus at most ``aux_per_class_cap`` samples of each
selected auxiliary class (redrawn per epoch); the auxiliary counts in the loss are those
per-epoch pool sizes, ``min(n_a, cap)``. Predictions drop the auxiliary logits. Full mode
trains the backbone on the target images plus the chosen auxiliary classes' images, with
the same sampler and loss; the auxiliary classes are chosen on the CE backbone's features,
as in head mode.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.data.types import ImageSplit, LongTailDataset
from explore.methods.params import NSParams
from explore.methods.prototypes import class_means
from explore.plugins import Plugins
from explore.recipes._recipe import NO_NAMES, Recipe, RecipeError
from explore.splits import Split
from explore.store import FeatureSet
from explore.training.inputs import DataFacts, TrialInputs, head_data
from explore.training.outcome import Fit

if TYPE_CHECKING:  # torch (and the maths, which uses it) is imported where the method trains
    import torch
    from torch import nn

    from explore.training.full import FullPlan, FullSetup
    from explore.training.head import DeviceRows, HeadData

__all__ = ["NSProblem", "NSTrialParams", "NeighborSilencingRecipe", "build_ns_problem",
           "ns_plugins", "ns_training_split"]

NO_AUX = ("neighbor_silencing needs an auxiliary pool and this data has none: use "
          "dataset=fashion_mnist_lt_open, or features= with aux.npz and aux_classes.txt")


@dataclass(frozen=True)
class NSTrialParams(NSParams):
    """Neighbor silencing's knobs (``lambda_s``, auxiliary sampling) and its neighbour map."""

    neighbor_map: str | None = None
    """Path or URI of a JSON neighbour map ``{target name: [auxiliary names]}``; None =
    find neighbours by ``neighbor_source``."""

    def __post_init__(self) -> None:
        NSParams.__post_init__(self)
        if self.neighbor_map is not None and not (isinstance(self.neighbor_map, str)
                                                  and self.neighbor_map):
            raise ValueError(f"neighbor_map must be a path to a JSON file or null, "
                             f"got {self.neighbor_map!r}")


@dataclass(frozen=True)
class NSProblem:
    """The training data of one neighbor-silencing configuration (seed-independent)."""

    x: np.ndarray
    """Target training features, then the selected auxiliary classes' features."""
    y: np.ndarray
    """Labels: targets 0..L−1, auxiliary L..L+K−1."""
    num_targets: int
    counts: np.ndarray
    """(L+K,) targets' training counts, then the per-epoch auxiliary pool sizes."""
    neighbor: np.ndarray
    """(L+K)×(L+K) neighbour matrix (target–auxiliary pairs)."""
    aux_classes: tuple[str, ...]
    resolved: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.counts)


def ns_plugins(counts: np.ndarray, neighbor: np.ndarray, lambda_s: float, num_targets: int,
               aux_cap: int, device: torch.device | None = None) -> Plugins:
    """The neighbor-silencing loss with the epoch's counts (auxiliary ones capped), and the
    epoch sampler: every target sample, at most ``aux_cap`` per auxiliary class. Its tables
    are built on ``device`` (default: the CPU; else where the logits are)."""
    import torch

    from explore.methods.neighbor_silencing import NSLoss, epoch_indices

    n = torch.as_tensor(np.asarray(counts), dtype=torch.float32, device=device or "cpu")
    nb = torch.as_tensor(np.asarray(neighbor), dtype=torch.bool, device=device or "cpu")
    ns = NSLoss(n, nb, lambda_s)  # = ns_loss(·, ·, n, nb, lambda_s), its tables built once

    def sample_indices(labels: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return epoch_indices(labels, num_targets, aux_cap, rng)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return ns(logits.float(), targets)

    return Plugins(loss=loss, sample_indices=sample_indices)


def _aux_pool(fset: FeatureSet) -> tuple[np.ndarray, np.ndarray, list[str]]:
    aux = fset.splits.get("aux")
    names = fset.meta.get("aux_classes")
    if aux is None or names is None:
        raise RecipeError(NO_AUX)
    names = [str(n) for n in names]
    if len(aux) and int(aux.labels.max()) >= len(names):
        raise RecipeError(f"aux split has label {int(aux.labels.max())} but meta['aux_classes'] "
                          f"names only {len(names)} classes")
    return aux.features, aux.labels, names


def _read_map(uri: str) -> dict[str, list[str]]:
    from explore.store import StorageError
    from explore.store.documents import read_json

    try:
        value = read_json(uri, "reading the neighbor map")
    except FileNotFoundError:
        raise RecipeError(f"neighbor_map {uri} does not exist; give a JSON file or set "
                          "neighbor_map=null") from None
    except StorageError as exc:
        raise RecipeError(f"neighbor_map: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in value.values()
    ):
        raise RecipeError(f"neighbor_map {uri} must be a JSON object {{target name: "
                          "[auxiliary names]}")
    return value


def _neighbors_from_map(uri: str, targets: tuple[str, ...],
                        aux_names: list[str]) -> list[list[int]]:
    mapping = _read_map(uri)
    unknown_t = sorted(set(mapping) - set(targets))
    if unknown_t:
        raise RecipeError(f"neighbor_map {uri}: unknown target class(es) {unknown_t[:5]}")
    index = {n: a for a, n in enumerate(aux_names)}
    unknown_a = sorted({a for v in mapping.values() for a in v} - set(index))
    if unknown_a:
        raise RecipeError(f"neighbor_map {uri}: class(es) {unknown_a[:5]} are not in "
                          "meta['aux_classes']")
    return [[index[a] for a in mapping.get(t, [])] for t in targets]


def _neighbors_by_similarity(params: NSTrialParams, data: HeadData, targets: tuple[str, ...],
                             aux: tuple[np.ndarray, np.ndarray, list[str]],
                             ) -> tuple[list[list[int]], str, int]:
    from explore.methods.neighbor_silencing import (
        aux_per_target_counts,
        find_neighbors,
        fitting_base_count,
    )
    from explore.text_encoder import class_text_features

    aux_x, aux_y, aux_names = aux
    present = np.flatnonzero(np.bincount(aux_y, minlength=len(aux_names)) > 0)
    in_split = {s: data.split_of_class == s.value for s in Split}
    totals = ({s: int(mask.sum()) for s, mask in in_split.items()} if params.ratio_by == "classes"
              else {s: int(data.counts[mask].sum()) for s, mask in in_split.items()})
    splits = (list(data.split_of_class), totals[Split.MANY], totals[Split.MEDIUM],
              totals[Split.FEW])
    base = params.aux_base_count
    if base is None:  # resolved from the pool: see fitting_base_count
        base = fitting_base_count(int(aux_per_target_counts(*splits, 1).max()), len(present))
    per_target = aux_per_target_counts(*splits, base, params.max_aux_per_target)
    per_target = np.minimum(per_target, len(present))
    if params.neighbor_source == "text":
        target_emb, encoder = class_text_features(targets)
        aux_emb, _ = class_text_features([aux_names[a] for a in present])
        source = f"text:{encoder}"
    else:
        target_emb = class_means(data.train[0], data.train[1], data.num_classes)
        in_pool = np.isin(aux_y, present)
        aux_emb = class_means(aux_x[in_pool], np.searchsorted(present, aux_y[in_pool]),
                              len(present))
        source = "prototype"
    found = find_neighbors(target_emb, aux_emb, per_target.tolist())
    return [[int(present[a]) for a in row] for row in found], source, base


def build_ns_problem(fset: FeatureSet, params: NSTrialParams, data: HeadData) -> NSProblem:
    """Pick the auxiliary classes and lay out targets + auxiliary samples (no seed involved)."""
    from explore.methods.neighbor_silencing import neighbor_matrix, select_aux_classes

    aux = _aux_pool(fset)
    aux_x, aux_y, aux_names = aux
    targets = tuple(fset.classes)
    base: int | None = None
    if params.neighbor_map is not None:
        neighbors = _neighbors_from_map(params.neighbor_map, targets, aux_names)
        source = f"map:{params.neighbor_map}"
    else:
        neighbors, source, base = _neighbors_by_similarity(params, data, targets, aux)
    pool_ids, parents = select_aux_classes(neighbors)
    aux_counts = np.bincount(aux_y, minlength=len(aux_names))
    empty = [aux_names[a] for a in pool_ids if aux_counts[a] == 0]
    if empty:
        raise RecipeError(f"auxiliary class(es) {empty[:5]} have no samples in the aux split")
    L = data.num_classes
    keep = np.isin(aux_y, pool_ids)
    relabel = np.full(len(aux_names), -1, dtype=np.int64)
    relabel[pool_ids] = L + np.arange(len(pool_ids))
    x = np.concatenate([np.asarray(data.train[0], np.float32), np.asarray(aux_x[keep], np.float32)])
    y = np.concatenate([np.asarray(data.train[1], np.int64), relabel[aux_y[keep]]])
    counts = np.concatenate([data.counts, np.minimum(aux_counts[pool_ids], params.aux_per_class_cap)])
    resolved = {"neighbor_source": source, "aux_classes": [aux_names[a] for a in pool_ids],
                "aux_per_target": [len(n) for n in neighbors], "aux_base_count": base,
                "aux_parents": [[targets[t] for t in p] for p in parents]}
    return NSProblem(x, y, L, counts, neighbor_matrix(L, parents),
                     tuple(aux_names[a] for a in pool_ids), resolved)


def ns_training_split(dataset: LongTailDataset, aux_classes: Sequence[str]) -> ImageSplit:
    """Target train images, then the images of the chosen auxiliary classes, class
    ``aux_classes[k]`` relabelled L+k (the layout of the head-mode label space)."""
    from explore.training.full import FullModeError

    if dataset.aux is None or dataset.train.images is None or dataset.aux.images is None:
        raise FullModeError("neighbor silencing in full mode needs in-memory target and "
                            "auxiliary images: use an open-set dataset, e.g. "
                            "dataset=fashion_mnist_lt_open")
    L = dataset.num_classes
    relabel = np.full(len(dataset.aux_classes), -1, dtype=np.int64)
    for k, name in enumerate(aux_classes):
        relabel[dataset.aux_classes.index(name)] = L + k
    aux_labels = relabel[dataset.aux.labels]
    keep = aux_labels >= 0
    return ImageSplit(labels=np.concatenate([dataset.train.labels, aux_labels[keep]]),
                      images=np.concatenate([dataset.train.images, dataset.aux.images[keep]]))


class NeighborSilencingRecipe(Recipe[NSTrialParams]):
    name = "neighbor_silencing"
    params_type = NSTrialParams
    knobs = ("lambda_s",)

    def check(self, params: NSTrialParams, facts: DataFacts) -> None:
        if not facts.aux_classes:
            raise RecipeError(NO_AUX)
        if params.neighbor_map is None and params.neighbor_source == "text":
            if not facts.class_names_given:
                raise RecipeError(NO_NAMES.format(
                    what="neighbor_silencing with neighbor_source=text (neighbours are "
                         "nearest by the text of the class names)"))
            from explore.text_encoder import require_text_encoder

            try:
                require_text_encoder("neighbor_silencing with neighbor_source=text")
            except ValueError as exc:
                raise RecipeError(str(exc)) from None

    def fit_head(self, inputs: TrialInputs, params: NSTrialParams, seeds: Sequence[int]) -> Fit:
        from explore.methods.neighbor_silencing import TargetsAtTest
        from explore.training.head import train_seeds

        data = head_data(inputs)
        problem = build_ns_problem(inputs.features, params, data)

        def make(seed: int, rows: DeviceRows) -> tuple[nn.Module, Plugins]:
            model = TargetsAtTest(data.d, problem.num_targets, problem.num_classes, seed)
            plugins = ns_plugins(problem.counts, problem.neighbor, params.lambda_s,
                                 problem.num_targets, params.aux_per_class_cap, inputs.device)
            return model, plugins

        results = train_seeds(seeds, data, inputs.head, make, device=inputs.device,
                              train=(problem.x, problem.y))
        return Fit(results, problem.resolved)

    def full_plan(self, params: NSTrialParams, setup: FullSetup, seed: int) -> FullPlan:
        from explore.training.full import FullModeError, FullPlan

        if setup.dataset.aux is None or "aux" not in setup.features.splits:
            raise FullModeError("neighbor silencing needs auxiliary images: use an open-set "
                                "dataset, e.g. dataset=fashion_mnist_lt_open")
        inputs = TrialInputs(setup.features, None, setup.thresholds, setup.head)
        problem = build_ns_problem(setup.features, params, head_data(inputs))
        train = ns_training_split(setup.dataset, problem.aux_classes)
        L = setup.dataset.num_classes
        image_counts = np.bincount(train.labels, minlength=problem.num_classes)[L:]
        if not np.array_equal(np.minimum(image_counts, params.aux_per_class_cap),
                              problem.counts[L:]):
            raise FullModeError("the auxiliary images do not match the cached aux features; "
                                "re-extract them")
        plugins = functools.partial(ns_plugins, problem.counts, problem.neighbor, params.lambda_s,
                                    L, params.aux_per_class_cap)
        return FullPlan(train, problem.num_classes, plugins, problem.resolved)
