"""SWRM and DySWRM recipes (maths: :mod:`explore.methods.swrm`; docs/methods.md#swrm--dyswrm).

SWRM: a classifier trained with the fixed SWR weights and SWM margins of eq. (4). The
similarity coordinates are the 1-D t-SNE projection of the class prototypes, given each
repeat's seed; with t-SNE's PCA start they come out the same for every seed, so every
repeat trains with the same window order (docs/methods.md#swrm-similarity-coordinates).
The paper takes the prototypes from a CE-trained model; the cached features *are* the
CE-trained backbone's, so the prototypes are the class means of the training features, in
both modes.

DySWRM: a learnable similarity vector ``s`` replaces the t-SNE coordinates; every batch
recomputes the windows, weights and margins from the standardised ``s``, which learns from
the model's confusions after every epoch (or, ``s_objective="loss"``, through eq. (4)).

Full mode follows LDAM-DRW's schedule, as the paper does: plain CE first, the method's
loss from ``drw_start`` on. Head mode uses the method's loss from the first epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.methods.params import DySWRMParams, SWRMParams
from explore.methods.prototypes import class_means
from explore.plugins import Plugins
from explore.recipes._recipe import Recipe, RecipeError
from explore.training.inputs import DataFacts, TrialInputs, head_data
from explore.training.outcome import Fit

if TYPE_CHECKING:  # torch (and the maths, which uses it) is imported where the methods train
    import torch

    from explore.training.full import FullPlan, FullSetup
    from explore.training.head import DeviceRows

__all__ = ["DRW_FRACTION", "DySWRMRecipe", "DySWRMTrialParams", "SWRMRecipe", "SWRMTrialParams",
           "dyswrm_plugins", "swrm_plugins"]

DRW_FRACTION = 0.7
"""Default start of the deferred loss in full mode, as a fraction of the epochs: the SWRM
paper's CIFAR schedule (the last 60 of 200 epochs)."""


@dataclass(frozen=True)
class _Deferral:
    drw_start: int | None = None
    """Full mode: the 0-based epoch from which the method's loss replaces CE; None =
    ``floor(DRW_FRACTION · epochs)``. 0 uses the method's loss throughout."""

    def __post_init__(self) -> None:
        if self.drw_start is not None and (isinstance(self.drw_start, bool)
                                           or not isinstance(self.drw_start, int)
                                           or self.drw_start < 0):
            raise ValueError(f"drw_start must be an integer >= 0 or null, got {self.drw_start!r}")


@dataclass(frozen=True)
class SWRMTrialParams(SWRMParams, _Deferral):
    """SWRM's knobs (``W``, ``beta``, t-SNE, ablation switches) and its full-mode deferral."""

    def __post_init__(self) -> None:
        SWRMParams.__post_init__(self)
        _Deferral.__post_init__(self)


@dataclass(frozen=True)
class DySWRMTrialParams(DySWRMParams, _Deferral):
    """DySWRM's knobs, the t-SNE settings of its warm start and its full-mode deferral."""

    tsne_perplexity: float = 30.0
    """Perplexity of the t-SNE warm start (``init="tsne"`` only); capped at (C − 1)/3."""
    tsne_learning_rate: float | None = None
    """t-SNE learning rate of the warm start; None = ``tsne_learning_rate(C)``."""

    def __post_init__(self) -> None:
        DySWRMParams.__post_init__(self)
        _Deferral.__post_init__(self)
        if not self.tsne_perplexity > 0 or (self.tsne_learning_rate is not None
                                            and not self.tsne_learning_rate > 0):
            raise ValueError("tsne_perplexity and tsne_learning_rate must be > 0")


