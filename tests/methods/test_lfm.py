"""LFM sampling, mixing and classifier math against hand computations (C = 3–4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.methods.lfm import (
    LFMParams,
    cosine_logits,
    label_shift,
    mix,
    mms_logits,
    mms_loss,
    pair_probabilities,
    sample_lambda,
    sample_pairs,
    soft_cross_entropy,
    text_distance,
)

# Four unnormalised "text features": 0 and 1 are close, 2 is between, 3 is far.
TEXT = np.array([[2.0, 0.0, 0.0], [1.8, 0.6, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, -3.0]])


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_pair_probabilities_match_explicit_loop() -> None:
    tau = 0.5
    P = pair_probabilities(TEXT, tau)
    f = [_unit(list(row)) for row in TEXT]
    for i in range(4):
        dots = [sum(a * b for a, b in zip(f[i], f[k], strict=True)) for k in range(4)]
        denom = sum(math.exp(dots[k] / tau) for k in range(4) if k != i)
        for j in range(4):
            expected = 0.0 if j == i else math.exp(dots[j] / tau) / denom
            assert P[i, j] == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("tau", [0.002, 0.05, 1.0, 31.25])
def test_pair_probability_rows_sum_to_one_with_zero_diagonal(tau: float) -> None:
    P = pair_probabilities(torch.tensor(TEXT), tau)
    assert isinstance(P, torch.Tensor) and torch.all(torch.isfinite(P))
    torch.testing.assert_close(P.sum(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(P.diagonal(), torch.zeros(4, dtype=torch.float64))


def test_small_tau_concentrates_on_the_most_similar_class_and_large_tau_flattens() -> None:
    P = pair_probabilities(TEXT, 0.002)
    # Most similar to 0 is 1, to 1 is 0, to 2 is 1 (cos .730 vs .577 for 0).
    assert P[0, 1] > 0.999 and P[1, 0] > 0.999 and P[2, 1] > 0.999
    flat = pair_probabilities(TEXT, 1e6)
    np.testing.assert_allclose(flat[~np.eye(4, dtype=bool)], 1 / 3, rtol=1e-5)


def test_text_features_are_normalised_inside() -> None:
    unit = TEXT / np.linalg.norm(TEXT, axis=1, keepdims=True)
    np.testing.assert_allclose(pair_probabilities(TEXT, 0.05), pair_probabilities(unit, 0.05))


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_tau_must_be_positive(tau: float) -> None:
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        pair_probabilities(TEXT, tau)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        LFMParams(tau=tau)


def test_label_shift_hand_values_and_clamping() -> None:
    # 0.6 - 1 * (90 - 10) / 100 = -0.2 -> 0 ; 0.6 - 1 * (10 - 90)/100 = 1.4 -> 1
    # 0.5 - 0.5 * (30 - 10) / 40 = 0.25 ; equal counts: unchanged.
    lam = np.array([0.6, 0.6, 0.5, 0.3])
    n_i = np.array([90, 10, 30, 7])
    n_j = np.array([10, 90, 10, 7])
    np.testing.assert_allclose(label_shift(lam, n_i, n_j, 1.0)[:2], [0.0, 1.0])
    assert label_shift(0.5, 30, 10, 0.5) == pytest.approx(0.25)
    np.testing.assert_allclose(label_shift(lam, n_i, n_j, 0.0), lam)
    out = label_shift(torch.tensor(lam), torch.tensor(n_i), torch.tensor(n_j), 0.5)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch.tensor([0.2, 1.0, 0.25, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        label_shift(lam, n_i, n_j, -0.1)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        LFMParams(alpha=-0.5)


def test_sample_pairs_follows_class_frequency_and_pair_distribution() -> None:
    labels = np.array([0, 1, 0, 2, 0, 1, 0, 0, 1, 0])  # counts 6, 3, 1
    counts = np.array([6, 3, 1])
    P = np.array([[0.0, 0.25, 0.75], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    B = 40000
    idx_i, idx_j = sample_pairs(labels, counts, P, B, np.random.default_rng(0))
    assert idx_i.shape == idx_j.shape == (B,)
    y_i, y_j = labels[idx_i], labels[idx_j]
    np.testing.assert_allclose(np.bincount(y_i, minlength=3) / B, [0.6, 0.3, 0.1], atol=0.01)
    for a in range(3):
        rows = y_j[y_i == a]
        np.testing.assert_allclose(np.bincount(rows, minlength=3) / len(rows), P[a], atol=0.02)
    assert np.all(y_i != y_j)
    # Within class 1 (samples 1, 5, 8) the partner is uniform.
    picked = idx_j[y_j == 1]
    np.testing.assert_allclose([np.mean(picked == s) for s in (1, 5, 8)], 1 / 3, atol=0.02)
    again = sample_pairs(labels, counts, P, B, np.random.default_rng(0))
    np.testing.assert_array_equal(idx_j, again[1])


def test_sample_pairs_rejects_stale_counts() -> None:
    labels = np.array([0, 1, 1])
    P = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="counts must equal the per-class counts"):
        sample_pairs(labels, np.array([2, 1]), P, 4, np.random.default_rng(0))


def test_mix_feature_vectors_by_hand() -> None:
    counts = np.array([90.0, 10.0, 50.0])
    x_i = np.array([[1.0, 2.0], [0.0, 4.0]])
    x_j = np.array([[3.0, 6.0], [2.0, 0.0]])
    y_i, y_j = np.array([0, 2]), np.array([1, 2])
    x, t = mix(x_i, x_j, y_i, y_j, 0.75, counts, 0.5, 3)
    np.testing.assert_allclose(x, [[1.5, 3.0], [0.5, 3.0]])
    # Row 0: λ_y = 0.75 - 0.5 * 80/100 = 0.35. Row 1: same class -> one-hot.
    np.testing.assert_allclose(t, [[0.35, 0.65, 0.0], [0.0, 0.0, 1.0]])


def test_mix_image_tensors_with_per_sample_lambda() -> None:
    counts = torch.tensor([5.0, 5.0, 20.0])
    x_i = torch.ones(2, 1, 2, 2)
    x_j = torch.zeros(2, 1, 2, 2)
    lam = torch.tensor([0.2, 0.9])
    x, t = mix(x_i, x_j, torch.tensor([0, 2]), torch.tensor([1, 0]), lam, counts, 1.0, 3)
    assert isinstance(x, torch.Tensor) and x.shape == (2, 1, 2, 2)
    torch.testing.assert_close(x[0], torch.full((1, 2, 2), 0.2))
    torch.testing.assert_close(x[1], torch.full((1, 2, 2), 0.9))
    # Row 1: 0.9 - (20 - 5)/25 = 0.3 on class 2, 0.7 on class 0.
    torch.testing.assert_close(t, torch.tensor([[0.2, 0.8, 0.0], [0.7, 0.0, 0.3]]))
    torch.testing.assert_close(t.sum(dim=1), torch.ones(2))


def test_soft_cross_entropy_by_hand_and_equal_to_hard_ce_for_one_hot() -> None:
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    soft = np.array([[0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])
    loss = soft_cross_entropy(logits, soft)
    for k in range(2):
        lse = math.log(sum(math.exp(v) for v in logits[k]))
        expected = -sum(soft[k, c] * (logits[k, c] - lse) for c in range(3))
        assert loss[k] == pytest.approx(expected, rel=1e-12)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    hard = soft_cross_entropy(z, F.one_hot(y, 4).float())
    torch.testing.assert_close(hard, F.cross_entropy(z, y, reduction="none"))
    hard.sum().backward()
    assert torch.all(torch.isfinite(z.grad))


def test_cosine_logits_by_hand() -> None:
    feats = np.array([[3.0, 4.0], [1.0, 0.0]])
    text = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    out = cosine_logits(feats, None, text, scale=2.0)
    for n in range(2):
        for c in range(3):
            dot = feats[n] @ text[c]
            cos = dot / (np.linalg.norm(feats[n]) * np.linalg.norm(text[c]))
            assert out[n, c] == pytest.approx(2.0 * cos, rel=1e-12)
    # A projection d_img=2 -> d_txt=3: W_I^T f with W_I = [[1,0,0],[0,0,1]].
    W = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    text3 = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(cosine_logits(feats, W, text3), [[0.8, 0.6], [0.0, 1.0]])


def test_cosine_logits_gradients_are_finite() -> None:
    feats = torch.randn(4, 3, requires_grad=True)
    W = torch.eye(3, requires_grad=True)
    out = cosine_logits(feats, W, torch.tensor(TEXT, dtype=torch.float32), 1.0)
    assert out.shape == (4, 4) and float(out.detach().abs().max()) <= 1.0 + 1e-6
    soft_cross_entropy(out, F.one_hot(torch.tensor([0, 1, 2, 3]), 4).float()).sum().backward()
    assert torch.all(torch.isfinite(feats.grad)) and torch.all(torch.isfinite(W.grad))


def test_mms_logits_by_hand() -> None:
    cos = np.array([[0.2, 0.5, -0.1, 0.0]])
    D = text_distance(TEXT)
    f = TEXT / np.linalg.norm(TEXT, axis=1, keepdims=True)
    for a in range(4):
        for b in range(4):
            assert D[a, b] == pytest.approx(1 - float(f[a] @ f[b]), abs=1e-12)
    out = mms_logits(cos, np.array([2]), D)
    np.testing.assert_allclose(out, [[(cos[0, c] + 0.3 * D[2, c]) / 0.01 for c in range(4)]])
    # Soft one-hot target gives the same row; a 50/50 target mixes rows 0 and 2.
    np.testing.assert_allclose(mms_logits(cos, np.array([[0, 0, 1.0, 0]]), D), out)
    mixed = mms_logits(cos, np.array([[0.5, 0, 0.5, 0]]), D, margin=0.2, temperature=0.1)
    np.testing.assert_allclose(mixed, (cos + 0.2 * 0.5 * (D[0] + D[2])) / 0.1)


def test_params_and_lambda_sampling() -> None:
    p = LFMParams()
    assert (p.alpha, p.tau, p.beta_param, p.logit_scale, p.mms) == (1.0, 0.05, 0.5, 30.0, False)
    with pytest.raises(ValueError, match="beta_param must be > 0"):
        LFMParams(beta_param=0.0)
    lam = sample_lambda(0.5, 10000, np.random.default_rng(0))
    assert np.all((lam >= 0) & (lam <= 1))
    assert abs(lam.mean() - 0.5) < 0.02  # Beta(a, a) is symmetric
    # Beta(0.5, 0.5) is U-shaped: more mass near the ends than the middle.
    assert np.mean(lam < 0.1) > np.mean((lam > 0.45) & (lam < 0.55))


def test_mms_loss_with_mixed_targets_sums_each_labels_margin_row_by_hand() -> None:
    """Two classes mixed 0.7 / 0.3: 0.7·CE((z + m·D[0])/T, 0) + 0.3·CE((z + m·D[1])/T, 1)."""
    z = torch.tensor([[0.2, 0.5, -0.1]])
    D = torch.tensor([[0.0, 0.4, 1.0], [0.4, 0.0, 0.6], [1.0, 0.6, 0.0]])
    t = torch.tensor([[0.7, 0.3, 0.0]])
    m, T = 0.3, 0.1

    def ce(k: int) -> float:
        row = [(float(z[0, j]) + m * float(D[k, j])) / T for j in range(3)]
        return math.log(sum(math.exp(v) for v in row)) - row[k]

    got = mms_loss(z, t, D, m, T)
    assert float(got[0]) == pytest.approx(0.7 * ce(0) + 0.3 * ce(1), rel=1e-5)
    hard = mms_loss(z, torch.tensor([1]), D, m, T)
    assert float(hard[0]) == pytest.approx(ce(1), rel=1e-5)
