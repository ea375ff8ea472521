"""Base models on cached features: the linear classifiers post-hoc methods correct.

Every base is a ``LinearClassifier`` (W, b), so any of them can be AlphaNet's base
(``base=lws``) and every sweep can report it as the reference row. The decoupling
baselines (Kang et al. 2020; docs/methods.md#baselines) and balanced softmax (Ren et
al. 2020):

* ``ce``: the linear classifier trained with plain instance sampling.
* ``crt``: a fresh linear classifier trained with class-balanced sampling.
* ``lws``: the CE classifier frozen, a per-class scale ``s_c`` of its logits learned
  with class-balanced sampling: ``s_c · (f·w_c + b_c)`` (the bias scaled with its row).
* ``tau_norm``: the CE classifier's rows ``w_c / ‖w_c‖^τ`` (τ a base setting).
* ``ncm``: nearest class mean, written as a linear classifier (see :func:`train_ncm`).
* ``balanced_softmax``: trained on ``z + log n_c``; predicts with ``z``.

A base's own settings (``tau`` of ``tau_norm``, ``metric`` of ``ncm``) sit beside the
training settings in the ``base`` config group; :meth:`BaseSpec.from_mapping` sorts them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explore.methods.baselines import (
    NCMParams,
    TauNormParams,
    balanced_softmax_logits,
    class_balanced_indices,
    tau_normalize,
)
from explore.methods.prototypes import class_means
from explore.plugins import LossFn, Plugins, SampleFn
from explore.training.head import HeadTrainConfig, fit_head
from explore.training.posthoc import LinearClassifier

__all__ = ["BASES", "BaseDef", "BaseSpec", "NCMSettings", "NoSettings", "TauNormSettings",
           "balanced_softmax_loss", "train_base", "train_ce", "train_crt"]

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class NoSettings:
    """A base with nothing to set beyond its training."""


@dataclass(frozen=True)
class TauNormSettings:
    """Settings of the τ-normalised classifier."""

    tau: float = 1.0
    """Exponent of the row norm (0 = the CE classifier, 1 = unit-norm rows); Kang et
    al. pick it on validation data from [0, 1]."""
    keep_bias: bool = False
    """False (default): predict with the normalised rows and no bias, as Kang et al.'s
    τ-normalisation does; True: keep the CE classifier's biases unchanged."""

    def __post_init__(self) -> None:
        TauNormParams(self.tau)  # validates tau


@dataclass(frozen=True)
class NCMSettings:
    """Settings of the nearest-class-mean classifier."""

    metric: Literal["euclidean", "cosine"] = "euclidean"
    """Distance to the class means (see :func:`train_ncm`)."""

    def __post_init__(self) -> None:
        NCMParams(self.metric)  # validates metric


@dataclass(frozen=True)
class BaseDef:
    """One base: how it trains, and the dataclass of its own settings."""

    train: Callable[[Splits, int, HeadTrainConfig, Any, int], LinearClassifier]
    settings: type = NoSettings


