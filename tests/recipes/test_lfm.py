"""LFM recipe, through the code the trials run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.methods.lfm import (
    TextCosineClassifier,
    initial_projection,
    pair_probabilities,
    sample_lambda,
    sample_pairs,
)
from explore.plugins import Plugins
from explore.recipes import get_recipe
from explore.recipes import lfm as lfm_recipe
from explore.text_encoder import class_text_features
from explore.training.head import fit_head
from explore.training.inputs import head_data
from tests.recipes.conftest import FAST
from tests.support.synthetic import CLASS_NAMES, COUNTS


def test_lfm_mixes_text_guided_pairs_with_the_label_shift(inputs, spy_on):
    """One batch of the mixup a trial trains with, rebuilt by hand from the same draws:
    x = λ x_i + (1−λ) x_j, and the soft target puts λ_y on y_i and 1−λ_y on y_j with
    λ_y = clamp(λ − α (n_i − n_j)/(n_i + n_j), 0, 1) (swapping the pair's labels fails)."""
    spy = spy_on(lfm_recipe)
    recipe = get_recipe("lfm")
    params = recipe.params({"alpha": 1.0, "tau": 0.05, "logit_scale": 16.0})
    recipe.fit_head(inputs, params, [5])
    plugins = spy.calls[0]["plugins"]
    data = head_data(inputs)
    x_all, labels = data.train
    batch = torch.zeros(16, data.d)
    x, targets = plugins.mix(batch, torch.zeros(16, dtype=torch.long), 0, np.random.default_rng(9))

    text, _ = class_text_features(CLASS_NAMES)
    rng = np.random.default_rng(9)
    probs = pair_probabilities(np.asarray(text, np.float64), 0.05)
    i, j = sample_pairs(labels, np.bincount(labels, minlength=9), probs, 16, rng)
    lam = float(sample_lambda(params.beta_param, 1, rng)[0])
    np.testing.assert_allclose(x.numpy(), lam * x_all[i] + (1 - lam) * x_all[j], rtol=1e-5, atol=1e-6)
    n = np.array(COUNTS, dtype=float)
    for row, (a, b) in enumerate(zip(labels[i], labels[j], strict=True)):
        lam_y = min(max(lam - 1.0 * (n[a] - n[b]) / (n[a] + n[b]), 0.0), 1.0)
        expected = np.zeros(9)
        expected[a] += lam_y
        expected[b] += 1 - lam_y
        np.testing.assert_allclose(targets[row].numpy(), expected, atol=1e-6)
    assert (labels[i] != labels[j]).any()
    logits = torch.randn(16, 9, generator=torch.Generator().manual_seed(0))
    want = -(targets * torch.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(plugins.loss(logits, targets, 0), want)


def test_lfm_head_is_scaled_cosines_against_the_text_features(inputs, spy_on):
    spy = spy_on(lfm_recipe)
    recipe = get_recipe("lfm")
    recipe.fit_head(inputs, recipe.params({"logit_scale": 16.0}), [5])
    model = spy.calls[0]["model"]
    f = torch.randn(3, 16)
    text, _ = class_text_features(CLASS_NAMES)
    t = torch.as_tensor(text, dtype=torch.float32)
    z = f @ model.projection.detach()
    want = 16.0 * (z / z.norm(dim=1, keepdim=True)) @ (t / t.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(model(f).detach(), want, rtol=1e-5, atol=1e-5)


def test_lfm_without_mixup_is_ce_on_cosine_logits(inputs, spy_on):
    spy = spy_on(lfm_recipe)
    recipe = get_recipe("lfm")
    recipe.fit_head(inputs, recipe.params({"mixup": False}), [5])
    data = head_data(inputs)
    text, _ = class_text_features(CLASS_NAMES)
    head = TextCosineClassifier.stage2(data.d, text, recipe.params({}).logit_scale, seed=5)
    ce = Plugins(loss=lambda z, y, e: F.cross_entropy(z, y, reduction="none"))
    fit_head(head, data.train, data.val, FAST, seed=5, plugins=ce)
    np.testing.assert_allclose(spy.calls[0]["model"].projection.detach().numpy(),
                               head.projection.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_lfm_projection_init():
    assert torch.equal(initial_projection(5, 5, 0), torch.eye(5))
    tall, wide = initial_projection(16, 4, 0), initial_projection(4, 16, 0)
    torch.testing.assert_close(tall.T @ tall, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(wide @ wide.T, torch.eye(4), atol=1e-5, rtol=0)
    assert torch.equal(tall, initial_projection(16, 4, 0))


@pytest.mark.parametrize("knob,value", [("alpha", -0.1), ("tau", 0.0)])
def test_out_of_range_knobs_name_the_knob(knob, value):
    with pytest.raises(ValueError, match=knob):
        get_recipe("lfm").params({knob: value})
