"""AlphaNet's maths (explore/methods/alphanet.py) against hand computations; its training
is tested in tests/recipes/test_alphanet.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.methods.alphanet import (
    AlphaNetParams,
    StackedAlphaNetworks,
    combine,
    combine_logits,
    epoch_sample_indices,
    few_class_logits,
    make_alpha_network,
    nearest_base_classes,
    network_input,
    pairwise_distances,
)


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


def test_combine_logits_by_hand_equals_features_times_combined_rows():
    # 2 samples, 3 features; base classes 0, 1, 2; few classes 3 and 4, k = 2.
    f = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                  [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    few, nbrs = np.array([3, 4]), np.array([[0, 1], [2, 0]])
    alpha_raw = np.array([[1.0, -3.0], [2.0, 2.0]])  # α̃ = (0.25, -0.75) and (0.5, 0.5)
    # base logits F·Wᵀ: sample 1 → (1, 0, 2 | 1, 2), sample 2 → (0, 1, -1 | 1, 1)
    z = torch.tensor(f @ W.T)
    own = z[:, few]  # (N, n_few) = [[1, 2], [1, 1]]
    neigh = z[:, nbrs]  # (N, n_few, k)
    alpha_tilde = torch.tensor([[0.25, -0.75], [0.5, 0.5]], dtype=torch.float64)
    got = combine_logits(own, neigh, alpha_tilde)
    # class 3: 1 + 0.25·1 − 0.75·0 = 1.25 and 1 + 0.25·0 − 0.75·1 = 0.25
    # class 4: 2 + 0.5·2 + 0.5·1 = 3.5 and 1 + 0.5·(−1) + 0.5·0 = 0.5
    expected = np.array([[1.25, 3.5], [0.25, 0.5]])
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    # the same as f·ŵ with ŵ = combine(w, v, α) built from the rows (ŵ3 = (1.25, 0.25, 0),
    # ŵ4 = (0.5, 2, 1.5))
    w_hat = np.stack([combine(W[c], W[nbrs[i]], alpha_raw[i]) for i, c in enumerate(few)])
    np.testing.assert_allclose(w_hat, [[1.25, 0.25, 0.0], [0.5, 2.0, 1.5]], atol=1e-12)
    np.testing.assert_allclose(f @ w_hat.T, expected, atol=1e-12)
    # several seeds' α̃ broadcast against one split's logits: (R, N, n_few)
    # second seed: class 3 adds its first neighbour's logit, class 4 its second
    second = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    both = combine_logits(own, neigh, torch.stack([alpha_tilde, second]))
    assert both.shape == (2, 2, 2)
    np.testing.assert_allclose(both[0].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(both[1].numpy(), [[1 + 1, 2 + 1], [1 + 0, 1 + 0]], atol=1e-12)


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
