"""SWRM and DySWRM recipes, through the code the trials run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.methods.prototypes import class_means
from explore.methods.swrm import tsne_coordinates
from explore.plugins import Plugins
from explore.recipes import get_recipe
from explore.recipes import swrm as swrm_recipe
from explore.recipes.bases import BaseSpec, train_base
from explore.splits import SplitThresholds
from explore.training.head import fit_head
from explore.training.inputs import DataFacts, head_data
from tests.recipes.conftest import FAST
from tests.support.synthetic import CLASS_NAMES, COUNTS


def _hand_weights_and_margins(counts, coords, W, beta):
    """Eq. (2) and (3) written out per class, independently of explore.methods.swrm:
    sort by coordinate, window of W around c shifted at the ends (extra class above for
    even W), standardised coordinates, m_c = log mean exp(β |s_i − s_c|)."""
    C = len(counts)
    order = sorted(range(C), key=lambda c: (coords[c], c))
    mean, std = float(np.mean(coords)), float(np.std(coords))
    z = [(coords[c] - mean) / std for c in range(C)]
    weights, margins = [], []
    for c in range(C):
        pos = order.index(c)
        start = min(max(pos - (W - 1) // 2, 0), C - W)
        window = order[start:start + W]
        local = sum(counts[i] for i in window) / W / counts[c]
        weights.append(math.log(1 + max(counts) / counts[c] * local))
        margins.append(math.log(sum(math.exp(beta * abs(z[i] - z[c])) for i in window) / W))
    return np.array(weights), np.array(margins)


def test_swrm_trains_with_eq4_of_its_own_window_weights_and_margins(inputs, spy_on):
    """The loss a trial trains with is eq. (4) with β applied once, from the t-SNE of the
    class means with the seed (a planted β² or a shuffled window would fail this)."""
    spy = spy_on(swrm_recipe)
    recipe = get_recipe("swrm")
    params = recipe.params({"W": 4, "beta": 2.0})
    fit = recipe.fit_head(inputs, params, [3])
    plugins = spy.calls[0]["plugins"]
    data = head_data(inputs)
    coords = tsne_coordinates(class_means(data.train[0], data.train[1], 9), 3,
                              fit.resolved["tsne_perplexity"], fit.resolved["tsne_learning_rate"])
    w, m = _hand_weights_and_margins([float(c) for c in COUNTS], coords.tolist(), 4, 2.0)
    assert m.max() > 0.5  # the margins matter in this test
    logits = torch.randn(12, 9, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 9
    want = [w[t] * math.log(1 + sum(math.exp(logits[n, j] - logits[n, t] - m[t])
                                    for j in range(9) if j != t))
            for n, t in enumerate(y.tolist())]
    np.testing.assert_allclose(plugins.loss(logits, y, 0).numpy(), want, rtol=1e-4)
    assert fit.results[0].records["margin_max"] == pytest.approx(m.max(), rel=1e-5)


def test_swrm_records_the_tsne_settings_it_used(inputs):
    fit = get_recipe("swrm").fit_head(inputs, get_recipe("swrm").params({"W": 3}), [0])
    assert fit.resolved["tsne_perplexity"] == (len(CLASS_NAMES) - 1) / 3  # clamped to (C − 1)/3
    assert fit.resolved["tsne_learning_rate"] == pytest.approx(len(CLASS_NAMES) / 8)


def test_swrm_without_reweighting_or_margins_is_ce(inputs, spy_on):
    spy = spy_on(swrm_recipe)
    recipe = get_recipe("swrm")
    recipe.fit_head(inputs, recipe.params({"W": 3, "components": "none"}), [7])
    data = head_data(inputs)
    ce = train_base(BaseSpec("ce", FAST), {"train": data.train, "val": data.val}, data.num_classes, 7)
    model = spy.calls[0]["model"]
    np.testing.assert_allclose(model.weight.detach().numpy(), ce.weight, rtol=1e-4, atol=1e-5)


def test_swrm_with_full_window_and_no_margin_is_class_weighted_ce(inputs, spy_on):
    """W = C: every window is all classes, so w_c = log(1 + n_max/n_c · mean(n)/n_c) for
    any t-SNE order; β = 0: no margins. That is CE with per-class weights w_y."""
    spy = spy_on(swrm_recipe)
    C, n = len(COUNTS), [float(c) for c in COUNTS]
    w = torch.tensor([math.log(1 + max(n) / n[c] * (sum(n) / C) / n[c]) for c in range(C)])
    recipe = get_recipe("swrm")
    recipe.fit_head(inputs, recipe.params({"W": C, "beta": 0.0}), [2])
    data = head_data(inputs)
    torch.manual_seed(2)
    head = torch.nn.Linear(data.d, C)
    weighted = Plugins(loss=lambda z, y, e: F.cross_entropy(z, y, weight=w, reduction="none"))
    fit_head(head, data.train, data.val, FAST, seed=2, plugins=weighted)
    np.testing.assert_allclose(spy.calls[0]["model"].weight.detach().numpy(),
                               head.weight.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_dyswrm_learns_its_similarity_vector_and_without_terms_is_ce(inputs, spy_on):
    spy = spy_on(swrm_recipe)
    recipe = get_recipe("dyswrm")
    recipe.fit_head(inputs, recipe.params({"W": 3, "beta": 2.0, "s_objective": "loss"}), [1])
    s = spy.calls[0]["plugins"].parameters[0].detach().numpy()
    assert not np.allclose(s, np.random.default_rng(1).standard_normal(9), atol=1e-3)
    recipe.fit_head(inputs, recipe.params({"W": 3, "components": "none"}), [1])
    data = head_data(inputs)
    ce = train_base(BaseSpec("ce", FAST), {"train": data.train, "val": data.val}, data.num_classes, 1)
    np.testing.assert_allclose(spy.calls[1]["model"].weight.detach().numpy(), ce.weight,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["swrm", "dyswrm"])
def test_window_larger_than_the_classes_is_rejected_and_capped(name):
    facts = DataFacts(len(COUNTS), np.array(COUNTS), SplitThresholds())
    recipe = get_recipe(name)
    assert recipe.limits(facts) == {"W": len(COUNTS)}
    recipe.check(recipe.params({"W": len(COUNTS)}), facts)
    with pytest.raises(ValueError, match="W=10"):
        recipe.check(recipe.params({"W": 10}), facts)


@pytest.mark.parametrize("name,knob,value", [
    ("swrm", "W", 1), ("swrm", "beta", -0.5), ("dyswrm", "W", 0), ("dyswrm", "beta", float("inf")),
    ("swrm", "drw_start", -1),
])
def test_out_of_range_knobs_name_the_knob(name, knob, value):
    with pytest.raises(ValueError, match=knob):
        get_recipe(name).params({knob: value})


def test_dyswrm_confusion_objective_detaches_the_margins_and_moves_s_by_its_own_steps(inputs, spy_on):
    """Default DySWRM: the loss gives s no gradient (weights and margins use s detached);
    after each epoch s takes its Adam steps on L_s of the model's confusions, so it moves;
    the margins stay bounded (the literal reading inflates them)."""
    spy = spy_on(swrm_recipe)
    recipe = get_recipe("dyswrm")
    params = recipe.params({"W": 4, "beta": 10.0})
    assert params.s_objective == "confusion"
    fit = recipe.fit_head(inputs, params, [2])
    plugins = spy.calls[0]["plugins"]
    (s,) = plugins.parameters
    logits = torch.randn(8, 9, requires_grad=True)
    plugins.loss(logits, torch.arange(8) % 9, 0).sum().backward()
    assert s.grad is None and logits.grad is not None
    init = np.random.default_rng(2).standard_normal(9)
    assert not np.allclose(s.detach().numpy(), init, atol=1e-3)
    records = fit.results[0].records
    assert set(records) >= {"margin_mean", "margin_max", "order_changes"}
    assert 0 <= records["order_changes"] <= FAST.epochs

    literal = recipe.fit_head(inputs, recipe.params({"W": 4, "beta": 10.0, "s_objective": "loss"}), [2])
    assert literal.results[0].records["margin_mean"] > records["margin_mean"]  # runaway margins


@pytest.mark.parametrize("components", ["swr", "swm"])
def test_ablations_are_knob_columns(components):
    recipe = get_recipe("swrm")
    columns = recipe.columns(recipe.params({"components": components, "margin_sign": "ldam"}))
    assert columns["components"] == components and columns["margin_sign"] == "ldam"
