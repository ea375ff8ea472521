"""Per-split accuracy worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from explore.evaluation import accuracy_by_split, evaluate_logits


def test_accuracy_by_split_by_hand():
    # classes 0,1 many; 2 medium; 3 few. Six samples: two wrong, one of them predicted
    # INTO the few class (a sample of class 0 called 3): that counts against class 0's
    # split (many), never for the few split.
    split_of_class = np.array(["many", "many", "medium", "few"], dtype=object)
    labels = np.array([0, 0, 1, 2, 3, 3])
    pred = np.array([0, 3, 1, 1, 3, 3])
    acc = accuracy_by_split(pred, labels, split_of_class)
    assert acc["acc_many"] == 2 / 3     # samples 0,1,2: right, wrong (→ few), right
    assert acc["acc_medium"] == 0.0     # sample 3: class 2 called 1
    assert acc["acc_few"] == 1.0        # samples 4,5
    assert acc["acc_overall"] == 4 / 6


def test_a_split_without_samples_is_nan_not_zero():
    acc = accuracy_by_split(np.array([0, 1]), np.array([0, 1]), np.array(["many", "many", "few"], dtype=object))
    assert math.isnan(acc["acc_few"]) and math.isnan(acc["acc_medium"])


def test_top5_by_hand():
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6]])
    # sample 0 (label 4): rank 5 → in top 5; sample 1 (label 0): rank 6 → not
    out = evaluate_logits(logits, np.array([4, 0]), np.array(["many"] * 6, dtype=object))
    assert out["top5_overall"] == 0.5
    assert out["acc_overall"] == 0.0
