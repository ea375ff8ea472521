"""Neighbor-silencing loss with auxiliary open-set classes.

Paper: "Granularity Matters in Long-Tail Learning" (§3.2, §4.2 and Appendix B;
docs/methods.md#neighbor-silencing). The label space holds L target classes
followed by K auxiliary classes (indices L..L+K−1); each auxiliary class was found
from one or more target classes, its *neighbours*. Eq. (4), the BalCE form::

    L = log(1 + Σ_{j≠y} λ_{yj} · exp(log n_j − log n_y + z_j − z_y))
    λ_{yj} = λ_s  if y and j are neighbours and one of them is auxiliary, else 1

With λ_s = 1 it is plain balanced softmax CE. At test time the auxiliary rows are
dropped and prediction is among the L targets (:func:`drop_aux_logits`).

Resolutions (docs/methods.md#neighbor-silencing):

* Neighbours are target–auxiliary pairs only: two auxiliary classes found from the
  same target are *not* neighbours of each other (the paper's neighbour relation is
  "j was queried from i"). An auxiliary class found from several targets is a
  neighbour of each of them.
* The paper finds auxiliary classes with an LLM and web crawling; explore takes a
  labelled auxiliary feature pool and either a given neighbour map or neighbours found
  by cosine similarity of text embeddings or class prototypes (:func:`find_neighbors`).
* Auxiliary classes per target in the ratio head : medium : tail =
  1 : ⌈N_h/N_m⌉ : ⌈N_h/N_t⌉, scaled by a base
  count (:func:`aux_per_target_counts`); head/medium/tail are explore's many/medium/few.
  The paper's text says N is a split's total of samples, but its stated default ratio
  (1:1:3 on ImageNet-LT) is what class counts give; N = classes by default (``ratio_by``).
* At most 50 samples per auxiliary class per epoch, redrawn every epoch
  (:func:`sample_aux_indices`).

Functions take numpy arrays or torch tensors and return the same kind. No Ray, Hydra
or S3 here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from explore.methods._arrays import ArrayT, checks_values
from explore.methods._arrays import as_tensor as _as_tensor
from explore.methods._arrays import like as _like
from explore.methods.params import PAPER_AUX_BASE_COUNT
from explore.methods.params import NSParams as NSParams  # re-exported
from explore.methods.params import check_lambda_s as _check_lambda_s
from explore.splits import Split


def ns_loss(
    logits: ArrayT, targets: ArrayT, counts: ArrayT, neighbor: ArrayT, lambda_s: float
) -> ArrayT:
    """Per-sample neighbor-silencing loss, eq. (4); shape (N,).

    ``logits``: N×C over targets then auxiliary classes; ``counts``: training samples
    per class (> 0; auxiliary counts are those of the epoch's pool); ``neighbor``: C×C
    boolean, true where two classes are neighbours and one is auxiliary (the diagonal
    is ignored). Computed as a logsumexp over ``z_j + log n_j + log λ_{yj}``.
    """
    _check_lambda_s(lambda_s)
    z = _as_tensor(logits)
    y = _as_tensor(targets, dtype=torch.int64).long()
    n = _as_tensor(counts).to(z.dtype)
    nb = _as_tensor(neighbor, dtype=torch.bool).bool()
    if z.ndim != 2:
        raise ValueError(f"logits must be N×C, got shape {tuple(z.shape)}")
    N, C = z.shape
    if y.shape != (N,):
        raise ValueError(f"targets must have shape ({N},), got {tuple(y.shape)}")
    if n.shape != (C,):
        raise ValueError(f"counts must have shape ({C},), got {tuple(n.shape)}")
    if nb.shape != (C, C):
        raise ValueError(f"neighbor must be a {C}×{C} boolean matrix, got {tuple(nb.shape)}")
    if not bool(torch.all(n > 0)):
        raise ValueError("counts must all be > 0 (every class, auxiliary ones included)")
    if checks_values(y) and N and (int(y.min()) < 0 or int(y.max()) >= C):
        raise ValueError(f"targets must be class indices in [0, {C})")
    silenced = nb[y] & ~torch.nn.functional.one_hot(y, C).bool()
    log_lambda = torch.where(
        silenced,
        torch.tensor(math.log(lambda_s), dtype=z.dtype, device=z.device),
        torch.zeros((), dtype=z.dtype, device=z.device),
    )
    return _like(_loss_from_terms(z, y, torch.log(n), log_lambda), logits)


def _loss_from_terms(z: torch.Tensor, y: torch.Tensor, log_n: torch.Tensor,
                     log_lambda: torch.Tensor) -> torch.Tensor:
    # The y entry is z_y + log n_y (λ_yy = 1), i.e. the "1 +" of eq. (4).
    b = z + log_n + log_lambda
    return torch.logsumexp(b, dim=1) - b.gather(1, y[:, None]).squeeze(1)


class NSLoss:
    """:func:`ns_loss` with fixed counts, neighbour matrix and λ_s, for torch logits.

    ``log n`` and the C×C matrix of ``log λ_yj`` (diagonal 0) are built once per dtype and
    device; a call gathers the targets' rows of it. The per-sample losses are those of
    ``ns_loss`` (the same values in the same operations), without rebuilding an N×C one-hot
    mask and the logarithms on every batch.
    """

    def __init__(self, counts: np.ndarray | torch.Tensor, neighbor: np.ndarray | torch.Tensor,
                 lambda_s: float) -> None:
        _check_lambda_s(lambda_s)
        n = _as_tensor(counts)
        nb = _as_tensor(neighbor, dtype=torch.bool).bool()
        C = n.shape[0] if n.ndim == 1 else -1
        if n.ndim != 1 or nb.shape != (C, C):
            raise ValueError(f"counts must be (C,) and neighbor C×C, got {tuple(n.shape)} and "
                             f"{tuple(nb.shape)}")
        if not bool(torch.all(n > 0)):
            raise ValueError("counts must all be > 0 (every class, auxiliary ones included)")
        self.num_classes = C
        self._counts, self._neighbor, self._lambda_s = n, nb, float(lambda_s)
        self._tables: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in self._tables:
            log_n = torch.log(self._counts.to(device).to(dtype))
            off_diagonal = ~torch.eye(self.num_classes, dtype=torch.bool, device=device)
            log_lambda = torch.where(
                self._neighbor.to(device) & off_diagonal,
                torch.tensor(math.log(self._lambda_s), dtype=dtype, device=device),
                torch.zeros((), dtype=dtype, device=device),
            )
            self._tables[key] = (log_n, log_lambda)
        return self._tables[key]

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (N,) of ``logits`` N×C and class-index ``targets`` (N,)."""
        y = targets.long()
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be N×{self.num_classes}, got shape {tuple(logits.shape)}")
        N = logits.shape[0]
        if y.shape != (N,):
            raise ValueError(f"targets must have shape ({N},), got {tuple(y.shape)}")
        if checks_values(y) and N and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"targets must be class indices in [0, {self.num_classes})")
        log_n, log_lambda = self._table(logits.dtype, logits.device)
        return _loss_from_terms(logits, y, log_n, log_lambda[y])


