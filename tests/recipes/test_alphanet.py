"""The AlphaNet recipe (explore/recipes/alphanet.py): training lifts the few classes over
the base model, batched training equals sequential runs, and its speed-ups change no result.

Every shortcut is checked against the plain way: R seeds batched vs one call per seed,
the cached epoch sampler vs ``epoch_sample_indices``, the wide first layer vs
``StackedAlphaNetworks``, and the fast evaluation vs ``evaluate_logits`` on logits built
from features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.synthetic import LongTailSize, Problem
from explore.evaluation import evaluate_logits
from explore.methods.alphanet import (
    AlphaNetParams,
    StackedAlphaNetworks,
    WideAlphaNetworks,
    combine,
    epoch_sample_indices,
)
from explore.recipes import RecipeError, get_recipe
from explore.recipes.alphanet import (
    AlphaNetRecipe,
    _EpochSampler,
    _select_epochs,
    evaluate_alphanet,
    fit_alphanet,
    train_alphanet,
)
from explore.splits import SplitThresholds
from explore.training.inputs import DataFacts, TrialInputs
from explore.training.posthoc import LinearClassifier, build_posthoc_inputs

TINY = LongTailSize(num_classes=40, train_total=4634, d=24)


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem.make(TINY, seed=3)


@pytest.mark.parametrize(
    "params",
    [
        AlphaNetParams(k=4, epochs=8, select_from_epoch=2),
        AlphaNetParams(k=3, epochs=8, select_from_epoch=2, neighbors="random"),
        AlphaNetParams(k=3, epochs=7, distance="cosine", learn_bias=True, rho=1.0),
    ],
    ids=["nearest", "random", "cosine-learned-bias"],
)
def test_batched_equals_sequential(problem, params):
    seeds = [0, 7, 11]
    batched = train_alphanet(problem.inputs, params, seeds)
    sequential = [train_alphanet(problem.inputs, params, [s]) for s in seeds]
    batched_results = evaluate_alphanet(problem.inputs, batched)
    for r, (seq, seed) in enumerate(zip(sequential, seeds)):
        np.testing.assert_array_equal(batched.neighbors[r], seq.neighbors[0])
        assert batched.best_epoch[r] == seq.best_epoch[0]
        np.testing.assert_allclose(batched.alpha_tilde[r], seq.alpha_tilde[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched.few_bias[r], seq.few_bias[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched.val_curves[r], seq.val_curves[0], atol=1e-6, rtol=0)
        (seq_result,) = evaluate_alphanet(problem.inputs, seq)
        assert batched_results[r].seed == seed
        for metric, value in seq_result.test.items():
            assert batched_results[r].test[metric] == pytest.approx(value, abs=1e-6), metric
    # The seeds really are different runs (otherwise equality would be trivial).
    assert not np.allclose(batched.alpha_tilde[0], batched.alpha_tilde[1], atol=1e-3)
    if params.neighbors == "random":
        assert not np.array_equal(batched.neighbors[0], batched.neighbors[1])
    if params.learn_bias:
        base_bias = problem.classifier.bias[batched.few]
        assert np.abs(batched.few_bias - base_bias).max() > 1e-4


def test_fit_alphanet_is_evaluate_of_train(problem):
    params = AlphaNetParams(k=3, epochs=6)
    fitted = fit_alphanet(problem.inputs, params, [1, 2])
    again = evaluate_alphanet(problem.inputs, train_alphanet(problem.inputs, params, [1, 2]))
    assert [r.best_epoch for r in fitted] == [r.best_epoch for r in again]
    assert [r.test for r in fitted] == [r.test for r in again]
    assert all(len(r.val_curve) == 6 for r in fitted)


def test_metrics_match_logits_built_from_features(problem):
    """The fast evaluation (base top-5 once + few logits) against full logits F·Ŵᵀ + b."""
    trained = train_alphanet(problem.inputs, AlphaNetParams(k=4, epochs=6, learn_bias=True), [0, 5])
    results = evaluate_alphanet(problem.inputs, trained)
    W = problem.classifier.weight.astype(np.float64)
    x = problem.features.test.features.astype(np.float64)
    for r, result in enumerate(results):
        w_hat = W.copy()
        w_hat[trained.few] = combine(W[trained.few], W[trained.neighbors[r]],
                                     trained.alpha_tilde[r].astype(np.float64))
        b_hat = problem.classifier.bias.astype(np.float64).copy()
        b_hat[trained.few] = trained.few_bias[r]
        expected = evaluate_logits(x @ w_hat.T + b_hat, problem.features.test.labels,
                                   problem.inputs.split_of_class)
        assert result.test.keys() == expected.keys()
        for metric, value in expected.items():
            assert result.test[metric] == pytest.approx(value, abs=1e-9), metric


def test_epoch_sampler_draws_what_epoch_sample_indices_draws(problem):
    labels, few_mask = problem.inputs.train_labels, problem.inputs.few_mask
    sampler = _EpochSampler(labels, few_mask, rho=0.75)
    rng_a, rng_b = np.random.default_rng(42), np.random.default_rng(42)
    for _ in range(3):
        np.testing.assert_array_equal(sampler.draw(rng_a), epoch_sample_indices(labels, few_mask, 0.75, rng_b))


def test_wide_stack_computes_what_the_stacked_networks_compute():
    torch.manual_seed(0)
    stack = StackedAlphaNetworks(in_dim=12, k=3, hidden=8, seeds=[3, 4, 5])
    wide = WideAlphaNetworks(stack)
    shared = torch.randn(5, 12)
    torch.testing.assert_close(wide(shared), stack(shared))
    per_seed = torch.randn(3, 5, 12)
    expected = torch.stack([stack(per_seed[r])[r] for r in range(3)])
    torch.testing.assert_close(wide(per_seed), expected)


def test_selection_keeps_earliest_best_after_warmup():
    curves = [torch.tensor([0.9, 0.1])] + [torch.tensor([0.5, 0.2])] * 3 + [torch.tensor([0.6, 0.3]),
              torch.tensor([0.6, 0.3]), torch.tensor([0.4, 0.3])]
    # epochs 1..7; selection from epoch 5: seed 0 best 0.6 first at epoch 5 (index 4);
    # seed 1 ties at 0.3 from epoch 5 → keeps epoch 5. Epoch 1's 0.9 is before the window.
    assert _select_epochs(curves, AlphaNetParams(epochs=7), 2) == [4, 4]
    assert _select_epochs([], AlphaNetParams(epochs=7), 3) == [6, 6, 6]


def _long_tail_problem(seed: int = 0):
    """Gaussian classes; the base classifier's biases favour frequent classes, so it
    under-predicts the few classes (what AlphaNet corrects)."""
    rng = np.random.default_rng(seed)
    C, d = 8, 12
    counts = np.array([400, 300, 200, 150, 60, 12, 8, 5])
    centers = rng.normal(size=(C, d)) * 1.2
    centers[5] = centers[0] * 0.6 + rng.normal(size=d) * 0.5  # few classes near base ones
    centers[6] = centers[1] * 0.6 + rng.normal(size=d) * 0.5
    centers[7] = centers[2] * 0.6 + rng.normal(size=d) * 0.5

    def draw(ns):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(ns)])
        return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y

    splits = {"train": draw(counts), "val": draw([40] * C), "test": draw([100] * C)}
    weight = centers.astype(np.float32)
    bias = (-0.5 * (centers**2).sum(1) + 1.5 * np.log(counts / counts.sum())).astype(np.float32)
    return splits, LinearClassifier(weight, bias), C


def test_alphanet_raises_few_accuracy_over_its_base():
    splits, classifier, C = _long_tail_problem()
    inputs = build_posthoc_inputs(splits, classifier, C, SplitThresholds())
    base = evaluate_logits(classifier.logits(splits["test"][0]), splits["test"][1], inputs.split_of_class)
    results = fit_alphanet(inputs, AlphaNetParams(k=3, rho=0.5, epochs=15), seeds=[0, 1, 2])
    few = np.mean([r.test["acc_few"] for r in results])
    assert few > base["acc_few"] + 0.05
    assert all(5 <= r.best_epoch <= 15 for r in results)
    assert all(0.0 <= r.test["acc_overall"] <= 1.0 for r in results)
    # different seeds train different networks
    assert len({round(r.val_curve[-1], 6) for r in results}) > 1 or len({r.best_epoch for r in results}) > 1


def test_alphanet_rejects_k_above_base_classes():
    splits, classifier, C = _long_tail_problem()
    inputs = build_posthoc_inputs(splits, classifier, C, SplitThresholds())
    with pytest.raises(ValueError, match="base"):
        fit_alphanet(inputs, AlphaNetParams(k=6), seeds=[0])


def test_recipe_trains_every_seed_from_the_trial_inputs(problem):
    recipe = get_recipe("alphanet")
    assert isinstance(recipe, AlphaNetRecipe) and recipe.posthoc and not recipe.has_full_mode
    params = recipe.params({"k": 3, "epochs": 4, "select_from_epoch": 2})
    assert params == AlphaNetParams(k=3, epochs=4, select_from_epoch=2)
    assert recipe.columns(params) == {"k": 3, "distance": "euclidean", "rho": 0.5}
    inputs = TrialInputs(problem.features, problem.inputs, SplitThresholds())
    fit = recipe.fit_head(inputs, params, [0, 1])
    direct = fit_alphanet(problem.inputs, params, [0, 1])
    assert [r.seed for r in fit.results] == [0, 1]
    assert [r.best_epoch for r in fit.results] == [r.best_epoch for r in direct]
    assert [r.test for r in fit.results] == [r.test for r in direct]
    with pytest.raises(RecipeError, match="base logits"):
        recipe.fit_head(TrialInputs(problem.features, None, SplitThresholds()), params, [0])


def test_recipe_caps_k_at_the_base_classes_and_names_bad_settings():
    recipe = get_recipe("alphanet")
    counts = np.array([400, 300, 150, 60, 12, 8])  # 4 base classes (>= 20 samples), 2 few
    facts = DataFacts(len(counts), counts, SplitThresholds())
    assert recipe.limits(facts) == {"k": 4}
    recipe.check(recipe.params({"k": 4}), facts)
    with pytest.raises(RecipeError, match="k=5 is larger than the 4 base"):
        recipe.check(recipe.params({"k": 5}), facts)
    with pytest.raises(RecipeError, match=r"unknown parameter\(s\) \['kk'\]"):
        recipe.params({"kk": 3})
    with pytest.raises(RecipeError, match="k=0"):
        recipe.params({"k": 0})
