"""Base recipes: each trains one linear classifier per seed on cached features.

Every base is a :class:`~explore.recipes._recipe.BaseRecipe` in the one registry
(``explore.recipes.RECIPES``), so each can be swept like any method (``method=tau_norm``),
be a training-time sweep's reference (``base=ce``) and be the classifier a post-hoc method
corrects (``base=lws`` under AlphaNet). The decoupling baselines (Kang et al. 2020;
docs/methods.md#baselines), balanced softmax (Ren et al. 2020) and logit adjustment (Menon
et al. 2021):

* ``ce``: the linear classifier trained with plain instance sampling.
* ``crt``: a fresh linear classifier trained with class-balanced sampling.
* ``lws``: the CE classifier frozen, a per-class scale ``s_c`` of its logits learned
  with class-balanced sampling: ``s_c · (f·w_c + b_c)`` (the bias scaled with its row).
* ``tau_norm``: the CE classifier's rows ``w_c / ‖w_c‖^τ`` (knob ``tau``).
* ``ncm``: nearest class mean, written as a linear classifier (knob ``metric``).
* ``logit_adjustment``: trained on ``z + τ·log π``; predicts with ``z`` (knob ``tau``).
* ``balanced_softmax``: logit adjustment at τ = 1 (the same loss function).

The ``base`` config group (:class:`BaseSpec`) selects one of them with its params; the
training settings are the shared ``head`` group's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.classifier import LinearClassifier
from explore.methods.params import LogitAdjustmentParams, NCMParams, TauNormParams
from explore.methods.prototypes import class_means
from explore.plugins import LossFn, Plugins, SampleFn
from explore.recipes._recipe import BaseRecipe, RecipeError, ReferenceRecipe, Splits, cpu_unless
from explore.training.head_config import HeadTrainConfig

if TYPE_CHECKING:  # torch is imported where a base trains, not to declare one
    import torch
    from torch import nn

__all__ = ["BalancedSoftmaxRecipe", "BaseSpec", "CERecipe", "CRTRecipe", "LWSRecipe",
           "LogitAdjustmentRecipe", "NCMRecipe", "NoParams", "TauNormRecipe",
           "TauNormTrialParams", "logit_adjusted_loss", "train_base"]


@dataclass(frozen=True)
class NoParams:
    """A base with nothing to set beyond its training (the shared ``head`` group)."""


@dataclass(frozen=True)
class TauNormTrialParams(TauNormParams):
    """τ (the knob) and whether the normalised classifier keeps the CE biases."""

    keep_bias: bool = False
    """False (default): predict with the normalised rows and no bias, as Kang et al.'s
    τ-normalisation does; True: keep the CE classifier's biases unchanged."""


def _to_classifier(head: nn.Module) -> LinearClassifier:
    from torch import nn

    assert isinstance(head, nn.Linear)
    return LinearClassifier(head.weight.detach().cpu().numpy().copy(),
                            head.bias.detach().cpu().numpy().copy())