def swrm_plugins(counts: np.ndarray, coords: np.ndarray, params: SWRMParams,
                 start_epoch: int = 0, device: torch.device | None = None) -> Plugins:
    """Eq. (4) with the fixed weights and margins of ``coords`` from ``start_epoch`` on,
    plain CE before it. Records the margins' mean and max. The weights and margins are
    kept on ``device`` (default: the CPU; moved to the logits' device if those differ)."""
    import torch

    from explore.methods.baselines import cross_entropy_loss
    from explore.methods.swrm import swrm_loss, swrm_terms

    weights, margins = swrm_terms(np.asarray(counts, np.float64), np.asarray(coords), params)
    w = torch.as_tensor(weights, dtype=torch.float32, device=device or "cpu")
    m = torch.as_tensor(margins, dtype=torch.float32, device=device or "cpu")

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch < start_epoch:
            return cross_entropy_loss(logits.float(), targets)
        return swrm_loss(logits.float(), targets, w.to(logits.device), m.to(logits.device))

    size = np.abs(margins)  # with margin_sign="ldam" the margins are negated
    records = {"margin_mean": float(size.mean()), "margin_max": float(size.max())}
    return Plugins(loss=loss, records=records)


def dyswrm_plugins(counts: np.ndarray, init_coords: np.ndarray, params: DySWRMParams,
                   start_epoch: int = 0, use_gpu: bool = False,
                   device: torch.device | None = None) -> Plugins:
    """DySWRM: weights and margins recomputed every batch from the similarity vector ``s``
    (a plug-in parameter: checkpointed with the model).

    ``s_objective="confusion"`` (default): the loss sees ``s`` detached; during each epoch
    the plug-in accumulates every class's mean softmax, and after it updates the affinity
    EMA and takes ``s_steps`` Adam steps on :func:`similarity_objective` (identical on
    every rank: the sums are all-reduced first). ``"loss"``: the literal reading, ``s``
    trained through eq. (4) with the model. Records the last epoch's mean and max margin
    and in how many epochs the class order of ``s`` changed. ``s`` and the sums live on
    ``device`` (head mode: the trial's); else, with ``use_gpu``, on this worker's GPU
    (NCCL all-reduces CUDA tensors)."""
    import torch

    from explore.methods.baselines import cross_entropy_loss
    from explore.methods.swrm import (
        DySWRMSimilarity,
        confusion_update,
        similarity_objective,
        swrm_loss,
        swrm_terms,
    )

    if device is None:
        device = (torch.device("cuda", torch.cuda.current_device())
                  if use_gpu and torch.cuda.is_available() else torch.device("cpu"))
    similarity = DySWRMSimilarity(init_coords).to(device)
    s = similarity.s
    C = s.shape[0]
    n = torch.as_tensor(np.asarray(counts), dtype=torch.float32, device=device)
    confusion = params.s_objective == "confusion"
    sums = torch.zeros(C, C, dtype=torch.float64, device=device)
    seen = torch.zeros(C, dtype=torch.float64, device=device)
    state: dict[str, Any] = {"affinity": None, "order": torch.argsort(s.detach()).tolist()}
    s_optimizer = torch.optim.Adam([s], lr=params.s_lr) if confusion else None
    records: dict[str, Any] = {"order_changes": 0}

    # With the confusion objective the loss sees s detached and s moves only between epochs,
    # so its windows, weights and margins are computed once per value of s, not per batch.
    cached: dict[str, Any] = {}

    def terms() -> tuple[torch.Tensor, torch.Tensor]:
        if not confusion:  # s trains through the loss: a fresh graph every batch
            return swrm_terms(n, similarity.standardised(), params)
        # s changes in place (its version counter moves) or by replacement (its storage):
        # checked without reading s back to the host on every batch.
        current = (s._version, s.data_ptr())
        if cached.get("s") != current:
            cached["s"] = current
            cached["terms"] = swrm_terms(n, similarity.standardised().detach(), params)
        return cached["terms"]

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch < start_epoch:
            return cross_entropy_loss(logits.float(), targets)
        if confusion:
            with torch.no_grad():  # the model's confusions, for the epoch's update of s
                probs = torch.softmax(logits.detach().double(), dim=1)
                sums.index_add_(0, targets, probs.to(sums.device))
                seen.index_add_(0, targets, torch.ones_like(targets, dtype=sums.dtype))
        w, m = terms()
        return swrm_loss(logits.float(), targets, w.to(logits.device), m.to(logits.device))

    def on_epoch_end(epoch: int, model: torch.nn.Module, stats: dict[str, float]) -> None:
        if epoch >= start_epoch and s_optimizer is not None:
            _all_reduce(sums, seen)
            mean_softmax = sums / seen.clamp_min(1.0)[:, None]
            state["affinity"] = confusion_update(state["affinity"], mean_softmax,
                                                 params.confusion_momentum)
            for _ in range(params.s_steps):
                s_optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(similarity_objective(s, state["affinity"].to(s.dtype)))
                s_optimizer.step()
            s.grad = None  # the loop's optimiser must not step s again
            sums.zero_()
            seen.zero_()
        order = torch.argsort(s.detach()).tolist()
        records["order_changes"] += int(order != state["order"])
        state["order"] = order
        with torch.no_grad():
            _, m = swrm_terms(n, similarity.standardised(), params)
        margins = m.abs() if params.margin_sign == "ldam" else m
        records.update(margin_mean=float(margins.mean()), margin_max=float(margins.max()))

    # What a resume needs besides s and the records: the affinity EMA, Adam's moments of s
    # and the class order the next epoch compares with.
    def state_dict() -> dict[str, Any]:
        return {"affinity": state["affinity"], "order": list(state["order"]),
                "s_optimizer": s_optimizer.state_dict() if s_optimizer is not None else None}

    def load_state_dict(saved: dict[str, Any]) -> None:
        affinity = saved["affinity"]
        state["affinity"] = None if affinity is None else affinity.to(device)
        state["order"] = list(saved["order"])
        if s_optimizer is not None:
            s_optimizer.load_state_dict(saved["s_optimizer"])

    return Plugins(loss=loss, on_epoch_end=on_epoch_end, parameters=(s,), records=records,
                   state_dict=state_dict, load_state_dict=load_state_dict)


