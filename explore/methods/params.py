"""The methods' parameters: each method's knobs and settings as a frozen dataclass that
validates itself, with the checks the maths shares. Plain data (numpy, no torch), so that
a sweep's driver can build and check a trial's params without importing torch; the maths
modules beside this one import their params from here (and export them).

Each section belongs to the method module of the same name (``alphanet``, ``baselines``,
``lfm``, ``neighbor_silencing``, ``swrm``); the paper references are there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "PAPER_AUX_BASE_COUNT",
    "AlphaNetParams",
    "Components",
    "Distance",
    "DySWRMParams",
    "LFMParams",
    "LogitAdjustmentParams",
    "MarginSign",
    "NCMParams",
    "NSParams",
    "SWRMParams",
    "TauNormParams",
    "WindowParams",
    "check_beta",
    "check_lambda_s",
    "check_lfm_alpha",
    "check_lfm_tau",
    "check_nonnegative_tau",
    "check_window",
]


# ---------------------------------------------------------------------------------------------
# alphanet
# ---------------------------------------------------------------------------------------------

Distance = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class AlphaNetParams:
    """AlphaNet's knobs and training settings (defaults: the reference code)."""

    k: int = 5
    """Number of nearest base classes combined into each few-class classifier."""
    distance: Distance = "euclidean"
    """Distance between class-mean features used to find the neighbours."""
    rho: float = 0.5
    """Base samples per few sample in each epoch: floor(rho·F) are drawn."""
    neighbors: Literal["nearest", "random"] = "nearest"
    """'random' is the paper's control: k random base classes."""
    learn_bias: bool = False
    """Learn new few-class biases (paper) instead of keeping the base model's (code)."""
    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_step_epochs: int = 10
    """The learning rate is multiplied by ``lr_gamma`` every this many epochs."""
    lr_gamma: float = 0.1
    hidden: int = 32
    select_from_epoch: int = 5
    """Model selection ignores epochs before this one (1-based)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"alphanet: k={self.k} must be >= 1 (sweeps start at 2: with k=1 nothing is learned)")
        if self.distance not in ("euclidean", "cosine"):
            raise ValueError(f"alphanet: distance={self.distance!r} must be 'euclidean' or 'cosine'")
        if not self.rho > 0:
            raise ValueError(f"alphanet: rho={self.rho} must be > 0")
        if self.neighbors not in ("nearest", "random"):
            raise ValueError(f"alphanet: neighbors={self.neighbors!r} must be 'nearest' or 'random'")
        for name in ("epochs", "batch_size", "hidden", "lr_step_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"alphanet: {name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError("alphanet: lr must be > 0 and weight_decay >= 0")

    def check_against(self, num_base_classes: int) -> None:
        """Knobs that depend on the data: k cannot exceed the number of base classes."""
        if self.k > num_base_classes:
            raise ValueError(
                f"alphanet: k={self.k} is larger than the {num_base_classes} base (many+medium) "
                f"classes of this dataset; use k <= {num_base_classes}"
            )


# ---------------------------------------------------------------------------------------------
# baselines (τ-norm, NCM, logit adjustment)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TauNormParams:
    """Knobs of the τ-normalised classifier."""

    tau: float = 1.0
    """Exponent of the row norm; 0 = the unchanged classifier, 1 = unit-norm rows.
    Kang et al. pick τ on a validation set from a grid in [0, 1]."""

    def __post_init__(self) -> None:
        check_nonnegative_tau(self.tau)


@dataclass(frozen=True)
class NCMParams:
    """Knobs of the nearest-class-mean classifier."""

    metric: Literal["euclidean", "cosine"] = "euclidean"
    """Distance to the class means: logits are −‖f − μ_c‖₂ or cos(f, μ_c)."""

    def __post_init__(self) -> None:
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")


@dataclass(frozen=True)
class LogitAdjustmentParams:
    """Knobs of the logit-adjusted loss."""

    tau: float = 1.0
    """Strength of the prior shift ``τ·log π``; 1 is balanced softmax (and Menon et al.'s
    default), 0 plain CE."""

    def __post_init__(self) -> None:
        check_nonnegative_tau(self.tau)


def check_nonnegative_tau(tau: float) -> None:
    if not (np.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")


# ---------------------------------------------------------------------------------------------
# lfm
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LFMParams:
    """Knobs of LFM (local sampling, label-shifted mixup, text-feature classifier)."""

    alpha: float = 1.0
    """Label-shift strength α ≥ 0 (paper 1; Places-LT 1.25/1.5; sweep [0, 2])."""
    tau: float = 0.05
    """Temperature τ > 0 of the class-pair distribution (paper 0.05; Places-LT 1.0;
    sweep {0.002, 0.01, 0.05, 0.25, 1.25, 31.25}). Small τ pairs near classes."""
    beta_param: float = 0.5
    """λ_x ~ Beta(a, a). Paper 0.5; the reference code now uses 0.2."""
    lambda_per_batch: bool = True
    """One λ_x per batch (reference code) rather than one per sample."""
    logit_scale: float = 30.0
    """Scale of the cosine logits. The reference code uses raw cosines (1), which works
    only with CLIP's aligned features; on other backbones' features scale-1 logits cannot
    separate many classes (docs/methods.md#lfm-logit-scale). Unused with MMS."""
    mms: bool = False
    """Use the MMS loss on the raw cosines, ``CE((z + margin·D[y, :]) / temperature, y)``
    (the paper's best variant; :func:`mms_loss`)."""
    mms_margin: float = 0.3
    """MMS margin factor on the text distance D."""
    mms_temperature: float = 0.01
    """MMS temperature dividing the logits."""
    prompt: str = "a photo of a {}"
    """Prompt template for the class-name text features."""

    def __post_init__(self) -> None:
        check_lfm_alpha(self.alpha)
        check_lfm_tau(self.tau)
        if not self.beta_param > 0:
            raise ValueError(f"beta_param must be > 0, got {self.beta_param}")
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        if not self.mms_margin >= 0:
            raise ValueError(f"mms_margin must be >= 0, got {self.mms_margin}")
        if not self.mms_temperature > 0:
            raise ValueError(f"mms_temperature must be > 0, got {self.mms_temperature}")
        if self.prompt.count("{}") != 1:
            raise ValueError(f"prompt must contain exactly one '{{}}', got {self.prompt!r}")


def check_lfm_alpha(alpha: float) -> None:
    if not (math.isfinite(float(alpha)) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")


def check_lfm_tau(tau: float) -> None:
    if not (math.isfinite(float(tau)) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")


# ---------------------------------------------------------------------------------------------
# neighbor_silencing
# ---------------------------------------------------------------------------------------------

PAPER_AUX_BASE_COUNT = 5
"""The paper's auxiliary classes per head target."""


@dataclass(frozen=True)
class NSParams:
    """Knobs of the neighbor-silencing method."""

    lambda_s: float = 0.1
    """Weight of neighbour pairs in the loss, in (0, 1]. Paper default 0.1; ablation
    {0.01, 0.1, 0.2, 0.3, 0.5, 1.0}; 1 is plain balanced softmax CE."""
    aux_per_class_cap: int = 50
    """At most this many samples of each auxiliary class per epoch (paper: 50)."""
    aux_base_count: int | None = PAPER_AUX_BASE_COUNT
    """Auxiliary classes per *head* target; medium and tail targets get this times
    ⌈N_h/N_m⌉ and ⌈N_h/N_t⌉ (paper's ablation default: 5 per target). None: resolved from
    the auxiliary pool by :func:`fitting_base_count` (the bundled config's choice)."""
    max_aux_per_target: int | None = None
    """Optional cap on auxiliary classes per target (the tail ratio can be large);
    None = no cap."""
    neighbor_source: str = "text"
    """How neighbours are found when no map is given: "text" (cosine similarity of
    class-name text embeddings) or "prototype" (of class-mean features)."""
    ratio_by: str = "classes"
    """What N_h, N_m, N_t of the head : medium : tail ratio count: "classes" per split
    (our resolution: it gives the paper's stated 1:1:3 on ImageNet-LT) or "samples" (the
    paper's text: the split's training samples)."""

    def __post_init__(self) -> None:
        check_lambda_s(self.lambda_s)
        if self.aux_per_class_cap < 1:
            raise ValueError(f"aux_per_class_cap must be >= 1, got {self.aux_per_class_cap}")
        if self.aux_base_count is not None and self.aux_base_count < 0:
            raise ValueError(f"aux_base_count must be >= 0 or None, got {self.aux_base_count}")
        if self.max_aux_per_target is not None and self.max_aux_per_target < 0:
            raise ValueError(
                f"max_aux_per_target must be >= 0 or None, got {self.max_aux_per_target}"
            )
        if self.ratio_by not in ("classes", "samples"):
            raise ValueError(f"ratio_by must be 'classes' or 'samples', got {self.ratio_by!r}")
        if self.neighbor_source not in ("text", "prototype"):
            raise ValueError(
                f"neighbor_source must be 'text' or 'prototype', got {self.neighbor_source!r}"
            )


def check_lambda_s(lambda_s: float) -> None:
    if not (0.0 < float(lambda_s) <= 1.0):
        raise ValueError(f"lambda_s must be in (0, 1], got {lambda_s!r}")


# ---------------------------------------------------------------------------------------------
# swrm (SWRM and DySWRM)
# ---------------------------------------------------------------------------------------------

Components = Literal["swrm", "swr", "swm", "none"]
MarginSign = Literal["paper", "ldam"]


@dataclass(frozen=True)
class WindowParams:
    """What SWRM and DySWRM share: the window, the margin sensitivity and the ablations."""

    W: int = 15
    """Window size: classes (c included) whose counts and similarity shape w_c, m_c.
    Paper: 15 (CIFAR-100-LT), 30 (ImageNet-LT), 40 (Places-LT); sweep 2..100. Must be
    ≤ C, which is checked when the weights are computed."""
    beta: float = 1.0
    """Sensitivity of the margin to similarity (eq. 3); 0 turns margins off. Paper: 1
    (CIFAR-100-LT), 10 (ImageNet-LT, Places-LT); sweep 0..10."""
    components: Components = "swrm"
    """The paper's Table 5 ablation: swrm (weights and margins), swr (weights only, every
    margin 0), swm (margins only, every weight 1); none (both off: plain CE, a control)."""
    margin_sign: MarginSign = "paper"
    """paper: the margin is added to the target logit (eq. 4 as printed); ldam: subtracted,
    as LDAM does."""

    def __post_init__(self) -> None:
        check_window(self.W)
        check_beta(self.beta)
        if self.components not in ("swrm", "swr", "swm", "none"):
            raise ValueError(f"components must be swrm, swr, swm or none, got {self.components!r}")
        if self.margin_sign not in ("paper", "ldam"):
            raise ValueError(f"margin_sign must be 'paper' or 'ldam', got {self.margin_sign!r}")


@dataclass(frozen=True)
class SWRMParams(WindowParams):
    """Knobs of SWRM (t-SNE similarity coordinates, fixed weights and margins)."""

    tsne_perplexity: float = 30.0
    """t-SNE perplexity for the 1-D projection of the C prototypes; capped at (C − 1)/3
    (:func:`effective_perplexity`: near C − 1 the embedding collapses to a point)."""
    tsne_learning_rate: float | None = None
    """t-SNE learning rate; None = :func:`tsne_learning_rate` (C/8, capped at 50)."""

    def __post_init__(self) -> None:
        WindowParams.__post_init__(self)
        if not self.tsne_perplexity > 0:
            raise ValueError(f"tsne_perplexity must be > 0, got {self.tsne_perplexity}")
        if self.tsne_learning_rate is not None and not self.tsne_learning_rate > 0:
            raise ValueError(
                f"tsne_learning_rate must be > 0 or None, got {self.tsne_learning_rate}"
            )


@dataclass(frozen=True)
class DySWRMParams(WindowParams):
    """Knobs of DySWRM (a learnable similarity vector instead of t-SNE coordinates)."""

    init: Literal["random", "tsne"] = "random"
    """Initial similarity vector. "random": seeded standard normal draws (the paper's
    point is to avoid pretraining a CE model, and it does not state an init);
    "tsne": the SWRM t-SNE coordinates of CE prototypes (a warm start)."""
    s_objective: Literal["confusion", "loss"] = "confusion"
    """What trains ``s``. confusion (our resolution): weights and margins use ``s``
    detached, and ``s`` minimises :func:`similarity_objective` on the EMA of the model's
    confusions after every epoch. loss (the literal reading): ``s`` is trained through
    eq. (4) with the model — its margins only ever grow (docs/methods.md#dyswrm)."""
    s_steps: int = 20
    """confusion: Adam steps on ``s`` after each epoch."""
    s_lr: float = 0.05
    """confusion: learning rate of those steps."""
    confusion_momentum: float = 0.9
    """confusion: EMA momentum (per epoch) of the per-class mean softmax."""

    def __post_init__(self) -> None:
        WindowParams.__post_init__(self)
        if self.init not in ("random", "tsne"):
            raise ValueError(f"init must be 'random' or 'tsne', got {self.init!r}")
        if self.s_objective not in ("confusion", "loss"):
            raise ValueError(f"s_objective must be 'confusion' or 'loss', got {self.s_objective!r}")
        if self.s_steps < 0 or not self.s_lr > 0 or not 0 <= self.confusion_momentum < 1:
            raise ValueError("need s_steps >= 0, s_lr > 0 and 0 <= confusion_momentum < 1")


def check_window(W: int) -> None:
    if isinstance(W, bool) or not isinstance(W, (int, np.integer)) or W < 2:
        raise ValueError(f"W (window size) must be an integer in [2, C], got {W!r}")


def check_beta(beta: float) -> None:
    if not (math.isfinite(float(beta)) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
