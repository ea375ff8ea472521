"""DySWRM's two objectives for ``s``, through the plug-in a trial trains with
(:func:`explore.recipes.swrm.dyswrm_plugins`), against hand computations.

confusion (default): the affinity is the symmetrised per-class mean softmax the loss saw
(EMA over epochs), ``s`` takes ``s_steps`` Adam steps on Σ A_ij (ẑ_i − ẑ_j)², so the classes
the model confuses move together and into each other's windows, and the margins follow.
loss (the literal reading): ``s`` gets the gradient of eq. (4) itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.methods.swrm import DySWRMParams
from explore.recipes.swrm import dyswrm_plugins

C = 6
COUNTS = np.array([60.0, 40.0, 30.0, 20.0, 10.0, 5.0])
INIT = np.array([-2.0, -1.0, 0.0, 0.5, 1.5, 3.0])  # classes 0 and 5 at the two ends
CONFUSED = (0, 5)


def _batch(confusion: float, n_per_class: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits where every class is predicted right, except that classes 0 and 5 put
    ``confusion`` of their logit mass on each other."""
    y = torch.arange(C).repeat_interleave(n_per_class)
    logits = torch.full((len(y), C), -3.0, dtype=torch.float64)
    logits[torch.arange(len(y)), y] = 3.0
    a, b = CONFUSED
    logits[y == a, b] = confusion
    logits[y == b, a] = confusion
    return logits.float(), y


def _affinity_by_hand(batches) -> np.ndarray:
    sums, seen = np.zeros((C, C)), np.zeros(C)
    for logits, y in batches:
        z = logits.double().numpy()
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        for row, t in zip(p, y.tolist()):
            sums[t] += row
            seen[t] += 1
    P = sums / seen[:, None]
    np.fill_diagonal(P, 0.0)
    return 0.5 * (P + P.T)


