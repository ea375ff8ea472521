"""Neighbor-silencing heads on cached features (``explore.methods.neighbor_silencing``).

The label space is the FeatureSet's L target classes followed by K auxiliary classes
picked from an auxiliary feature pool: the ``aux`` split (labels 0..A−1) with names in
``meta["aux_classes"]``. Which auxiliary classes, and whose neighbours they are, comes
from a JSON neighbour map (``{"target name": ["aux name", ...]}``, param
``neighbor_map``) or, without one, from the cosine similarity of class-name text
embeddings or of class prototypes (``neighbor_source``), with the paper's
head : medium : tail ratio of auxiliary classes per target.

A linear head over L + K classes is trained with ``ns_loss``. Every epoch holds all
target samples plus at most ``aux_per_class_cap`` samples of each selected auxiliary
class (redrawn per epoch); the auxiliary counts in the loss are those per-epoch pool
sizes, ``min(n_a, cap)``. In eval mode the head returns only the L target logits
(``drop_aux_logits``), so model selection on validation and the test metrics predict
among the targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from explore.methods.alphanet import class_means
from explore.methods.neighbor_silencing import (
    NSParams,
    aux_per_target_counts,
    drop_aux_logits,
    find_neighbors,
    neighbor_matrix,
    ns_loss,
    sample_aux_indices,
    select_aux_classes,
)
from explore.splits import Split
from explore.training.head import HeadFit, LossFn, SampleFn, fit_head
from explore.training.head_runs import HeadData, HeadTraining, head_data, run_seeds
from explore.training.outcome import SeedResult

if TYPE_CHECKING:
    from explore.training.registry import TrialInputs

NO_AUX = ("neighbor_silencing needs auxiliary features: an 'aux' feature split with class names in "
          "meta['aux_classes'] (use dataset fashion_mnist_lt_open, or imported features with an aux split)")


@dataclass(frozen=True)
class NSHeadParams(NSParams, HeadTraining):
    """Neighbor silencing's knobs (``lambda_s``, auxiliary sampling) plus the head's training."""

    neighbor_map: str | None = None
    """Path or URI of a JSON neighbour map ``{target name: [auxiliary names]}``; None =
    find neighbours by ``neighbor_source``."""

    def __post_init__(self) -> None:
        NSParams.__post_init__(self)
        HeadTraining.__post_init__(self)
        if self.neighbor_map is not None and not (isinstance(self.neighbor_map, str) and self.neighbor_map):
            raise ValueError(f"neighbor_map must be a path to a JSON file or null, got {self.neighbor_map!r}")


@dataclass(frozen=True)
class NSProblem:
    """The training data of one neighbor-silencing configuration (seed-independent)."""

    x: np.ndarray
    """Target training features, then the selected auxiliary classes' features."""
    y: np.ndarray
    """Labels: targets 0..L−1, auxiliary L..L+K−1."""
    num_targets: int
    aux_start: int
    """Row of ``x`` where the auxiliary samples begin (= number of target samples)."""
    counts: np.ndarray
    """(L+K,) targets' training counts, then the per-epoch auxiliary pool sizes."""
    neighbor: np.ndarray
    """(L+K)×(L+K) neighbour matrix (target–auxiliary pairs)."""
    aux_classes: tuple[str, ...]
    aux_parents: tuple[tuple[int, ...], ...]

    @property
    def num_classes(self) -> int:
        return len(self.counts)


class TargetsAtTest(nn.Module):
    """A linear head over targets + auxiliary classes; eval mode drops the auxiliary logits."""

    def __init__(self, d: int, num_targets: int, num_classes: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(d, num_classes)
        self.num_targets = num_targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z if self.training else drop_aux_logits(z, self.num_targets)


def _aux_pool(inputs: TrialInputs) -> tuple[np.ndarray, np.ndarray, list[str]]:
    fset = inputs.features
    aux = fset.splits.get("aux")
    names = fset.meta.get("aux_classes")
    if aux is None or names is None:
        raise ValueError(NO_AUX)
    names = [str(n) for n in names]
    if len(aux) and int(aux.labels.max()) >= len(names):
        raise ValueError(f"aux split has label {int(aux.labels.max())} but meta['aux_classes'] names "
                         f"only {len(names)} classes")
    return aux.features, aux.labels, names


def _read_map(uri: str) -> dict[str, list[str]]:
    from explore.store.uri import resolve

    fs, path = resolve(uri)
    try:
        with fs.open_input_file(path) as f:
            value = json.loads(f.read_buffer(f.size()).to_pybytes())
    except FileNotFoundError:
        raise ValueError(f"neighbor_map {uri} does not exist; give a JSON file or set neighbor_map=null") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"neighbor_map {uri} is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in value.values()
    ):
        raise ValueError(f"neighbor_map {uri} must be a JSON object {{target name: [auxiliary names]}}")
    return value


def _neighbors_from_map(uri: str, targets: tuple[str, ...], aux_names: list[str]) -> list[list[int]]:
    mapping = _read_map(uri)
    unknown_t = sorted(set(mapping) - set(targets))
    if unknown_t:
        raise ValueError(f"neighbor_map {uri}: unknown target class(es) {unknown_t[:5]}")
    index = {n: a for a, n in enumerate(aux_names)}
    unknown_a = sorted({a for v in mapping.values() for a in v} - set(index))
    if unknown_a:
        raise ValueError(f"neighbor_map {uri}: class(es) {unknown_a[:5]} are not in meta['aux_classes']")
    return [[index[a] for a in mapping.get(t, [])] for t in targets]