@dataclass(frozen=True)
class BaseSpec:
    """Which base model, how it is trained, and its own settings (the ``base`` group)."""

    name: str = "crt"
    train: HeadTrainConfig = HeadTrainConfig()
    settings: Any = field(default=None)
    """An instance of the base's settings dataclass (``BASES[name].settings``); None =
    its defaults."""

    def __post_init__(self) -> None:
        if self.name not in BASES:
            raise ValueError(f"unknown base {self.name!r}; known bases: {', '.join(sorted(BASES))}")
        kind = BASES[self.name].settings
        if self.settings is None:
            object.__setattr__(self, "settings", kind())
        elif not isinstance(self.settings, kind):
            raise ValueError(f"base {self.name}: settings must be a {kind.__name__}, "
                             f"got {type(self.settings).__name__}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any],
                     train: HeadTrainConfig | None = None) -> BaseSpec:
        """``{"name": ..., <the base's own settings>}`` (the ``base`` group) → spec; it trains
        with ``train`` (the sweep's ``head`` group)."""
        values = dict(values)
        name = values.pop("name", "crt")
        if name not in BASES:
            raise ValueError(f"unknown base {name!r}; known bases: {', '.join(sorted(BASES))}")
        own_names = {f.name for f in fields(BASES[name].settings)}
        unknown = sorted(set(values) - own_names)
        if unknown:
            hint = (" (training settings live in the shared `head` group, e.g. head.epochs=10)"
                    if set(unknown) & {f.name for f in fields(HeadTrainConfig)} else "")
            raise ValueError(f"base {name}: unknown setting(s) {unknown}; allowed: "
                             f"{', '.join(sorted(own_names)) or 'none'}{hint}")
        own = BASES[name].settings(**values)
        return cls(name, train or HeadTrainConfig(), own)

    def cache_spec(self) -> dict[str, Any]:
        """Everything the trained base depends on besides features and seed: use it in
        the base model's cache key (two τ values must not share one cached classifier)."""
        return {"base": self.name, "train": dataclasses.asdict(self.train),
                "settings": dataclasses.asdict(self.settings)}


def _linear_head(splits: Splits, num_classes: int) -> nn.Linear:
    return nn.Linear(splits["train"][0].shape[1], num_classes)


def _to_classifier(head: nn.Linear) -> LinearClassifier:
    return LinearClassifier(
        head.weight.detach().numpy().astype(np.float32).copy(),
        head.bias.detach().numpy().astype(np.float32).copy(),
    )


