"""AlphaNet's pieces against hand computations, and its training on a tiny long-tail problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.evaluation import evaluate_logits
from explore.methods.alphanet import (
    AlphaNetParams,
    StackedAlphaNetworks,
    combine,
    epoch_sample_indices,
    few_class_logits,
    make_alpha_network,
    nearest_base_classes,
    network_input,
    pairwise_distances,
)
from explore.splits import SplitThresholds
from explore.training.alphanet_fit import _select_epochs, fit_alphanet
from explore.training.posthoc import LinearClassifier, build_posthoc_inputs


def test_combine_by_hand():
    # α = (1, -3) → ‖α‖₁ = 4 → α̃ = (0.25, -0.75); ŵ = w + 0.25·v1 − 0.75·v2
    w = np.array([1.0, 0.0])
    v = np.array([[0.0, 1.0], [1.0, 1.0]])
    got = combine(w, v, np.array([1.0, -3.0]))
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, [1.0 - 0.75, 0.25 - 0.75])


def test_combine_torch_and_batched():
    w = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 2.0], [4.0, 0.0]]])
    a = torch.tensor([[2.0, 2.0], [-1.0, 0.0]])
    got = combine(w, v, a)
    assert isinstance(got, torch.Tensor)
    expected = torch.tensor([[1.0 + 0.5, 2.0 + 0.5], [-2.0, -2.0]])
    torch.testing.assert_close(got, expected)
    # ‖ŵ − w‖ ≤ max_i ‖v_i‖ (the paper's bound)
    for r in range(2):
        assert torch.linalg.norm(got[r] - w[r]) <= torch.linalg.norm(v[r], dim=1).max() + 1e-6


def test_distances_by_hand():
    a = np.array([[3.0, 4.0]])
    b = np.array([[0.0, 0.0], [3.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(pairwise_distances(a, b, "euclidean"), [[5.0, 4.0, 10.0]], atol=1e-9)
    cos = pairwise_distances(a, b[1:], "cosine")
    np.testing.assert_allclose(cos, [[1 - 3 / 5, 2.0]], atol=1e-9)


def test_nearest_base_classes_order_and_metric():
    # class means on a line; classes 3 and 4 are few
    means = np.array([[0.0, 1.0], [2.0, 0.1], [10.0, 0.0], [2.5, 0.0], [9.0, 9.0]])
    few, base = np.array([3, 4]), np.array([0, 1, 2])
    got = nearest_base_classes(means, few, base, 2, "euclidean")
    # class 3 at (2.5,0): distances to 0,1,2 = 2.69, 0.51, 7.5 → [1, 0]
    # class 4 at (9,9): distances = 12.04, 11.3, 9.06 → [2, 1]
    np.testing.assert_array_equal(got, [[1, 0], [2, 1]])
    # cosine: class 4's direction (1,1) is closest to class 1 (2,0.1)? angles: 0→45°, 1→42.1°, 2→45°
    got_cos = nearest_base_classes(means, few, base, 1, "cosine")
    np.testing.assert_array_equal(got_cos[1], [1])


def test_few_logits_are_recombined_base_logits():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(7, 4))
    weight = rng.normal(size=(5, 4))
    few, nbrs = np.array([3, 4]), np.array([[0, 1], [2, 0]])
    alphas = rng.normal(size=(2, 2))
    # direct: build ŵ for each few class, then f·ŵ
    direct = np.stack([feats @ combine(weight[c], weight[nbrs[i]], alphas[i]) for i, c in enumerate(few)], 1)
    alpha_tilde = torch.tensor(alphas / np.abs(alphas).sum(1, keepdims=True))
    via_logits = few_class_logits(torch.tensor(feats @ weight.T), torch.tensor(few), torch.tensor(nbrs), alpha_tilde)
    np.testing.assert_allclose(via_logits.numpy(), direct, atol=1e-10)


def test_network_input_layout():
    weight = np.arange(12.0).reshape(4, 3)
    x = network_input(weight, np.array([3]), np.array([[1, 0]]))
    np.testing.assert_array_equal(x, [[9, 10, 11, 3, 4, 5, 0, 1, 2]])


def test_alpha_network_architecture():
    net = make_alpha_network(9, 2)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9, 32), (32, 32), (32, 32), (32, 2)]
    acts = [m for m in net if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.01 for a in acts)
    assert not isinstance(net[-1], torch.nn.LeakyReLU)


def test_stacked_networks_match_single_networks():
    x = torch.randn(5, 9)
    stacked = StackedAlphaNetworks(9, 2, 32, seeds=[3, 7])
    for r, seed in enumerate([3, 7]):
        torch.manual_seed(seed)
        single = make_alpha_network(9, 2)
        torch.testing.assert_close(stacked(x)[r], single(x))


def test_epoch_sampling():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 4 + [3] * 2)
    few_mask = np.array([False, False, True, True])
    rng = np.random.default_rng(0)
    idx = epoch_sample_indices(labels, few_mask, 1.5, rng)
    few_idx = np.flatnonzero(few_mask[labels])
    assert len(idx) == len(few_idx) + math.floor(1.5 * len(few_idx))
    assert sorted(set(idx[few_mask[labels[idx]]])) == sorted(few_idx)  # every few sample once
    assert np.sum(few_mask[labels[idx]]) == len(few_idx)
    # base classes are drawn uniformly, not by frequency: over many epochs class 1 (30
    # samples) is drawn about as often as class 0 (50 samples)
    draws = np.concatenate([epoch_sample_indices(labels, few_mask, 50.0, rng) for _ in range(20)])
    base_draws = labels[draws][~few_mask[labels[draws]]]
    share = np.mean(base_draws == 1)
    assert 0.45 < share < 0.55


def test_params_validation():
    with pytest.raises(ValueError, match="k=0"):
        AlphaNetParams(k=0)
    with pytest.raises(ValueError, match="rho"):
        AlphaNetParams(rho=0.0)
    with pytest.raises(ValueError, match="distance"):
        AlphaNetParams(distance="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k=8 is larger than the 7 base"):
        AlphaNetParams(k=8).check_against(7)


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
