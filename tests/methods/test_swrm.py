"""SWRM / DySWRM math against hand computations on tiny inputs (C = 4–6)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from explore.methods.swrm import (
    DySWRMParams,
    DySWRMSimilarity,
    SWRMParams,
    confusion_update,
    effective_perplexity,
    initial_similarity,
    similarity_objective,
    swrm_loss,
    swrm_terms,
    tsne_coordinates,
    window_indices,
    window_weights_and_margins,
)

# Five classes; ascending coordinate order is 1 (-1.0), 0 (0.3), 3 (0.5), 4 (1.1), 2 (2.0).
COORDS = [0.3, -1.0, 2.0, 0.5, 1.1]
COUNTS = [40, 500, 3, 120, 10]
# Windows written out by hand, as sets of class indices.
WINDOWS_W3 = {0: {1, 0, 3}, 1: {1, 0, 3}, 2: {3, 4, 2}, 3: {0, 3, 4}, 4: {3, 4, 2}}
# Even W: one class below c, c, two above (shifted at the ends).
WINDOWS_W4 = {0: {1, 0, 3, 4}, 1: {1, 0, 3, 4}, 2: {0, 3, 4, 2}, 3: {0, 3, 4, 2}, 4: {0, 3, 4, 2}}


def _expected(counts: list[int], coords: list[float], windows: dict[int, set[int]], W: int,
              beta: float) -> tuple[list[float], list[float]]:
    n_max = max(counts)
    mu = statistics.fmean(coords)
    sd = statistics.pstdev(coords)
    s = [(x - mu) / sd for x in coords]
    weights, margins = [], []
    for c in range(len(counts)):
        local = sum(counts[i] / counts[c] for i in windows[c]) / W
        weights.append(math.log(1 + n_max / counts[c] * local))
        margins.append(math.log(sum(math.exp(beta * abs(s[i] - s[c])) for i in windows[c]) / W))
    return weights, margins


@pytest.mark.parametrize("W, windows", [(3, WINDOWS_W3), (4, WINDOWS_W4)])
def test_windows_are_shifted_at_both_ends(W: int, windows: dict[int, set[int]]) -> None:
    win = window_indices(np.array(COORDS), W)
    assert win.shape == (5, W)
    for c in range(5):
        assert set(win[c].tolist()) == windows[c]
    # Both end classes (1 lowest, 2 highest) still hold W classes.
    assert len(set(win[1].tolist())) == W and len(set(win[2].tolist())) == W


@pytest.mark.parametrize("W, windows", [(3, WINDOWS_W3), (4, WINDOWS_W4)])
def test_weights_and_margins_match_hand_computation(W: int, windows: dict[int, set[int]]) -> None:
    weights, margins = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), W, 1.5)
    exp_w, exp_m = _expected(COUNTS, COORDS, windows, W, 1.5)
    assert isinstance(weights, np.ndarray) and isinstance(margins, np.ndarray)
    np.testing.assert_allclose(weights, exp_w, rtol=1e-12)
    np.testing.assert_allclose(margins, exp_m, rtol=1e-12)
    assert np.all(margins >= 0)


def test_window_of_all_classes_and_torch_input_agree_with_numpy() -> None:
    all_windows = {c: set(range(5)) for c in range(5)}
    w_np, m_np = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), 5, 0.7)
    exp_w, exp_m = _expected(COUNTS, COORDS, all_windows, 5, 0.7)
    np.testing.assert_allclose(w_np, exp_w, rtol=1e-12)
    np.testing.assert_allclose(m_np, exp_m, rtol=1e-12)
    w_t, m_t = window_weights_and_margins(
        torch.tensor(COUNTS), torch.tensor(COORDS, dtype=torch.float64), 5, 0.7
    )
    assert isinstance(w_t, torch.Tensor) and isinstance(m_t, torch.Tensor)
    np.testing.assert_allclose(w_t.numpy(), exp_w, rtol=1e-12)
    np.testing.assert_allclose(m_t.numpy(), exp_m, rtol=1e-12)


def test_beta_zero_gives_zero_margins_and_margins_grow_with_beta() -> None:
    _, m0 = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), 3, 0.0)
    np.testing.assert_array_equal(m0, np.zeros(5))
    _, m1 = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), 3, 1.0)
    _, m10 = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), 3, 10.0)
    assert np.all(m1 > 0) and np.all(m10 > m1)


def test_margins_do_not_depend_on_coordinate_scale() -> None:
    coords = np.array(COORDS)
    _, m = window_weights_and_margins(np.array(COUNTS), coords, 3, 2.0)
    _, m_scaled = window_weights_and_margins(np.array(COUNTS), 7.0 * coords + 3.0, 3, 2.0)
    np.testing.assert_allclose(m, m_scaled, rtol=1e-12)


def test_rarer_class_in_same_window_gets_larger_weight() -> None:
    w, _ = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), 3, 1.0)
    assert w[2] > w[4] > w[1]  # counts 3 < 10 < 500


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"W": 1}, r"W \(window size\) must be an integer in \[2, C\]"),
        ({"W": 6}, r"W \(window size\) must be in \[2, C=5\]"),
        ({"beta": -0.1}, r"beta must be a finite number >= 0"),
        ({"counts": [40, 0, 3, 120, 10]}, r"counts must all be > 0"),
        ({"counts": [40, 500, 3, 120]}, r"counts has 4 classes but coords has 5"),
    ],
)
def test_out_of_range_inputs_raise(kwargs: dict, match: str) -> None:
    args = {"counts": COUNTS, "coords": COORDS, "W": 3, "beta": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        window_weights_and_margins(np.array(args["counts"]), np.array(args["coords"]),
                                   args["W"], args["beta"])


@pytest.mark.parametrize("cls", [SWRMParams, DySWRMParams])
def test_params_validate_knobs(cls: type) -> None:
    with pytest.raises(ValueError, match=r"W \(window size\).*\[2, C\]"):
        cls(W=1)
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0"):
        cls(beta=-1.0)
    p = cls(W=30, beta=10.0)
    with pytest.raises(AttributeError):
        p.W = 3  # type: ignore[misc]  # frozen


def test_swrm_loss_matches_explicit_loop() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)) * 3
    targets = np.array([0, 1, 2, 3, 2, 0])
    weights = np.array([0.5, 1.0, 2.0, 3.0])
    margins = np.array([0.0, 0.2, 1.0, 0.7])
    loss = swrm_loss(logits, targets, weights, margins)
    assert isinstance(loss, np.ndarray) and loss.shape == (6,)
    for k in range(6):
        y = targets[k]
        acc = sum(math.exp(logits[k, j] - logits[k, y] - margins[y]) for j in range(4) if j != y)
        assert loss[k] == pytest.approx(weights[y] * math.log(1 + acc), rel=1e-12)


def test_swrm_loss_with_unit_weights_and_no_margin_is_cross_entropy() -> None:
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    loss = swrm_loss(logits, targets, torch.ones(5, dtype=torch.float64),
                     torch.zeros(5, dtype=torch.float64))
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(loss, expected)


def test_swrm_loss_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[1000.0, 0.0, 0.0], [1000.0, 0.0, 0.0]], requires_grad=True)
    loss = swrm_loss(logits, torch.tensor([0, 1]), torch.ones(3), torch.zeros(3))
    # y=0: log(1 + 2e^-1000) ~ 0; y=1: log(1 + e^1000 + 1) ~ 1000.
    assert loss[0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[1].item() == pytest.approx(1000.0, rel=1e-6)
    loss.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


def test_margins_are_differentiable_wrt_coordinates() -> None:
    counts = torch.tensor(COUNTS, dtype=torch.float64)

    def margins(s: torch.Tensor) -> torch.Tensor:
        return window_weights_and_margins(counts, s, 3, 1.3)[1]

    s = torch.tensor(COORDS, dtype=torch.float64, requires_grad=True)
    # Finite differences against autograd (small steps do not change the window order).
    assert torch.autograd.gradcheck(margins, (s,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_tsne_keeps_clusters_of_prototypes_contiguous(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Two clusters of four prototypes in 8-D (sklearn's default learning rate
    # interleaves them for most seeds, see tsne_learning_rate).
    P = np.concatenate([rng.normal(0, 0.3, (4, 8)), rng.normal(0, 0.3, (4, 8)) + 2.0])
    s = tsne_coordinates(P, seed=seed, perplexity=2.0)
    assert s.shape == (8,) and s.dtype == np.float64
    order = np.argsort(s)
    assert set(order[:4].tolist()) in ({0, 1, 2, 3}, {4, 5, 6, 7})
    np.testing.assert_array_equal(s, tsne_coordinates(P, seed=seed, perplexity=2.0))


def test_tsne_perplexity_is_clamped_to_a_third_of_the_class_count() -> None:
    assert effective_perplexity(30.0, 7) == 2.0       # (7 − 1) / 3
    assert effective_perplexity(1.5, 7) == 1.5
    assert effective_perplexity(30.0, 100) == 30.0    # the paper's setting is untouched
    s = tsne_coordinates(np.random.default_rng(0).normal(size=(5, 3)), seed=0)  # 30 -> 4/3
    assert s.shape == (5,) and np.all(np.isfinite(s))
    with pytest.raises(ValueError, match="at least 2 classes"):
        tsne_coordinates(np.ones((1, 3)), seed=0)


def test_tsne_of_ten_clustered_prototypes_does_not_collapse() -> None:
    """Perplexity C − 1 made every class an equal neighbour and the 1-D embedding collapsed
    to a point (every margin 0); the clamp keeps a spread and the clusters contiguous."""
    rng = np.random.default_rng(3)
    centers = np.array([[0.0] * 4, [6.0] * 4])
    P = np.concatenate([centers[0] + rng.normal(size=(5, 4)), centers[1] + rng.normal(size=(5, 4))])
    for seed in (0, 1):
        s = tsne_coordinates(P, seed=seed)
        assert s.std() > 1e-3
        assert set(np.argsort(s)[:5].tolist()) in ({0, 1, 2, 3, 4}, {5, 6, 7, 8, 9})


def test_dyswrm_similarity_is_standardised_and_learns() -> None:
    torch.manual_seed(0)
    sim = DySWRMSimilarity(np.array(COORDS) * 50.0)
    s = sim.standardised()
    assert s.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert s.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    # Same margins as the raw coordinates: the scale of s does not matter.
    w, m = sim.weights_and_margins(np.array(COUNTS), 3, 1.0)
    w_ref, m_ref = window_weights_and_margins(np.array(COUNTS), np.array(COORDS), 3, 1.0)
    np.testing.assert_allclose(m.detach().numpy(), m_ref, rtol=1e-5)
    np.testing.assert_allclose(w.detach().numpy(), w_ref, rtol=1e-5)
    logits = torch.randn(8, 5)
    loss = swrm_loss(logits, torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), w, m).mean()
    loss.backward()
    assert sim.s.grad is not None and torch.all(torch.isfinite(sim.s.grad))
    assert sim.s.grad.abs().sum().item() > 0


def test_initial_similarity() -> None:
    a = initial_similarity(5, "random", seed=1)
    np.testing.assert_array_equal(a, initial_similarity(5, "random", seed=1))
    assert not np.array_equal(a, initial_similarity(5, "random", seed=2))
    np.testing.assert_array_equal(initial_similarity(5, "tsne", 0, np.array(COORDS)), COORDS)
    with pytest.raises(ValueError, match="tsne_coords"):
        initial_similarity(5, "tsne", 0)


def test_swrm_terms_apply_the_ablation_switches() -> None:
    counts, coords = np.array(COUNTS), np.array(COORDS)
    w_ref, m_ref = window_weights_and_margins(counts, coords, 3, 1.0)
    w, m = swrm_terms(counts, coords, SWRMParams(W=3, beta=1.0))
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(m, m_ref)
    w, m = swrm_terms(counts, coords, SWRMParams(W=3, beta=1.0, components="swm"))
    np.testing.assert_array_equal(w, np.ones(5))
    np.testing.assert_array_equal(m, m_ref)
    w, m = swrm_terms(counts, coords, DySWRMParams(W=3, beta=1.0, components="swr"))
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(m, np.zeros(5))
    w, m = swrm_terms(counts, coords, SWRMParams(W=3, beta=1.0, components="none"))
    np.testing.assert_array_equal(w, np.ones(5))
    np.testing.assert_array_equal(m, np.zeros(5))
    w, m = swrm_terms(counts, coords, SWRMParams(W=3, beta=1.0, margin_sign="ldam"))
    np.testing.assert_array_equal(m, -m_ref)  # eq. (4) then subtracts m_y from z_y, as LDAM


def test_ldam_sign_makes_the_target_harder_by_hand() -> None:
    """z = (2, 1), y = 0, m_0 = 0.5, w = 1: paper +m → log(1 + e^(1−2−0.5)); ldam −m →
    log(1 + e^(1−2+0.5))."""
    z, y = np.array([[2.0, 1.0]]), np.array([0])
    paper = swrm_loss(z, y, np.ones(2), np.array([0.5, 0.0]))
    ldam = swrm_loss(z, y, np.ones(2), np.array([-0.5, 0.0]))
    assert paper[0] == pytest.approx(math.log(1 + math.exp(-1.5)))
    assert ldam[0] == pytest.approx(math.log(1 + math.exp(-0.5)))


def test_confusion_affinity_and_similarity_objective_by_hand() -> None:
    P = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.0, 0.3, 0.7]], dtype=torch.float64)
    A1 = confusion_update(None, P, 0.9)
    # diagonal zeroed, symmetrised: A_01 = (0.2 + 0.4)/2, A_02 = (0.1 + 0)/2, A_12 = (0.1 + 0.3)/2
    torch.testing.assert_close(A1, torch.tensor([[0, 0.3, 0.05], [0.3, 0, 0.2], [0.05, 0.2, 0]],
                                                dtype=torch.float64))
    A2 = confusion_update(A1, torch.eye(3, dtype=torch.float64), 0.9)  # no confusion this epoch
    torch.testing.assert_close(A2, 0.9 * A1)
    s = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)  # standardised: (−1.2247, 0, 1.2247)
    z = (s - s.mean()) / s.std(unbiased=False)
    want = 2 * (0.3 * (z[0] - z[1]) ** 2 + 0.05 * (z[0] - z[2]) ** 2 + 0.2 * (z[1] - z[2]) ** 2)
    torch.testing.assert_close(similarity_objective(s, A1), want)
