"""Neighbor-silencing recipe, through the code the trials run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.methods.neighbor_silencing import TargetsAtTest
from explore.recipes import RecipeError, get_recipe
from explore.recipes import neighbor_silencing as ns_recipe
from explore.recipes.bases import logit_adjusted_loss
from explore.recipes.neighbor_silencing import build_ns_problem
from explore.splits import SplitThresholds
from explore.training.inputs import TrialInputs, head_data
from tests.recipes.conftest import FAST
from tests.support.synthetic import AUX_NAMES, CLASS_NAMES, COUNTS, feature_set

L = len(CLASS_NAMES)


def test_ns_problem_from_a_neighbour_map(inputs, neighbor_map):
    params = get_recipe("neighbor_silencing").params({"neighbor_map": neighbor_map})
    problem = build_ns_problem(inputs.features, params, head_data(inputs))
    assert problem.aux_classes == ("tiger", "van", "fox", "bus", "pony")  # pool order
    assert problem.counts.tolist() == list(COUNTS) + [50, 30, 50, 10, 45]  # capped at 50
    lion, wolf, zebra, car = (CLASS_NAMES.index(c) for c in ("lion", "wolf", "zebra", "car"))
    expected = {(lion, L), (zebra, L), (car, L + 1), (wolf, L + 2), (car, L + 3), (zebra, L + 4)}
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(problem.neighbor)) if a < b}
    assert pairs == expected
    assert problem.resolved["aux_parents"][0] == ["lion", "zebra"]


def test_ns_trains_with_the_silenced_loss_on_targets_and_capped_aux(inputs, neighbor_map, spy_on):
    """The loss a trial trains with is the BalCE-form loss with λ_s on target–auxiliary
    neighbour pairs, written out here per sample; each epoch holds every target sample
    and at most 50 of each auxiliary class."""
    spy = spy_on(ns_recipe)
    recipe = get_recipe("neighbor_silencing")
    recipe.fit_head(inputs, recipe.params({"lambda_s": 0.2, "neighbor_map": neighbor_map}), [4])
    call = spy.calls[0]
    plugins, (_, labels) = call["plugins"], call["train"]
    counts = list(COUNTS) + [50, 30, 50, 10, 45]
    neighbours = {("lion", "tiger"), ("zebra", "tiger"), ("car", "van"), ("wolf", "fox"),
                  ("car", "bus"), ("zebra", "pony")}
    names = list(CLASS_NAMES) + list(AUX_NAMES)
    logits = torch.randn(6, L + 5, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([CLASS_NAMES.index("lion"), CLASS_NAMES.index("car"), L + 0, L + 2, 0, L + 4])

    def lam(a, b):
        pair = (names[a], names[b])
        return 0.2 if pair in neighbours or pair[::-1] in neighbours else 1.0

    want = [math.log(1 + sum(lam(t, j) * math.exp(math.log(counts[j]) - math.log(counts[t])
                                                 + logits[n, j] - logits[n, t])
                             for j in range(L + 5) if j != t))
            for n, t in enumerate(y.tolist())]
    np.testing.assert_allclose(plugins.loss(logits, y, 0).numpy(), want, rtol=1e-5)
    epoch = plugins.sample_indices(labels, 0, np.random.default_rng(0))
    per_class = np.bincount(labels[epoch], minlength=L + 5)
    assert per_class[:L].tolist() == list(COUNTS)
    assert per_class[L:].tolist() == [50, 30, 50, 10, 45]


def test_ns_with_lambda_one_is_balanced_softmax_on_targets_and_aux(inputs, neighbor_map, spy_on):
    spy = spy_on(ns_recipe)
    recipe = get_recipe("neighbor_silencing")
    recipe.fit_head(inputs, recipe.params({"lambda_s": 1.0, "neighbor_map": neighbor_map}), [4])
    plugins = spy.calls[0]["plugins"]
    counts = np.array(list(COUNTS) + [50, 30, 50, 10, 45])
    logits = torch.randn(5, L + 5, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 3, L, L + 1, 8])
    torch.testing.assert_close(plugins.loss(logits, y, 0), logit_adjusted_loss(counts)(logits, y, 0))


def test_ns_predicts_among_targets_only():
    model = TargetsAtTest(4, num_targets=3, num_classes=5, seed=0)
    x = torch.randn(6, 4)
    assert model.train()(x).shape == (6, 5)
    assert model.eval()(x).shape == (6, 3)


@pytest.mark.parametrize("source", ["prototype", "text"])
@pytest.mark.parametrize("ratio_by,medium,few", [
    # 4 many / 2 medium / 3 few classes: 1 : ⌈4/2⌉ : ⌈4/3⌉ = 1 : 2 : 2
    ("classes", 2, 2),
    # 770 / 90 / 25 samples: 1 : ⌈770/90⌉ = 9 : ⌈770/25⌉ = 31, capped at the pool of 5
    ("samples", 5, 5),
])
def test_ns_auxiliary_classes_per_target_follow_the_ratio(inputs, source, ratio_by, medium, few):
    recipe = get_recipe("neighbor_silencing")
    params = recipe.params({"neighbor_source": source, "aux_base_count": 1, "ratio_by": ratio_by})
    problem = build_ns_problem(inputs.features, params, head_data(inputs))
    assert problem.resolved["aux_per_target"] == [1] * 4 + [medium] * 2 + [few] * 3
    assert problem.resolved["neighbor_source"].startswith(source)
    assert set(problem.aux_classes) <= set(AUX_NAMES)


def test_ns_without_aux_split_says_what_to_provide():
    bare = TrialInputs(feature_set(with_aux=False), None, SplitThresholds(), FAST)
    recipe = get_recipe("neighbor_silencing")
    with pytest.raises(RecipeError, match="aux.*fashion_mnist_lt_open"):
        recipe.fit_head(bare, recipe.params({}), [0])


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_lambda_s_out_of_range_names_the_knob(value):
    with pytest.raises(ValueError, match="lambda_s"):
        get_recipe("neighbor_silencing").params({"lambda_s": value})
