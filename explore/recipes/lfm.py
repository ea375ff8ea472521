"""LFM recipe: text-guided local feature mixup (maths: :mod:`explore.methods.lfm`;
docs/methods.md#lfm).

Head mode is the paper's stage 2 on cached features: a cosine classifier between the
learned projection ``W_Iᵀ f`` and the fixed class text features, trained with mixup of
text-guided pairs. Per batch: as many pairs as the batch has samples, drawn by local
sampling (``sample_pairs``: i uniform, y_j ~ p(·|y_i) at temperature τ), one λ_x ~ Beta(a, a)
per batch (or per sample), inputs mixed, labels shifted by α, soft-label cross-entropy on the
cosine (optionally MMS) logits. Full mode runs the same plug-ins on images (stage 1) with the
backbone's classifier replaced by the fixed text-cosine classifier (``W_I`` at the identity;
:class:`~explore.methods.lfm.TextCosineClassifier`, stage 1), then stage 2 on the stage-1 encoder's features.

``W_I`` (d_img × d_txt) starts at the identity when the dimensions match (the paper's
stage-2 init); otherwise at a seeded matrix with orthonormal columns (d_img ≥ d_txt) or rows
(d_img < d_txt): the closest a rectangular map gets to the identity
(:func:`~explore.methods.lfm.initial_projection`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from explore.data.types import ImageSplit
from explore.methods.params import LFMParams
from explore.plugins import Plugins
from explore.recipes._recipe import NO_NAMES, Recipe, RecipeError, ReferenceRecipe
from explore.splits import SplitThresholds
from explore.store import FeatureSet
from explore.text_encoder import class_text_features
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import DataFacts, TrialInputs, head_data
from explore.training.outcome import Fit, SeedResult

if TYPE_CHECKING:  # torch (and the maths, which uses it) is imported where LFM trains
    import torch
    from torch import nn

    from explore.backbone.models import Preprocess
    from explore.training.full import FullPlan, FullSetup
    from explore.training.head import DeviceRows

__all__ = ["LFMRecipe", "LFMTrialParams", "lfm_plugins"]


@dataclass(frozen=True)
class LFMTrialParams(LFMParams):
    """LFM's knobs (``alpha``, ``tau``, Beta, scale, MMS) and the no-mixup control."""

    mixup: bool = True
    """False: no pairs and no mixing, plain (hard-label) CE on the cosine logits — the
    control that isolates what local feature mixup adds."""


def lfm_plugins(labels: np.ndarray, text: np.ndarray, params: LFMTrialParams,
                fetch: Callable[[np.ndarray, torch.device], torch.Tensor]) -> Plugins:
    """LFM's loss (soft-label CE, hard-label CE without mixup, or MMS) and its mixup.

    ``fetch(indices, device)`` gives the training inputs of those samples (cached feature
    rows in head mode, preprocessed images in full mode). Each batch is replaced by as
    many freshly drawn text-guided pairs; the batch only sets their number.
    """
    import torch
    import torch.nn.functional as F

    from explore.methods.lfm import (
        PairSampler,
        mix,
        mms_loss,
        pair_probabilities,
        sample_lambda,
        soft_cross_entropy,
        text_distance,
    )

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
    import torch

    return lambda idx, device: features[torch.from_numpy(idx).to(features.device)].to(device)


def _image_rows(split: ImageSplit, preprocess: Preprocess,
                ) -> Callable[[np.ndarray, torch.device], torch.Tensor]:
    from explore.backbone.models import load_batch

    return lambda idx, device: load_batch(split, idx, preprocess).to(device)


def _stage1_classifier(text: np.ndarray, scale: float, feature_dim: int) -> nn.Module:
    from explore.methods.lfm import TextCosineClassifier

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
    from explore.methods.lfm import TextCosineClassifier
    from explore.training.head import train_seeds

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
        from explore.backbone.models import default_preprocess
        from explore.training.full import FullPlan

        dataset = setup.dataset
        _check_counts(dataset.class_counts(), params)
        text, encoder = class_text_features(dataset.classes, params.prompt)
        pre = default_preprocess(setup.backbone.arch, setup.in_channels)
        plugins = functools.partial(_stage1_plugins, dataset.train, text, params, pre)
        stage2 = functools.partial(_stage2, params, setup.thresholds, setup.head)
        classifier = functools.partial(_stage1_classifier, text, _scale(params))
        return FullPlan(dataset.train, dataset.num_classes, plugins, {"text_encoder": encoder},
                        stage2, classifier)