def neighbor_matrix(num_targets: int, aux_parent: Sequence[int | Sequence[int]]) -> np.ndarray:
    """C×C boolean neighbour matrix, C = L + K (auxiliary classes after the L targets).

    ``aux_parent[k]``: the target index (or indices) auxiliary class L+k was found from.
    Symmetric; only target–auxiliary entries can be true.
    """
    L = int(num_targets)
    if L < 1:
        raise ValueError(f"num_targets must be >= 1, got {num_targets}")
    C = L + len(aux_parent)
    out = np.zeros((C, C), dtype=bool)
    for k, parents in enumerate(aux_parent):
        for t in np.atleast_1d(np.asarray(parents, dtype=np.int64)):
            if not 0 <= t < L:
                raise ValueError(
                    f"aux_parent[{k}] = {int(t)} is not a target index in [0, {L})"
                )
            out[t, L + k] = out[L + k, t] = True
    return out


def find_neighbors(
    target_emb: np.ndarray | torch.Tensor,
    aux_emb: np.ndarray | torch.Tensor,
    per_target: Sequence[int],
) -> list[list[int]]:
    """For each target, the ``per_target[t]`` auxiliary classes most cosine-similar to it.

    Embeddings are text embeddings of class names or class prototypes (rows by class).
    Most similar first; ties go to the lower auxiliary index. Different targets may
    pick the same auxiliary class.
    """
    T = np.asarray(target_emb.detach().cpu() if isinstance(target_emb, torch.Tensor)
                   else target_emb, dtype=np.float64)
    A = np.asarray(aux_emb.detach().cpu() if isinstance(aux_emb, torch.Tensor)
                   else aux_emb, dtype=np.float64)
    if T.ndim != 2 or A.ndim != 2 or T.shape[1] != A.shape[1]:
        raise ValueError(
            f"target_emb and aux_emb must be 2-D with the same width, got {T.shape} and {A.shape}"
        )
    if len(per_target) != T.shape[0]:
        raise ValueError(f"per_target has {len(per_target)} entries for {T.shape[0]} targets")
    for t, k in enumerate(per_target):
        if not 0 <= int(k) <= A.shape[0]:
            raise ValueError(
                f"per_target[{t}] = {k} must be in [0, {A.shape[0]}] (the auxiliary pool size)"
            )
    tn, an = np.linalg.norm(T, axis=1), np.linalg.norm(A, axis=1)
    if np.any(tn == 0) or np.any(an == 0):
        raise ValueError("embeddings must be non-zero to compare by cosine similarity")
    cos = (T / tn[:, None]) @ (A / an[:, None]).T
    # Stable sort of -cos keeps the lower index first among equal similarities.
    ranked = np.argsort(-cos, axis=1, kind="stable")
    return [ranked[t, : int(k)].tolist() for t, k in enumerate(per_target)]