def _balanced_sampler(num_classes: int) -> SampleFn:
    from explore.methods.baselines import class_balanced_indices

    def balanced(labels: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return class_balanced_indices(labels, num_classes, len(labels), rng)

    return balanced


def _linear(splits: Splits, num_classes: int, head: HeadTrainConfig, seeds: Sequence[int],
            device: torch.device, plugins: Plugins | None = None) -> list[LinearClassifier]:
    """A fresh linear classifier per seed (initialised from it) trained with ``plugins``."""
    from explore.training.head import fit_heads, seeded_linear

    models = [seeded_linear(splits["train"][0].shape[1], num_classes, seed) for seed in seeds]
    fits = fit_heads(models, splits["train"], splits.get("val"), head, seeds=seeds,
                     plugins=[plugins or Plugins()] * len(seeds), device=device)
    return [_to_classifier(fit.model) for fit in fits]


def _train_ce(splits: Splits, num_classes: int, head: HeadTrainConfig, seeds: Sequence[int],
              device: torch.device) -> list[LinearClassifier]:
    return _linear(splits, num_classes, head, seeds, device)


class CERecipe(BaseRecipe[NoParams]):
    """The linear classifier trained with plain CE and instance sampling."""

    name = "ce"
    params_type = NoParams
    knobs = ()

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: NoParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        return _train_ce(splits, num_classes, head, seeds, cpu_unless(device))


class CRTRecipe(BaseRecipe[NoParams]):
    """cRT: a fresh linear classifier trained with class-balanced sampling."""

    name = "crt"
    params_type = NoParams
    knobs = ()

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: NoParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        return _linear(splits, num_classes, head, seeds, cpu_unless(device),
                       Plugins(sample_indices=_balanced_sampler(num_classes)))


class LWSRecipe(BaseRecipe[NoParams]):
    """LWS: train CE, freeze it, learn per-class scales with class-balanced sampling.

    Both stages use the ``head`` settings, except that the scales get no weight decay: decay
    would pull every scale toward 0 alike, which only cools the softmax and is not the
    per-class correction LWS learns. Returned as ``(s_c·w_c, s_c·b_c)``.
    """

    name = "lws"
    params_type = NoParams
    knobs = ()

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: NoParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        from explore.methods.baselines import ScaledClassifier
        from explore.training.head import fit_heads

        device = cpu_unless(device)
        ces = _train_ce(splits, num_classes, head, seeds, device)
        models = [ScaledClassifier(ce.weight, ce.bias) for ce in ces]
        fit_heads(models, splits["train"], splits.get("val"),
                  dataclasses.replace(head, weight_decay=0.0), seeds=seeds,
                  plugins=[Plugins(sample_indices=_balanced_sampler(num_classes))] * len(seeds),
                  device=device)
        out = []
        for ce, model in zip(ces, models):
            s = model.scales.detach().cpu().numpy().astype(np.float32)
            out.append(LinearClassifier(ce.weight * s[:, None], ce.bias * s))
        return out


class TauNormRecipe(BaseRecipe[TauNormTrialParams]):
    """τ-normalised CE classifier: rows ``w_c / ‖w_c‖^τ`` (bias dropped unless ``keep_bias``)."""

    name = "tau_norm"
    params_type = TauNormTrialParams
    knobs = ("tau",)

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: TauNormTrialParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        from explore.methods.baselines import tau_normalize

        out = []
        for ce in _train_ce(splits, num_classes, head, seeds, cpu_unless(device)):
            weight = tau_normalize(ce.weight.astype(np.float64), params.tau)
            out.append(LinearClassifier(weight, ce.bias.copy() if params.keep_bias
                                        else np.zeros_like(ce.bias)))
        return out


class NCMRecipe(BaseRecipe[NCMParams]):
    """Nearest class mean as a linear classifier (nothing is trained; ``head`` and the seed
    are unused).

    Euclidean: ``−‖f − μ_c‖² = 2 f·μ_c − ‖μ_c‖² − ‖f‖²``; the last term is the same for
    every class of a sample, so ``W = 2μ``, ``b = −‖μ‖²`` ranks classes exactly as the
    distance does (logits differ from ``−‖f − μ_c‖²`` by ``‖f‖²`` per sample). Cosine:
    ``cos(f, μ_c) = f·μ̂_c / ‖f‖``; ``1/‖f‖`` is a positive per-sample factor, so ``W = μ̂``,
    ``b = 0`` ranks classes as the cosine does.
    """

    name = "ncm"
    params_type = NCMParams
    knobs = ("metric",)

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: NCMParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        x, y = splits["train"]
        means = class_means(x, y, num_classes)  # C×d float64
        if params.metric == "euclidean":
            ncm = LinearClassifier(2.0 * means, -(means**2).sum(axis=1))
        else:
            norms = np.linalg.norm(means, axis=1, keepdims=True)
            ncm = LinearClassifier(means / np.maximum(norms, 1e-12), np.zeros(num_classes))
        return [ncm] * len(seeds)  # nothing is seeded


def logit_adjusted_loss(counts: np.ndarray, tau: float = 1.0,
                        device: torch.device | None = None) -> LossFn:
    """Per-sample cross-entropy of the logit-adjusted logits ``z + τ·log π`` (τ = 1:
    balanced softmax), for logits on ``device`` (None: the CPU)."""
    import torch
    import torch.nn.functional as F

    from explore.methods.baselines import logit_adjusted_logits

    n = torch.as_tensor(counts, dtype=torch.float32, device=cpu_unless(device))

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logit_adjusted_logits(logits, n, tau), targets, reduction="none")

    return loss


def _train_logit_adjusted(name: str, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          tau: float, seeds: Sequence[int],
                          device: torch.device) -> list[LinearClassifier]:
    counts = np.bincount(splits["train"][1], minlength=num_classes)
    if (counts == 0).any():
        raise RecipeError(f"{name}: classes {np.flatnonzero(counts == 0).tolist()} have no "
                          "training samples (log π_c is undefined)")
    return _linear(splits, num_classes, head, seeds, device,
                   Plugins(loss=logit_adjusted_loss(counts, tau, device)))


