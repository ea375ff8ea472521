"""SWRM's and DySWRM's ablation switches in training: for every ``components`` ×
``margin_sign``, the loss a trial trains with (the recipe's plug-in, taken from the real
head loop) equals eq. (4) written out by hand with the switch applied — weights 1 without
SWR, margins 0 without SWM, the margin subtracted from the target logit with ``ldam``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.methods.prototypes import class_means
from explore.methods.swrm import tsne_coordinates
from explore.recipes import get_recipe
from explore.recipes import swrm as swrm_recipe
from explore.training.inputs import head_data
from tests.recipes.test_swrm import _hand_weights_and_margins
from tests.support.synthetic import COUNTS

COMPONENTS = ("swrm", "swr", "swm", "none")
SIGNS = ("paper", "ldam")


def _by_hand(counts, coords, W, beta, components, sign):
    """Eq. (2) and (3) per class written out (test_swrm's independent hand computation),
    then the switches."""
    weights, margins = (list(v) for v in _hand_weights_and_margins(counts, coords, W, beta))
    C = len(counts)
    if components in ("swm", "none"):
        weights = [1.0] * C
    if components in ("swr", "none"):
        margins = [0.0] * C
    if sign == "ldam":
        margins = [-m for m in margins]
    return weights, margins


def _eq4(logits, y, w, m):
    """w_y · log(1 + Σ_{j≠y} exp(z_j − z_y − m_y)), one sample at a time."""
    C = logits.shape[1]
    return [w[t] * math.log(1 + sum(math.exp(float(logits[n, j] - logits[n, t]) - m[t])
                                    for j in range(C) if j != t))
            for n, t in enumerate(y.tolist())]


LOGITS = torch.randn(18, 9, generator=torch.Generator().manual_seed(0)) * 2
TARGETS = torch.arange(18) % 9


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("components", COMPONENTS)
def test_swrm_trial_loss_follows_each_switch(inputs, spy_on, components, sign):
    spy = spy_on(swrm_recipe)
    recipe = get_recipe("swrm")
    params = recipe.params({"W": 4, "beta": 2.0, "components": components, "margin_sign": sign})
    fit = recipe.fit_head(inputs, params, [5])
    plugins = spy.calls[0]["plugins"]
    data = head_data(inputs)
    coords = tsne_coordinates(class_means(data.train[0], data.train[1], 9), 5,
                              fit.resolved["tsne_perplexity"], fit.resolved["tsne_learning_rate"])
    w, m = _by_hand([float(c) for c in COUNTS], coords.tolist(), 4, 2.0, components, sign)
    if components in ("swrm", "swm"):
        assert max(abs(x) for x in m) > 0.5  # the margins matter here
    if components in ("swrm", "swr"):
        assert max(w) - min(w) > 0.5  # and so do the weights
    np.testing.assert_allclose(plugins.loss(LOGITS, TARGETS, 0).numpy(),
                               _eq4(LOGITS, TARGETS, w, m), rtol=1e-4)
    assert fit.results[0].records["margin_max"] == pytest.approx(max(abs(x) for x in m),
                                                                 rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("components", COMPONENTS)
def test_dyswrm_trial_loss_follows_each_switch(inputs, spy_on, components, sign):
    """DySWRM computes its terms from ``s`` in its own plug-in: the same switches apply
    (checked against the ``s`` the plug-in holds after training)."""
    spy = spy_on(swrm_recipe)
    recipe = get_recipe("dyswrm")
    params = recipe.params({"W": 3, "beta": 2.0, "components": components, "margin_sign": sign})
    recipe.fit_head(inputs, params, [5])
    plugins = spy.calls[0]["plugins"]
    s = plugins.parameters[0].detach().double().tolist()
    w, m = _by_hand([float(c) for c in COUNTS], s, 3, 2.0, components, sign)
    if components in ("swrm", "swm"):
        assert max(abs(x) for x in m) > 0.3
    late = 10**6  # after any deferral: the method's loss
    np.testing.assert_allclose(plugins.loss(LOGITS, TARGETS, late).detach().numpy(),
                               _eq4(LOGITS, TARGETS, w, m), rtol=1e-4)