def _balanced_sampler(num_classes: int) -> SampleFn:
    def balanced(labels: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return class_balanced_indices(labels, num_classes, len(labels), rng)

    return balanced


def train_ce(splits: Splits, num_classes: int, cfg: HeadTrainConfig, seed: int) -> LinearClassifier:
    torch.manual_seed(seed)
    head = _linear_head(splits, num_classes)
    fit = fit_head(head, splits["train"], splits.get("val"), cfg, seed=seed)
    return _to_classifier(fit.model)  # type: ignore[arg-type]


def train_crt(splits: Splits, num_classes: int, cfg: HeadTrainConfig, seed: int) -> LinearClassifier:
    """cRT: a fresh linear classifier trained with class-balanced sampling."""
    torch.manual_seed(seed)
    head = _linear_head(splits, num_classes)
    fit = fit_head(head, splits["train"], splits.get("val"), cfg, seed=seed,
                   plugins=Plugins(sample_indices=_balanced_sampler(num_classes)))
    return _to_classifier(fit.model)  # type: ignore[arg-type]


class _ScaledClassifier(nn.Module):
    """LWS: a frozen linear classifier whose logits are scaled per class, ``s_c·(f·w_c + b_c)``."""

    def __init__(self, classifier: LinearClassifier) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(classifier.weight.copy()))
        self.register_buffer("bias", torch.from_numpy(classifier.bias.copy()))
        self.scales = nn.Parameter(torch.ones(len(classifier.bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.get_buffer("weight"), self.get_buffer("bias")
        return (x @ weight.T + bias) * self.scales


def train_lws(splits: Splits, num_classes: int, cfg: HeadTrainConfig, seed: int) -> LinearClassifier:
    """LWS: train CE, freeze it, learn per-class scales with class-balanced sampling.

    Both stages use ``cfg``, except that the scales get no weight decay: decay would
    pull every scale toward 0 alike, which only cools the softmax and is not the
    per-class correction LWS learns. Returned as ``(s_c·w_c, s_c·b_c)``.
    """
    ce = train_ce(splits, num_classes, cfg, seed)
    model = _ScaledClassifier(ce)
    fit_head(model, splits["train"], splits.get("val"), dataclasses.replace(cfg, weight_decay=0.0),
             seed=seed, plugins=Plugins(sample_indices=_balanced_sampler(num_classes)))
    s = model.scales.detach().numpy().astype(np.float32)
    return LinearClassifier((ce.weight * s[:, None]).astype(np.float32), (ce.bias * s).astype(np.float32))


def train_tau_norm(splits: Splits, num_classes: int, cfg: HeadTrainConfig, settings: TauNormSettings,
                   seed: int) -> LinearClassifier:
    """τ-normalised CE classifier: rows ``w_c / ‖w_c‖^τ`` (bias dropped unless ``keep_bias``)."""
    ce = train_ce(splits, num_classes, cfg, seed)
    weight = tau_normalize(ce.weight.astype(np.float64), settings.tau).astype(np.float32)
    bias = ce.bias.copy() if settings.keep_bias else np.zeros_like(ce.bias)
    return LinearClassifier(weight, bias)


def train_ncm(splits: Splits, num_classes: int, cfg: HeadTrainConfig, settings: NCMSettings,
              seed: int) -> LinearClassifier:
    """Nearest class mean as a linear classifier (no training; ``cfg`` and ``seed`` unused).

    Euclidean: ``−‖f − μ_c‖² = 2 f·μ_c − ‖μ_c‖² − ‖f‖²``; the last term is the same
    for every class of a sample, so ``W = 2μ``, ``b = −‖μ‖²`` ranks classes exactly as
    the distance does (logits differ from ``−‖f − μ_c‖²`` by ``‖f‖²`` per sample).
    Cosine: ``cos(f, μ_c) = f·μ̂_c / ‖f‖``; ``1/‖f‖`` is a positive per-sample factor, so
    ``W = μ̂``, ``b = 0`` ranks classes as the cosine does.
    """
    x, y = splits["train"]
    means = class_means(x, y, num_classes)  # C×d float64
    if settings.metric == "euclidean":
        weight, bias = 2.0 * means, -(means**2).sum(axis=1)
    else:
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        weight, bias = means / np.maximum(norms, 1e-12), np.zeros(num_classes)
    return LinearClassifier(weight.astype(np.float32), bias.astype(np.float32))


def balanced_softmax_loss(counts: np.ndarray) -> LossFn:
    """Per-sample balanced softmax CE: cross-entropy of ``z + log n``."""
    n = torch.as_tensor(counts, dtype=torch.float32)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(balanced_softmax_logits(logits, n), targets, reduction="none")

    return loss


def train_balanced_softmax(splits: Splits, num_classes: int, cfg: HeadTrainConfig,
                           seed: int) -> LinearClassifier:
    """Balanced softmax: train the linear classifier on ``z + log n_c`` with instance
    sampling; the returned classifier's bias is the learned one, *without* ``log n``
    (the prior shift exists only in the training loss)."""
    counts = np.bincount(splits["train"][1], minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"balanced_softmax: classes {np.flatnonzero(counts == 0).tolist()} have no "
                         "training samples (log n_c is undefined)")
    torch.manual_seed(seed)
    head = _linear_head(splits, num_classes)
    fit = fit_head(head, splits["train"], splits.get("val"), cfg, seed=seed,
                   plugins=Plugins(loss=balanced_softmax_loss(counts)))
    return _to_classifier(fit.model)  # type: ignore[arg-type]


def _plain(fn: Callable[[Splits, int, HeadTrainConfig, int], LinearClassifier]) -> Callable[..., LinearClassifier]:
    def train(splits: Splits, num_classes: int, cfg: HeadTrainConfig, _settings: Any, seed: int) -> LinearClassifier:
        return fn(splits, num_classes, cfg, seed)

    return train


BASES: dict[str, BaseDef] = {
    "crt": BaseDef(_plain(train_crt)),
    "ce": BaseDef(_plain(train_ce)),
    "lws": BaseDef(_plain(train_lws)),
    "tau_norm": BaseDef(train_tau_norm, TauNormSettings),
    "ncm": BaseDef(train_ncm, NCMSettings),
    "balanced_softmax": BaseDef(_plain(train_balanced_softmax)),
}


def train_base(spec: BaseSpec, splits: Splits, num_classes: int, seed: int) -> LinearClassifier:
    return BASES[spec.name].train(splits, num_classes, spec.train, spec.settings, seed)