def _all_reduce(*tensors: torch.Tensor) -> None:
    """Sum over the ranks of a data-parallel run (a no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _check_window(W: int, facts: DataFacts) -> None:
    if W > facts.num_classes:
        raise RecipeError(f"W={W} must be <= the number of classes C={facts.num_classes}")


def _tsne_settings(perplexity: float, learning_rate: float | None,
                   num_classes: int) -> dict[str, float]:
    from explore.methods.swrm import effective_perplexity, tsne_learning_rate

    lr = tsne_learning_rate(num_classes) if learning_rate is None else float(learning_rate)
    return {"tsne_perplexity": effective_perplexity(perplexity, num_classes),
            "tsne_learning_rate": lr}


def _coordinates(prototypes: np.ndarray, tsne: dict[str, float], seed: int) -> np.ndarray:
    from explore.methods.swrm import tsne_coordinates

    return tsne_coordinates(prototypes, seed, tsne["tsne_perplexity"], tsne["tsne_learning_rate"])


class SWRMRecipe(Recipe[SWRMTrialParams]):
    name = "swrm"
    params_type = SWRMTrialParams
    knobs = ("W", "beta", "components", "margin_sign")

    def limits(self, facts: DataFacts) -> dict[str, int]:
        return {"W": facts.num_classes}

    def check(self, params: SWRMTrialParams, facts: DataFacts) -> None:
        _check_window(params.W, facts)

    def fit_head(self, inputs: TrialInputs, params: SWRMTrialParams, seeds: Sequence[int]) -> Fit:
        from explore.training.head import seeded_linear, train_seeds

        data = head_data(inputs)
        tsne = _tsne_settings(params.tsne_perplexity, params.tsne_learning_rate, data.num_classes)
        protos = class_means(data.train[0], data.train[1], data.num_classes)

        def make(seed: int, rows: DeviceRows) -> tuple[torch.nn.Module, Plugins]:
            plugins = swrm_plugins(data.counts, _coordinates(protos, tsne, seed), params,
                                   device=inputs.device)
            return seeded_linear(data.d, data.num_classes, seed), plugins

        resolved = {**tsne, "prototypes": "class means of the training features"}
        return Fit(train_seeds(seeds, data, inputs.head, make, device=inputs.device), resolved)

    def full_plan(self, params: SWRMTrialParams, setup: FullSetup, seed: int) -> FullPlan:
        from explore.training.full import FullPlan

        counts, protos, tsne, start = _full_inputs(params, setup, params.tsne_perplexity,
                                                   params.tsne_learning_rate)
        plugins = functools.partial(swrm_plugins, counts, _coordinates(protos, tsne, seed),
                                    params, start)
        return FullPlan(setup.dataset.train, setup.dataset.num_classes, plugins,
                        {**tsne, "drw_start": start})


class DySWRMRecipe(Recipe[DySWRMTrialParams]):
    name = "dyswrm"
    params_type = DySWRMTrialParams
    knobs = ("W", "beta", "components", "margin_sign", "s_objective")

    def limits(self, facts: DataFacts) -> dict[str, int]:
        return {"W": facts.num_classes}

    def check(self, params: DySWRMTrialParams, facts: DataFacts) -> None:
        _check_window(params.W, facts)

    def _init(self, params: DySWRMTrialParams, protos: np.ndarray | None,
              tsne: dict[str, float], num_classes: int, seed: int) -> np.ndarray:
        from explore.methods.swrm import initial_similarity

        coords = _coordinates(protos, tsne, seed) if protos is not None else None
        return initial_similarity(num_classes, params.init, seed, coords)

    def fit_head(self, inputs: TrialInputs, params: DySWRMTrialParams,
                 seeds: Sequence[int]) -> Fit:
        from explore.training.head import seeded_linear, train_seeds

        data = head_data(inputs)
        tsne = _tsne_settings(params.tsne_perplexity, params.tsne_learning_rate, data.num_classes)
        protos = (class_means(data.train[0], data.train[1], data.num_classes)
                  if params.init == "tsne" else None)

        def make(seed: int, rows: DeviceRows) -> tuple[torch.nn.Module, Plugins]:
            init = self._init(params, protos, tsne, data.num_classes, seed)
            plugins = dyswrm_plugins(data.counts, init, params, device=inputs.device)
            return seeded_linear(data.d, data.num_classes, seed), plugins

        resolved: dict[str, Any] = {"init": params.init}
        if params.init == "tsne":
            resolved.update(tsne)
        return Fit(train_seeds(seeds, data, inputs.head, make, device=inputs.device), resolved)

    def full_plan(self, params: DySWRMTrialParams, setup: FullSetup, seed: int) -> FullPlan:
        from explore.training.full import FullPlan

        counts, protos, tsne, start = _full_inputs(params, setup, params.tsne_perplexity,
                                                   params.tsne_learning_rate)
        init = self._init(params, protos if params.init == "tsne" else None, tsne,
                          setup.dataset.num_classes, seed)
        plugins = functools.partial(dyswrm_plugins, counts, init, params, start,
                                    setup.backbone.use_gpu)
        return FullPlan(setup.dataset.train, setup.dataset.num_classes, plugins,
                        {"init": params.init, "drw_start": start})


def _full_inputs(params: SWRMTrialParams | DySWRMTrialParams, setup: FullSetup,
                 perplexity: float, learning_rate: float | None,
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, float], int]:
    """(training counts, CE-backbone prototypes, t-SNE settings, deferral start epoch)."""
    from explore.training.full import method_start

    L = setup.dataset.num_classes
    if params.W > L:
        raise RecipeError(f"W={params.W} must be <= the number of classes C={L}")
    start = method_start(params.drw_start, DRW_FRACTION, setup.backbone.epochs)
    train = setup.features.train
    protos = class_means(train.features, train.labels, L)
    return (setup.dataset.class_counts().astype(np.float64), protos,
            _tsne_settings(perplexity, learning_rate, L), start)
