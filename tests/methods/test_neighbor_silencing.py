"""Neighbor-silencing loss and auxiliary-data helpers against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.methods.neighbor_silencing import (
    NSParams,
    aux_per_target_counts,
    drop_aux_logits,
    epoch_indices,
    find_neighbors,
    neighbor_matrix,
    ns_loss,
    sample_aux_indices,
    select_aux_classes,
)
from explore.splits import Split

# 2 targets (0, 1) then 3 auxiliary classes: aux 2 and 3 found from target 0, aux 4 from 1.
NEIGHBOR = np.array(
    [
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
    ],
    dtype=bool,
)
COUNTS = np.array([200.0, 8.0, 50.0, 30.0, 45.0])


def test_neighbor_matrix_links_each_aux_class_to_its_targets_only() -> None:
    np.testing.assert_array_equal(neighbor_matrix(2, [0, 0, 1]), NEIGHBOR)
    # An auxiliary class found from both targets neighbours both.
    both = neighbor_matrix(2, [(0, 1)])
    np.testing.assert_array_equal(both, [[0, 0, 1], [0, 0, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match=r"aux_parent\[1\] = 2 is not a target index"):
        neighbor_matrix(2, [0, 2])


def test_ns_loss_matches_explicit_loop() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)) * 2
    targets = np.array([0, 1, 2, 3, 4, 0])
    lam = 0.1
    loss = ns_loss(logits, targets, COUNTS, NEIGHBOR, lam)
    assert isinstance(loss, np.ndarray) and loss.shape == (6,)
    for k in range(6):
        y = targets[k]
        acc = 0.0
        for j in range(5):
            if j == y:
                continue
            weight = lam if NEIGHBOR[y, j] else 1.0
            acc += weight * math.exp(
                math.log(COUNTS[j]) - math.log(COUNTS[y]) + logits[k, j] - logits[k, y]
            )
        assert loss[k] == pytest.approx(math.log(1 + acc), rel=1e-12)


def test_lambda_one_is_balanced_softmax_cross_entropy() -> None:
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 4, 1, 0, 2])
    counts = torch.tensor(COUNTS)
    loss = ns_loss(logits, targets, counts, torch.tensor(NEIGHBOR), 1.0)
    expected = F.cross_entropy(logits + counts.log(), targets, reduction="none")
    torch.testing.assert_close(loss, expected)


def test_silencing_lowers_loss_only_for_samples_with_neighbours_in_play() -> None:
    logits = np.zeros((2, 5))
    # Target 0 has neighbours; a 2-target/0-aux label space has none.
    l_small = ns_loss(logits, np.array([0, 1]), COUNTS, NEIGHBOR, 0.01)
    l_one = ns_loss(logits, np.array([0, 1]), COUNTS, NEIGHBOR, 1.0)
    assert np.all(l_small < l_one)
    no_nb = np.zeros((5, 5), dtype=bool)
    np.testing.assert_allclose(ns_loss(logits, np.array([0, 1]), COUNTS, no_nb, 0.01), l_one)


def test_ns_loss_is_stable_and_differentiable() -> None:
    logits = torch.tensor([[500.0, -500.0, 0.0, 0.0, 0.0]] * 2, requires_grad=True)
    loss = ns_loss(logits, torch.tensor([0, 1]), torch.tensor(COUNTS), torch.tensor(NEIGHBOR),
                   0.1)
    assert torch.all(torch.isfinite(loss))
    assert loss[1].item() == pytest.approx(1000.0 + math.log(200 / 8), rel=1e-6)
    loss.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


@pytest.mark.parametrize("lam", [0.0, -0.1, 1.5, float("nan")])
def test_lambda_out_of_range_raises(lam: float) -> None:
    with pytest.raises(ValueError, match=r"lambda_s must be in \(0, 1\]"):
        ns_loss(np.zeros((1, 5)), np.array([0]), COUNTS, NEIGHBOR, lam)
    with pytest.raises(ValueError, match=r"lambda_s must be in \(0, 1\]"):
        NSParams(lambda_s=lam)


def test_ns_loss_shape_errors() -> None:
    with pytest.raises(ValueError, match="neighbor must be a 5×5"):
        ns_loss(np.zeros((1, 5)), np.array([0]), COUNTS, NEIGHBOR[:4, :4], 0.1)
    with pytest.raises(ValueError, match="counts must all be > 0"):
        ns_loss(np.zeros((1, 5)), np.array([0]), np.array([1, 0, 1, 1, 1.0]), NEIGHBOR, 0.1)


def test_find_neighbors_ranks_by_cosine_similarity() -> None:
    targets = np.array([[1.0, 0.0], [0.0, 2.0]])
    # Lengths vary (cosine ignores them); aux 0 and 3 mirror each other about the y axis.
    aux = np.array([[4.0, 1.0], [3.0, 12.0], [0.5, 0.5], [-4.0, 1.0]])
    # cos to x: .970, .243, .707, -.970; cos to y: .243, .970, .707, .243 (exact tie 0 vs 3).
    assert find_neighbors(targets, aux, [2, 3]) == [[0, 2], [1, 2, 0]]
    assert find_neighbors(torch.tensor(targets), torch.tensor(aux), [0, 4]) == [[], [1, 2, 0, 3]]
    with pytest.raises(ValueError, match=r"per_target\[0\] = 5 must be in \[0, 4\]"):
        find_neighbors(targets, aux, [5, 1])


def test_select_aux_classes_reindexes_the_pool() -> None:
    pool_ids, parents = select_aux_classes([[7, 2], [2, 9]])
    assert pool_ids == [2, 7, 9]
    assert parents == [(0, 1), (0,), (1,)]
    np.testing.assert_array_equal(
        neighbor_matrix(2, parents)[:2, 2:], [[1, 1, 0], [1, 0, 1]]
    )


def test_aux_per_target_counts_follows_the_ratio() -> None:
    # N_h/N_m = 1000/300 -> ceil 4; N_h/N_t = 1000/45 -> ceil 23.
    counts = aux_per_target_counts(["many", "medium", "few", Split.FEW, "many"], 1000, 300, 45,
                                   base_count=2)
    np.testing.assert_array_equal(counts, [2, 8, 46, 46, 2])
    capped = aux_per_target_counts(["many", "few"], 1000, 300, 45, base_count=2,
                                   max_per_target=10)
    np.testing.assert_array_equal(capped, [2, 10])
    with pytest.raises(ValueError, match="expected 'many', 'medium' or 'few'"):
        aux_per_target_counts(["head"], 1000, 300, 45, base_count=2)
    with pytest.raises(ValueError, match="target 0 is medium but that split's sample total is 0"):
        aux_per_target_counts(["medium"], 1000, 0, 45, base_count=2)


def test_sample_aux_indices_caps_each_class() -> None:
    labels = np.repeat([0, 1, 2, 3], [3, 60, 50, 51])
    rng = np.random.default_rng(0)
    idx = sample_aux_indices(labels, 50, rng)
    assert len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [3, 50, 50, 50])
    again = sample_aux_indices(labels, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, again)
    other = sample_aux_indices(labels, 50, np.random.default_rng(1))
    assert not np.array_equal(idx, other)  # the subset is redrawn with the seed
    with pytest.raises(ValueError, match="rng is required"):
        sample_aux_indices(labels)


def test_epoch_indices_keep_every_target_sample_and_cap_each_aux_class() -> None:
    # Targets 0, 1, 2; auxiliary classes 3 (5 samples) and 4 (2 samples); cap 3. Labels
    # interleaved, so positions must map back correctly.
    labels = np.array([3, 0, 4, 3, 1, 3, 2, 3, 4, 2, 0, 3, 2])
    targets = [1, 4, 6, 9, 10, 12]  # positions of labels 0, 1 and 2
    aux3, aux4 = [0, 3, 5, 7, 11], [2, 8]
    seen3: set[int] = set()
    for seed in range(8):
        idx = epoch_indices(labels, 3, 3, np.random.default_rng(seed))
        assert len(idx) == 6 + 3 + 2 and len(set(idx.tolist())) == len(idx)  # no repeats
        chosen = set(idx.tolist())
        assert set(targets) <= chosen  # every target sample, once
        assert len(chosen & set(aux3)) == 3  # at most the cap: 3 of class 3's 5
        assert set(aux4) <= chosen  # class 4 has fewer than the cap: all of it
        assert chosen <= set(targets) | set(aux3) | set(aux4)
        seen3 |= chosen & set(aux3)
        np.testing.assert_array_equal(idx, epoch_indices(labels, 3, 3, np.random.default_rng(seed)))
    assert seen3 == set(aux3)  # the capped subset is redrawn with the generator
    # One shuffled order, not the targets followed by the auxiliary samples.
    firsts = [set(epoch_indices(labels, 3, 3, np.random.default_rng(s))[:6].tolist())
              for s in range(4)]
    assert any(first != set(targets) for first in firsts)


def test_drop_aux_logits_keeps_target_columns() -> None:
    logits = torch.arange(10.0).reshape(2, 5)
    torch.testing.assert_close(drop_aux_logits(logits, 2), torch.tensor([[0.0, 1.0], [5.0, 6.0]]))
    np.testing.assert_array_equal(drop_aux_logits(logits.numpy(), 5), logits.numpy())
    with pytest.raises(ValueError, match="num_targets"):
        drop_aux_logits(logits, 6)
