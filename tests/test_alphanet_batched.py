"""AlphaNet's batched training equals sequential runs, and its speed-ups change no result.

Every shortcut in ``explore.training.alphanet_fit`` is checked against the plain way:
R seeds batched vs one call per seed, the cached epoch sampler vs
``epoch_sample_indices``, the wide first layer vs ``StackedAlphaNetworks``, the fast
evaluation vs ``evaluate_logits`` on logits built from features, and the blockwise
class means vs ``class_means``.
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
    class_means,
    combine,
    epoch_sample_indices,
)
from explore.training.alphanet_fit import (
    _EpochSampler,
    _WideStack,
    evaluate_alphanet,
    fit_alphanet,
    train_alphanet,
)

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
    wide = _WideStack(stack)
    shared = torch.randn(5, 12)
    torch.testing.assert_close(wide(shared), stack(shared))
    per_seed = torch.randn(3, 5, 12)
    expected = torch.stack([stack(per_seed[r])[r] for r in range(3)])
    torch.testing.assert_close(wide(per_seed), expected)


def test_class_means_is_bit_identical_to_a_row_by_row_sum():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 33)) * 5 + 2).astype(np.float32)
    y = rng.integers(0, 17, size=3000)  # unsorted labels
    sums = np.zeros((17, 33))
    np.add.at(sums, y, x)  # the straightforward reference
    np.testing.assert_array_equal(class_means(x, y, 17), sums / np.bincount(y, minlength=17)[:, None])
    with pytest.raises(ValueError, match="without training samples"):
        class_means(x, y, 18)