def _neighbors_by_similarity(
    params: NSHeadParams, data: HeadData, targets: tuple[str, ...], aux: tuple[np.ndarray, np.ndarray, list[str]]
) -> tuple[list[list[int]], str]:
    aux_x, aux_y, aux_names = aux
    present = np.flatnonzero(np.bincount(aux_y, minlength=len(aux_names)) > 0)  # classes with samples
    totals = {s: int(data.counts[data.split_of_class == s.value].sum()) for s in Split}
    per_target = aux_per_target_counts(list(data.split_of_class), totals[Split.MANY], totals[Split.MEDIUM],
                                       totals[Split.FEW], params.aux_base_count, params.max_aux_per_target)
    per_target = np.minimum(per_target, len(present))
    if params.neighbor_source == "text":
        from explore.training.lfm_fit import class_text_features

        target_emb, encoder = class_text_features(targets)
        aux_emb, _ = class_text_features([aux_names[a] for a in present])
        source = f"text:{encoder}"
    else:
        target_emb = class_means(data.train[0], data.train[1], data.num_classes)
        in_pool = np.isin(aux_y, present)
        aux_emb = class_means(aux_x[in_pool], np.searchsorted(present, aux_y[in_pool]), len(present))
        source = "prototype"
    found = find_neighbors(target_emb, aux_emb, per_target.tolist())
    return [[int(present[a]) for a in row] for row in found], source


def build_ns_problem(inputs: TrialInputs, params: NSHeadParams, data: HeadData | None = None) -> NSProblem:
    """Pick the auxiliary classes and lay out targets + auxiliary samples (no seed involved)."""
    data = data or head_data(inputs)
    aux = _aux_pool(inputs)
    aux_x, aux_y, aux_names = aux
    targets = tuple(inputs.features.classes)
    if params.neighbor_map is not None:
        neighbors, source = _neighbors_from_map(params.neighbor_map, targets, aux_names), f"map:{params.neighbor_map}"
    else:
        neighbors, source = _neighbors_by_similarity(params, data, targets, aux)
    pool_ids, parents = select_aux_classes(neighbors)
    aux_counts = np.bincount(aux_y, minlength=len(aux_names))
    empty = [aux_names[a] for a in pool_ids if aux_counts[a] == 0]
    if empty:
        raise ValueError(f"auxiliary class(es) {empty[:5]} have no samples in the aux split")
    L = data.num_classes
    keep = np.isin(aux_y, pool_ids)
    relabel = np.full(len(aux_names), -1, dtype=np.int64)
    relabel[pool_ids] = L + np.arange(len(pool_ids))
    x = np.concatenate([np.asarray(data.train[0], np.float32), np.asarray(aux_x[keep], np.float32)])
    y = np.concatenate([np.asarray(data.train[1], np.int64), relabel[aux_y[keep]]])
    counts = np.concatenate([data.counts, np.minimum(aux_counts[pool_ids], params.aux_per_class_cap)])
    params.resolved.update(
        neighbor_source=source,
        aux_classes=[aux_names[a] for a in pool_ids],
        aux_parents=[[targets[t] for t in p] for p in parents],
    )
    return NSProblem(x, y, L, len(data.train[1]), counts, neighbor_matrix(L, parents),
                     tuple(aux_names[a] for a in pool_ids), tuple(parents))


def ns_sampler(problem: NSProblem, per_class_cap: int) -> SampleFn:
    """Every target sample, plus ≤ cap samples of each auxiliary class, shuffled; redrawn per epoch."""
    target_idx = np.arange(problem.aux_start)
    aux_labels = problem.y[problem.aux_start:]

    def indices(_epoch: int, rng: np.random.Generator) -> np.ndarray:
        aux_idx = problem.aux_start + sample_aux_indices(aux_labels, per_class_cap, rng)
        return rng.permutation(np.concatenate([target_idx, aux_idx]))

    return indices


def ns_loss_fn(problem: NSProblem, lambda_s: float) -> LossFn:
    counts = torch.as_tensor(problem.counts, dtype=torch.float32)
    neighbor = torch.as_tensor(problem.neighbor)

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ns_loss(logits, targets, counts, neighbor, lambda_s)

    return loss


def train_ns_seed(problem: NSProblem, data: HeadData, params: NSHeadParams, seed: int,
                  loss: LossFn | None = None) -> HeadFit:
    """One seed's head; ``loss`` defaults to the neighbor-silencing loss of ``params``."""
    model = TargetsAtTest(data.d, problem.num_targets, problem.num_classes, seed)
    return fit_head(model, (problem.x, problem.y), data.val, params.head_config(), seed=seed,
                    loss=loss or ns_loss_fn(problem, params.lambda_s),
                    sample_indices=ns_sampler(problem, params.aux_per_class_cap))


def fit_neighbor_silencing(inputs: TrialInputs, params: NSHeadParams, seeds: list[int]) -> list[SeedResult]:
    """Train one neighbor-silencing head per seed; test and validation among the L targets."""
    data = head_data(inputs)
    problem = build_ns_problem(inputs, params, data)
    return run_seeds(seeds, data, lambda seed: train_ns_seed(problem, data, params, seed))