class LogitAdjustmentRecipe(BaseRecipe[LogitAdjustmentParams]):
    """Logit adjustment, loss form (Menon et al. 2021): the linear classifier trained on
    ``z + τ·log π_c`` with instance sampling; the returned classifier is the learned one,
    *without* the prior shift (it exists only in the training loss)."""

    name = "logit_adjustment"
    params_type = LogitAdjustmentParams
    knobs = ("tau",)

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: LogitAdjustmentParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        return _train_logit_adjusted(self.name, splits, num_classes, head, params.tau, seeds,
                                     cpu_unless(device))


class BalancedSoftmaxRecipe(BaseRecipe[NoParams]):
    """Balanced softmax / BalCE (Ren et al. 2020): logit adjustment at τ = 1."""

    name = "balanced_softmax"
    params_type = NoParams
    knobs = ()

    def train_classifiers(self, splits: Splits, num_classes: int, head: HeadTrainConfig,
                          params: NoParams, seeds: Sequence[int],
                          device: torch.device | None = None) -> list[LinearClassifier]:
        return _train_logit_adjusted(self.name, splits, num_classes, head, 1.0, seeds,
                                     cpu_unless(device))


@dataclass(frozen=True)
class BaseSpec:
    """The ``base`` group: which base recipe, its params, and how it trains."""

    name: str = "crt"
    train: HeadTrainConfig = HeadTrainConfig()
    settings: Any = field(default=None)
    """The base recipe's params (an instance of its ``params_type``); None = its defaults."""

    def __post_init__(self) -> None:
        recipe = _base_recipe(self.name)
        if self.settings is None:
            object.__setattr__(self, "settings", recipe.params({}))
        elif not isinstance(self.settings, recipe.params_type):
            raise ValueError(f"base {self.name}: settings must be a {recipe.params_type.__name__}, "
                             f"got {type(self.settings).__name__}")

    @property
    def recipe(self) -> BaseRecipe[Any]:
        return _base_recipe(self.name)

    def reference(self) -> ReferenceRecipe:
        return ReferenceRecipe(self.name, self.recipe, self.settings)

    @classmethod
    def from_mapping(cls, values: dict[str, Any],
                     train: HeadTrainConfig | None = None) -> BaseSpec:
        """``{"name": ..., <the base's own params>}`` (the ``base`` group) → spec; it trains
        with ``train`` (the sweep's ``head`` group)."""
        values = dict(values)
        name = values.pop("name", "crt")
        recipe = _base_recipe(name)
        own_names = {f.name for f in dataclasses.fields(recipe.params_type)}
        unknown = sorted(set(values) - own_names)
        if unknown:
            hint = (" (training settings live in the shared `head` group, e.g. head.epochs=10)"
                    if set(unknown) & {f.name for f in dataclasses.fields(HeadTrainConfig)} else "")
            raise ValueError(f"base {name}: unknown setting(s) {unknown}; allowed: "
                             f"{', '.join(sorted(own_names)) or 'none'}{hint}")
        return cls(name, train or HeadTrainConfig(), recipe.params(values))

    def cache_spec(self) -> dict[str, Any]:
        """Everything the trained base depends on besides features and seed: use it in
        the base model's cache key (two τ values must not share one cached classifier)."""
        return classifier_cache_spec(self.name, self.train, self.settings)


def classifier_cache_spec(name: str, train: HeadTrainConfig, params: Any) -> dict[str, Any]:
    """What a base recipe's classifier depends on besides features and seed."""
    # seeds_stacked is how, not what: the same classifier either way (within rounding).
    settings = {k: v for k, v in dataclasses.asdict(train).items() if k != "seeds_stacked"}
    return {"base": name, "train": settings, "settings": dataclasses.asdict(params)}


def _base_recipe(name: str) -> BaseRecipe[Any]:
    from explore.recipes import RECIPES  # the registry imports this module

    recipe = RECIPES.get(name)
    if not isinstance(recipe, BaseRecipe):
        known = sorted(n for n, r in RECIPES.items() if isinstance(r, BaseRecipe))
        raise ValueError(f"unknown base {name!r}; known bases: {', '.join(known)}")
    return recipe


def train_base(spec: BaseSpec, splits: Splits, num_classes: int, seed: int) -> LinearClassifier:
    """The ``base`` group's classifier for one seed."""
    return spec.recipe.train_classifier(splits, num_classes, spec.train, spec.settings, seed)
