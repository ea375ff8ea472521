"""LFM recipe: text-guided local feature mixup (maths: :mod:`explore.methods.lfm`;
docs/methods.md#lfm).

Head mode is the paper's stage 2 on cached features: a cosine classifier between the
learned projection ``W_Iᵀ f`` and the fixed class text features, trained with mixup of
text-guided pairs. Per batch: as many pairs as the batch has samples, drawn by local
sampling (``sample_pairs``: i uniform, y_j ~ p(·|y_i) at temperature τ), one λ_x ~ Beta(a, a)
per batch (or per sample), inputs mixed, labels shifted by α, soft-label cross-entropy on the
cosine (optionally MMS) logits. Full mode runs the same plug-ins on images (stage 1) with the
backbone's classifier replaced by the fixed text-cosine classifier (``W_I`` at the identity;
:class:`TextCosineClassifier`, stage 1), then stage 2 on the stage-1 encoder's features.

``W_I`` (d_img × d_txt) starts at the identity when the dimensions match (the paper's
stage-2 init); otherwise at a seeded matrix with orthonormal columns (d_img ≥ d_txt) or rows
(d_img < d_txt): the closest a rectangular map gets to the identity.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explore.backbone.models import Preprocess, default_preprocess, load_batch
from explore.data.types import ImageSplit
from explore.methods.lfm import (
    LFMParams,
    PairSampler,
    cosine_logits_unit_text,
    mix,
    mms_loss,
    pair_probabilities,
    sample_lambda,
    soft_cross_entropy,
    text_distance,
    unit_text_rows,
)
from explore.plugins import Plugins
from explore.recipes._recipe import NO_NAMES, Recipe, RecipeError, ReferenceRecipe
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.text_encoder import class_text_features
from explore.training.full import FullPlan, FullSetup
from explore.training.head import DeviceRows, HeadTrainConfig, train_seeds
from explore.training.inputs import DataFacts, TrialInputs, head_data
from explore.training.outcome import Fit, SeedResult

__all__ = ["LFMRecipe", "LFMTrialParams", "TextCosineClassifier", "initial_projection",
           "lfm_plugins"]


@dataclass(frozen=True)
class LFMTrialParams(LFMParams):
    """LFM's knobs (``alpha``, ``tau``, Beta, scale, MMS) and the no-mixup control."""

    mixup: bool = True
    """False: no pairs and no mixing, plain (hard-label) CE on the cosine logits — the
    control that isolates what local feature mixup adds."""


class TextCosineClassifier(nn.Module):
    """LFM's classifier in both stages: logits ``scale · cos(project(f), f_T,c)`` against
    fixed text features (rows by class), normalised once and again only when the buffer is
    replaced, written or cast.

    Stage 2 (head mode, :meth:`stage2`): ``project`` is the learned ``W_I``, ``f ↦ W_Iᵀ f``
    from :func:`initial_projection`. Stage 1 (full mode, :meth:`stage1`): ``W_I`` at the
    identity; when the backbone's feature width differs from the text width, ``project`` is
    the image encoder's last layer, a trainable linear map to the text width.
    """

    def __init__(self, text_features: np.ndarray, scale: float, project: nn.Module) -> None:
        super().__init__()
        text = torch.as_tensor(np.asarray(text_features), dtype=torch.float32, device="cpu")
        self.register_buffer("text", text / text.norm(dim=1, keepdim=True))
        self.scale = float(scale)
        self.project = project
        self._unit: tuple[torch.Tensor, int, torch.dtype, torch.Tensor] | None = None

    @classmethod
    def stage2(cls, d_img: int, text_features: np.ndarray, scale: float,
               seed: int) -> TextCosineClassifier:
        d_txt = int(np.asarray(text_features).shape[1])
        return cls(text_features, scale, _Projection(initial_projection(d_img, d_txt, seed)))

    @classmethod
    def stage1(cls, feature_dim: int, text_features: np.ndarray,
               scale: float) -> TextCosineClassifier:
        d_txt = int(np.asarray(text_features).shape[1])
        project = nn.Identity() if feature_dim == d_txt else nn.Linear(feature_dim, d_txt)
        return cls(text_features, scale, project)

    @property
    def projection(self) -> torch.Tensor:
        """``W_I`` (d_img×d_txt) of a stage-2 classifier."""
        if not isinstance(self.project, _Projection):
            raise AttributeError("only a stage-2 classifier has a projection matrix W_I")
        return self.project.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # = cosine_logits(project(x), None, text, scale), the text rows normalised once.
        text = self.get_buffer("text")
        unit = self._unit
        if unit is None or unit[0] is not text or unit[1] != text._version or unit[2] != x.dtype:
            unit = (text, text._version, x.dtype, unit_text_rows(text.to(x.dtype)).detach())
            self._unit = unit
        return cosine_logits_unit_text(self.project(x), None, unit[3], self.scale)


