"""Decoupling baselines (Kang et al. 2020), logit adjustment and the default CE against hand
computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.methods.baselines import (
    LogitAdjustmentParams,
    NCMParams,
    TauNormParams,
    class_balanced_indices,
    cross_entropy_loss,
    logit_adjusted_logits,
    lws_logits,
    ncm_logits,
    tau_normalize,
)


def test_class_balanced_sampling_is_class_uniform_then_sample_uniform() -> None:
    labels = np.repeat([0, 1, 2], [50, 5, 1])
    n = 30000
    idx = class_balanced_indices(labels, 3, n, np.random.default_rng(0))
    assert idx.shape == (n,) and idx.dtype == np.int64
    np.testing.assert_allclose(np.bincount(labels[idx], minlength=3) / n, 1 / 3, atol=0.01)
    in_class_1 = idx[labels[idx] == 1]  # samples 50..54, each 1/5 of the class draws
    np.testing.assert_allclose(np.bincount(in_class_1 - 50, minlength=5) / len(in_class_1),
                               0.2, atol=0.02)
    np.testing.assert_array_equal(idx, class_balanced_indices(labels, 3, n,
                                                              np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"classes \[3\] have no samples"):
        class_balanced_indices(labels, 4, 10, np.random.default_rng(0))


def test_balanced_softmax_adds_log_counts() -> None:
    logits = np.array([[0.5, -1.0, 2.0]])
    counts = np.array([100, 10, 1])
    out = logit_adjusted_logits(logits, counts)  # τ = 1: balanced softmax
    np.testing.assert_allclose(out, [[0.5 + math.log(100), -1.0 + math.log(10), 2.0]])
    with pytest.raises(ValueError, match="counts must all be > 0"):
        logit_adjusted_logits(logits, np.array([1, 0, 1]))


def test_logit_adjusted_loss_by_hand() -> None:
    """Menon et al.'s loss ``−log softmax(z + τ·log π)_y`` with the priors π = n / Σn, by
    hand, equals CE on the logits adjusted by ``τ·log n`` (the ``log Σn`` cancels)."""
    z = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]
    y = [1, 2]
    counts = [60, 30, 10]
    for tau in (0.0, 0.5, 1.0, 2.0):
        priors = [n / sum(counts) for n in counts]
        want = []
        for row, label in zip(z, y):
            adjusted = [zj + tau * math.log(pj) for zj, pj in zip(row, priors)]
            want.append(-adjusted[label] + math.log(sum(math.exp(a) for a in adjusted)))
        got = cross_entropy_loss(logit_adjusted_logits(torch.tensor(z), torch.tensor(counts), tau),
                                 torch.tensor(y))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        LogitAdjustmentParams(tau=-0.5)


def test_cross_entropy_loss_is_per_sample_with_hard_or_soft_targets() -> None:
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    log_p = [[2.0 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)],
             [-math.log(1 + math.e), 1.0 - math.log(1 + math.e)]]
    hard = cross_entropy_loss(z, torch.tensor([0, 0]), epoch=3)
    np.testing.assert_allclose(hard.numpy(), [-log_p[0][0], -log_p[1][0]], rtol=1e-6)
    soft = cross_entropy_loss(z, torch.tensor([[0.25, 0.75], [1.0, 0.0]]))
    np.testing.assert_allclose(soft.numpy(), [-(0.25 * log_p[0][0] + 0.75 * log_p[0][1]),
                                              -log_p[1][0]], rtol=1e-6)


def test_tau_normalize_by_hand() -> None:
    W = np.array([[3.0, 4.0], [0.0, 0.5], [1.0, 1.0]])
    out = tau_normalize(W, 0.5)
    for c in range(3):
        norm = math.sqrt(W[c, 0] ** 2 + W[c, 1] ** 2)
        np.testing.assert_allclose(out[c], W[c] / norm**0.5)
    np.testing.assert_allclose(tau_normalize(W, 0.0), W)
    np.testing.assert_allclose(np.linalg.norm(tau_normalize(torch.tensor(W), 1.0).numpy(),
                                              axis=1), 1.0)
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        tau_normalize(W, -0.5)
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        TauNormParams(tau=-1.0)


def test_lws_logits_by_hand() -> None:
    f = np.array([[1.0, 2.0], [-1.0, 0.5]])
    W = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, -1.0]])
    b = np.array([0.1, -0.2, 0.3])
    s = np.array([2.0, 0.5, 1.0])
    out = lws_logits(f, W, b, s)
    for n in range(2):
        for c in range(3):
            expected = s[c] * (f[n, 0] * W[c, 0] + f[n, 1] * W[c, 1] + b[c])
            assert out[n, c] == pytest.approx(expected)
    scales = torch.ones(3, requires_grad=True)
    lws_logits(torch.tensor(f, dtype=torch.float32), torch.tensor(W, dtype=torch.float32), None,
               scales).sum().backward()
    assert torch.all(torch.isfinite(scales.grad))


def test_ncm_logits_by_hand() -> None:
    f = np.array([[0.0, 0.0], [3.0, 3.0]])
    mu = np.array([[1.0, 0.0], [3.0, 4.0]])
    out = ncm_logits(f, mu)
    for n in range(2):
        for c in range(2):
            assert out[n, c] == pytest.approx(-math.dist(f[n], mu[c]), rel=1e-9)
    assert out.argmax(axis=1).tolist() == [0, 1]
    cos = ncm_logits(f[1:], mu, metric="cosine")
    np.testing.assert_allclose(cos, [[3 / math.sqrt(18), 21 / (math.sqrt(18) * 5)]])
    with pytest.raises(ValueError, match="metric must be 'euclidean' or 'cosine'"):
        NCMParams(metric="l1")  # type: ignore[arg-type]