def select_aux_classes(
    neighbors: Sequence[Sequence[int]],
) -> tuple[list[int], list[tuple[int, ...]]]:
    """Turn per-target neighbour lists (indices into an auxiliary pool) into the label
    space: returns ``(pool_ids, aux_parent)`` where auxiliary class L+k is pool class
    ``pool_ids[k]`` (ascending pool order) and ``aux_parent[k]`` its targets, ready
    for :func:`neighbor_matrix`.
    """
    parents: dict[int, list[int]] = {}
    for t, pool in enumerate(neighbors):
        for a in pool:
            parents.setdefault(int(a), []).append(t)
    pool_ids = sorted(parents)
    return pool_ids, [tuple(sorted(set(parents[a]))) for a in pool_ids]


def fitting_base_count(largest_ratio: int, pool_size: int,
                       paper: int = PAPER_AUX_BASE_COUNT) -> int:
    """The base count when none is given: the paper's 5, lowered until the largest target's
    count (base × its ratio) fits in the pool of auxiliary classes, and at least 1. A pool
    too small for the paper's count (Fashion-MNIST-LT-open: 3 classes) keeps the ratio
    between head, medium and tail targets instead of giving every target the whole pool."""
    if largest_ratio < 1 or pool_size < 0:
        raise ValueError(f"need largest_ratio >= 1 and pool_size >= 0, got {largest_ratio}, "
                         f"{pool_size}")
    return max(1, min(paper, pool_size // largest_ratio))


def aux_per_target_counts(
    split_of_target: Sequence[str | Split],
    N_head: int,
    N_medium: int,
    N_tail: int,
    base_count: int,
    max_per_target: int | None = None,
) -> np.ndarray:
    """Auxiliary classes per target: ``base_count`` times 1 / ⌈N_h/N_m⌉ / ⌈N_h/N_t⌉.

    ``split_of_target``: each target's split, "many" (head), "medium" or "few" (tail);
    ``N_*``: the size of each split — its number of classes (the default resolution) or
    its total training samples (the paper's text); the caller decides. Optionally capped at
    ``max_per_target``. Returns an int64 array, one entry per target.
    """
    if base_count < 0:
        raise ValueError(f"base_count must be >= 0, got {base_count}")
    if N_head <= 0:
        raise ValueError(f"N_head must be > 0 (the ratio is relative to head), got {N_head}")
    totals = {Split.MANY: N_head, Split.MEDIUM: N_medium, Split.FEW: N_tail}
    out = np.empty(len(split_of_target), dtype=np.int64)
    for t, name in enumerate(split_of_target):
        try:
            split = Split(name)
        except ValueError:
            raise ValueError(
                f"split_of_target[{t}] = {name!r}; expected 'many', 'medium' or 'few'"
            ) from None
        total = totals[split]
        if total <= 0:
            raise ValueError(
                f"target {t} is {split.value} but that split's sample total is {total}; "
                "it must be > 0"
            )
        ratio = 1 if split is Split.MANY else math.ceil(N_head / total)
        out[t] = base_count * ratio
    if max_per_target is not None:
        out = np.minimum(out, max_per_target)
    return out


def sample_aux_indices(
    aux_labels: np.ndarray,
    per_class_cap: int = 50,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One epoch's auxiliary samples: every sample of a class with ≤ cap samples, a
    uniform subset of ``per_class_cap`` (without replacement) of larger classes.

    Returns sorted indices into ``aux_labels``; shuffle with the target samples.
    ``rng`` is required (explicit seeding).
    """
    if rng is None:
        raise ValueError("rng is required: pass np.random.default_rng(seed)")
    if per_class_cap < 1:
        raise ValueError(f"per_class_cap must be >= 1, got {per_class_cap}")
    labels = np.asarray(aux_labels)
    if labels.ndim != 1:
        raise ValueError(f"aux_labels must be 1-D, got shape {labels.shape}")
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if members.size > per_class_cap:
            members = rng.choice(members, size=per_class_cap, replace=False)
        chosen.append(members)
    if not chosen:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def epoch_indices(labels: np.ndarray, num_targets: int, per_class_cap: int,
                  rng: np.random.Generator) -> np.ndarray:
    """One epoch's training samples, shuffled: every target sample (label < ``num_targets``)
    and at most ``per_class_cap`` of each auxiliary class (:func:`sample_aux_indices`)."""
    labels = np.asarray(labels)
    aux = np.flatnonzero(labels >= num_targets)
    chosen = aux[sample_aux_indices(labels[aux], per_class_cap, rng)]
    return rng.permutation(np.concatenate([np.flatnonzero(labels < num_targets), chosen]))


def drop_aux_logits(logits: ArrayT, num_targets: int) -> ArrayT:
    """Test time: keep the L target columns (the auxiliary classifier rows are masked)."""
    if logits.ndim != 2 or not 1 <= num_targets <= logits.shape[1]:
        raise ValueError(
            f"logits must be N×C with 1 <= num_targets <= C, got shape {tuple(logits.shape)} "
            f"and num_targets={num_targets}"
        )
    return logits[:, :num_targets]


class TargetsAtTest(nn.Module):
    """A linear head over targets + auxiliary classes; eval mode drops the auxiliary logits."""

    def __init__(self, d: int, num_targets: int, num_classes: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(d, num_classes, device="cpu")  # the same weights on any device
        self.num_targets = num_targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z if self.training else drop_aux_logits(z, self.num_targets)