class _Projection(nn.Module):
    """``f ↦ W_Iᵀ f`` (rows: ``f @ W_I``) with ``W_I`` learned."""

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(initial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.to(x.dtype)


def initial_projection(d_img: int, d_txt: int, seed: int) -> torch.Tensor:
    """Identity when square; else seeded orthonormal columns/rows (see module docstring)."""
    if d_img == d_txt:
        return torch.eye(d_img, device="cpu")
    g = torch.Generator().manual_seed(seed)
    big, small = max(d_img, d_txt), min(d_img, d_txt)
    q, _ = torch.linalg.qr(torch.randn(big, small, generator=g, device="cpu"))  # orthonormal columns
    return (q if d_img >= d_txt else q.T).contiguous()


def lfm_plugins(labels: np.ndarray, text: np.ndarray, params: LFMTrialParams,
                fetch: Callable[[np.ndarray, torch.device], torch.Tensor]) -> Plugins:
    """LFM's loss (soft-label CE, hard-label CE without mixup, or MMS) and its mixup.

    ``fetch(indices, device)`` gives the training inputs of those samples (cached feature
    rows in head mode, preprocessed images in full mode). Each batch is replaced by as
    many freshly drawn text-guided pairs; the batch only sets their number.
    """
    labels = np.asarray(labels, dtype=np.int64)
    C = int(text.shape[0])
    counts = np.bincount(labels, minlength=C)
    probs = np.asarray(pair_probabilities(np.asarray(text, np.float64), params.tau))
    pairs = PairSampler(labels, counts, probs) if params.mixup else None
    # Small tables, copied to the batches' device once (not per batch).
    tables = {"counts": torch.as_tensor(counts, dtype=torch.float32, device="cpu"),
              "labels": torch.from_numpy(labels)}
    if params.mms:
        tables["D"] = torch.as_tensor(text_distance(text), dtype=torch.float32, device="cpu")
    on = _OnDevice(tables)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if params.mms:  # the head gives raw cosines with MMS (see _head)
            return mms_loss(logits.float(), targets, on.get("D", logits.device),
                            params.mms_margin, params.mms_temperature)
        if targets.ndim == 2:
            return soft_cross_entropy(logits.float(), targets.float())
        return F.cross_entropy(logits.float(), targets, reduction="none")

    def mix_batch(x: torch.Tensor, y: torch.Tensor, epoch: int,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        assert pairs is not None  # mix is only plugged in with mixup
        i, j = pairs(len(x), rng)  # = sample_pairs(labels, counts, probs, len(x), rng)
        lam = sample_lambda(params.beta_param, 1 if params.lambda_per_batch else len(x), rng)
        lam_x: float | torch.Tensor = (float(lam[0]) if params.lambda_per_batch
                                       else torch.from_numpy(lam).float().to(x.device))
        all_labels = on.get("labels", x.device)
        i_t, j_t = torch.from_numpy(i).to(x.device), torch.from_numpy(j).to(x.device)
        return mix(fetch(i, x.device), fetch(j, x.device), all_labels[i_t], all_labels[j_t],
                   lam_x, on.get("counts", x.device), params.alpha, C)

    return Plugins(loss=loss, mix=mix_batch if params.mixup else None)


class _OnDevice:
    """Named CPU tensors, each copied to a device on first use there."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._cpu = tensors
        self._copies: dict[tuple[str, torch.device], torch.Tensor] = {}

    def get(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._copies:
            self._copies[key] = self._cpu[name].to(device)
        return self._copies[key]


def _scale(params: LFMTrialParams) -> float:
    """MMS divides raw cosines by its temperature (its own scale); else ``logit_scale``."""
    return 1.0 if params.mms else params.logit_scale


def _feature_rows(features: torch.Tensor) -> Callable[[np.ndarray, torch.device], torch.Tensor]:
    """Rows of the training features where they are (the trial's device)."""
    return lambda idx, device: features[torch.from_numpy(idx).to(features.device)].to(device)


def _image_rows(split: ImageSplit, preprocess: Preprocess,
                ) -> Callable[[np.ndarray, torch.device], torch.Tensor]:
    return lambda idx, device: load_batch(split, idx, preprocess).to(device)


def _stage1_classifier(text: np.ndarray, scale: float, feature_dim: int) -> nn.Module:
    return TextCosineClassifier.stage1(feature_dim, text, scale)


def _stage1_plugins(train: ImageSplit, text: np.ndarray, params: LFMTrialParams,
                    preprocess: Preprocess) -> Plugins:
    return lfm_plugins(train.labels, text, params, _image_rows(train, preprocess))


def _check_counts(counts: np.ndarray, params: LFMTrialParams) -> None:
    if len(counts) < 2:
        raise RecipeError("lfm needs at least 2 classes to pair")
    if params.mixup and (counts == 0).any():
        raise RecipeError(f"lfm: classes {np.flatnonzero(counts == 0).tolist()} have no "
                          "training samples")


def _fit(features: FeatureSet, thresholds: SplitThresholds, head: HeadTrainConfig,
         params: LFMTrialParams, seeds: Sequence[int],
         device: torch.device | None = None) -> Fit:
    inputs = TrialInputs(features, None, thresholds, head)
    data = head_data(inputs)
    _check_counts(data.counts, params)
    text, encoder = class_text_features(features.classes, params.prompt)

    def make(seed: int, rows: DeviceRows) -> tuple[nn.Module, Plugins]:
        model = TextCosineClassifier.stage2(data.d, text, _scale(params), seed)
        return model, lfm_plugins(data.train[1], text, params, _feature_rows(rows[0]))

    resolved = {"text_encoder": encoder, "d_text": int(text.shape[1]),
                "logit_scale_used": _scale(params),
                "projection_init": "identity" if text.shape[1] == data.d else "orthonormal"}
    return Fit(train_seeds(seeds, data, head, make, device=device), resolved)


def _stage2(params: LFMTrialParams, thresholds: SplitThresholds, head: HeadTrainConfig,
            features: FeatureSet, seed: int) -> SeedResult:
    fit = _fit(features, thresholds, head, params, [seed])
    result = fit.results[0]
    result.records = {**fit.resolved, **result.records}
    return result


class LFMRecipe(Recipe[LFMTrialParams]):
    name = "lfm"
    params_type = LFMTrialParams
    knobs = ("alpha", "tau")

    def own_reference(self, params: LFMTrialParams) -> ReferenceRecipe:
        """The paper's control, ``cosine_ce``: the same cosine classifier, plain CE, no
        mixup — plain CE also when the sweep uses MMS, so LFM + CE and LFM + MMS share one
        control."""
        return ReferenceRecipe("cosine_ce", self,
                               dataclasses.replace(params, mixup=False, mms=False))

    def check(self, params: LFMTrialParams, facts: DataFacts) -> None:
        if not facts.class_names_given:
            raise RecipeError(NO_NAMES.format(what="lfm (its pairs and label shift come from "
                                                   "the text of the class names)"))
        _check_counts(facts.counts, params)
        from explore.text_encoder import require_text_encoder

        try:
            require_text_encoder("lfm")
        except ValueError as exc:
            raise RecipeError(str(exc)) from None

    def fit_head(self, inputs: TrialInputs, params: LFMTrialParams, seeds: Sequence[int]) -> Fit:
        return _fit(inputs.features, inputs.thresholds, inputs.head, params, seeds, inputs.device)

    def full_plan(self, params: LFMTrialParams, setup: FullSetup, seed: int) -> FullPlan:
        dataset = setup.dataset
        _check_counts(dataset.class_counts(), params)
        text, encoder = class_text_features(dataset.classes, params.prompt)
        pre = default_preprocess(setup.backbone.arch, setup.in_channels)
        plugins = functools.partial(_stage1_plugins, dataset.train, text, params, pre)
        stage2 = functools.partial(_stage2, params, setup.thresholds, setup.head)
        classifier = functools.partial(_stage1_classifier, text, _scale(params))
        return FullPlan(dataset.train, dataset.num_classes, plugins, {"text_encoder": encoder},
                        stage2, classifier)