def _adam_on_the_objective(s0: np.ndarray, A: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """Adam (β = 0.9, 0.999, ε = 1e-8) on Σ A_ij (ẑ_i − ẑ_j)², ẑ = (s − mean)/std, by hand."""
    s, m, v = s0.astype(np.float64).copy(), np.zeros(C), np.zeros(C)
    for t in range(1, steps + 1):
        mean, std = s.mean(), s.std()
        z = (s - mean) / std
        dz = 4 * (A * (z[:, None] - z[None, :])).sum(1)  # A symmetric
        g = (dz - dz.mean() - z * (dz * z).mean()) / std  # through the standardisation
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        s = s - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return s


def _margins_by_hand(s: np.ndarray, W: int, beta: float) -> np.ndarray:
    order = sorted(range(C), key=lambda c: (s[c], c))
    z = (s - s.mean()) / s.std()
    out = []
    for c in range(C):
        pos = order.index(c)
        start = min(max(pos - (W - 1) // 2, 0), C - W)
        out.append(math.log(np.mean([math.exp(beta * abs(z[i] - z[c]))
                                     for i in order[start:start + W]])))
    return np.array(out)


def test_confusion_objective_moves_s_by_the_measured_confusions():
    params = DySWRMParams(W=2, beta=1.0, s_steps=30, s_lr=0.1, confusion_momentum=0.5)
    plugins = dyswrm_plugins(COUNTS, INIT, params)
    s = plugins.parameters[0]
    model = torch.nn.Linear(1, 1)

    epoch0 = [_batch(2.5), _batch(1.0)]
    for logits, y in epoch0:
        logits = logits.clone().requires_grad_()
        plugins.loss(logits, y, 0).mean().backward()
        assert s.grad is None  # the loss sees s detached
    plugins.on_epoch_end(0, model, {})
    A0 = _affinity_by_hand(epoch0)
    np.testing.assert_allclose(plugins.state_dict()["affinity"].numpy(), A0, rtol=1e-10)
    want = _adam_on_the_objective(INIT, A0, 30, 0.1)
    np.testing.assert_allclose(s.detach().double().numpy(), want, rtol=1e-4, atol=1e-5)

    # The confused pair, at the two ends before, are now neighbours: each in the other's
    # window (W = 2), and the recorded margins are those of the new s.
    order = np.argsort(s.detach().numpy()).tolist()
    assert abs(order.index(CONFUSED[0]) - order.index(CONFUSED[1])) == 1
    margins = _margins_by_hand(s.detach().double().numpy(), 2, 1.0)
    assert plugins.records["margin_mean"] == pytest.approx(margins.mean(), rel=1e-5)
    assert plugins.records["order_changes"] == 1

    # A second epoch: the affinity is the EMA (momentum 0.5) of both epochs' confusions.
    epoch1 = [_batch(-3.0)]  # no confusion any more
    plugins.loss(*epoch1[0], 1)
    plugins.on_epoch_end(1, model, {})
    np.testing.assert_allclose(plugins.state_dict()["affinity"].numpy(),
                               0.5 * A0 + 0.5 * _affinity_by_hand(epoch1), rtol=1e-10)


def test_without_confusions_s_keeps_its_order():
    """A model that confuses nothing measures A ≈ 0: s hardly moves (control)."""
    params = DySWRMParams(W=2, beta=1.0, s_steps=30, s_lr=0.1)
    plugins = dyswrm_plugins(COUNTS, INIT, params)
    plugins.loss(*_batch(-3.0), 0)
    plugins.on_epoch_end(0, torch.nn.Linear(1, 1), {})
    assert np.argsort(plugins.parameters[0].detach().numpy()).tolist() == list(range(C))
    assert plugins.records["order_changes"] == 0


def test_loss_objective_gives_s_the_gradient_of_eq4():
    W, beta = 3, 1.5
    params = DySWRMParams(W=W, beta=beta, s_objective="loss")
    plugins = dyswrm_plugins(COUNTS, INIT, params)
    s = plugins.parameters[0]
    logits, y = _batch(1.0)
    plugins.loss(logits, y, 0).mean().backward()
    assert s.grad is not None

    # Eq. (4) with eq. (2)/(3) written out in torch, differentiated with respect to s.
    s_h = torch.tensor(INIT, dtype=torch.float64, requires_grad=True)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    order = sorted(range(C), key=lambda c: (INIT[c], c))
    z = (s_h - s_h.mean()) / (s_h - s_h.mean()).pow(2).mean().sqrt()
    w, m = [], []
    for c in range(C):
        pos = order.index(c)
        start = min(max(pos - (W - 1) // 2, 0), C - W)
        win = order[start:start + W]
        w.append(torch.log1p(n.max() / n[c] * n[win].mean() / n[c]))
        m.append(torch.log(torch.stack([torch.exp(beta * (z[i] - z[c]).abs()) for i in win]).mean()))
    losses = []
    for zl, t in zip(logits.double(), y.tolist()):
        others = torch.stack([zl[j] - zl[t] - m[t] for j in range(C) if j != t])
        losses.append(w[t] * torch.log1p(torch.exp(others).sum()))
    torch.stack(losses).mean().backward()
    np.testing.assert_allclose(s.grad.double().numpy(), s_h.grad.numpy(), rtol=1e-4, atol=1e-7)

    # Descending that gradient only widens the gaps (the margins grow): the reason the
    # confusion objective is the default (docs/methods.md#swrm--dyswrm).
    before = _margins_by_hand(INIT, W, beta).mean()
    with torch.no_grad():
        s -= 0.5 * s.grad
    s.grad = None
    plugins.on_epoch_end(0, torch.nn.Linear(1, 1), {})  # no own update of s with this objective
    assert plugins.records["margin_mean"] > before
    assert plugins.records["margin_mean"] == pytest.approx(
        _margins_by_hand(s.detach().double().numpy(), W, beta).mean(), rel=1e-5)
