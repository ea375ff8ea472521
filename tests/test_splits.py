"""Many / medium / few at the thresholds themselves: a class with exactly ``many_above``
samples is medium (many needs more), one with exactly ``few_below`` is medium (few needs
fewer), through the threshold object, the config, and what a trial and a post-hoc method
evaluate on."""

from __future__ import annotations

import numpy as np
import pytest

from explore.config import load
from explore.evaluation import evaluate_logits
from explore.recipes.bases import BaseSpec, train_base
from explore.splits import SplitThresholds
from explore.store import FeatureSet, FeatureSplit
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import TrialInputs, head_data
from explore.training.posthoc import build_posthoc_inputs

# Counts on both sides of each default threshold (many: > 100, few: < 20).
COUNTS = np.array([101, 100, 99, 21, 20, 19, 1])
SPLIT = ["many", "medium", "medium", "medium", "medium", "few", "few"]


def test_counts_at_each_default_threshold():
    th = SplitThresholds()
    assert (th.many_above, th.few_below) == (100, 20)  # the papers' ImageNet-LT thresholds
    assert th.split_of_class(COUNTS).tolist() == SPLIT
    assert th.few_mask(COUNTS).tolist() == [s == "few" for s in SPLIT]


def test_counts_at_other_thresholds_and_the_overlap_rule():
    th = SplitThresholds(many_above=50, few_below=10)
    assert th.split_of_class(np.array([51, 50, 10, 9])).tolist() == ["many", "medium", "medium",
                                                                    "few"]
    no_medium = SplitThresholds(many_above=9, few_below=10)  # allowed: every class is many or few
    assert no_medium.split_of_class(np.array([10, 9])).tolist() == ["many", "few"]
    with pytest.raises(ValueError, match="overlap"):
        SplitThresholds(many_above=9, few_below=11)  # a count of 10 would be both


def test_the_config_passes_its_thresholds_through():
    cfg = load(["alphanet_k", "splits.many_above=50", "splits.few_below=10"])
    assert cfg.splits.split_of_class(np.array([51, 50, 10, 9])).tolist() == [
        "many", "medium", "medium", "few"]


def _features(d: int = 4) -> FeatureSet:
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(len(COUNTS)), COUNTS)
    y_eval = np.repeat(np.arange(len(COUNTS)), 3)
    splits = {name: FeatureSplit(rng.normal(size=(len(y), d)).astype(np.float32), y)
              for name, y in (("train", y_train), ("val", y_eval), ("test", y_eval))}
    return FeatureSet(splits, tuple(f"c{i}" for i in range(len(COUNTS))), {})


def test_a_trial_and_a_posthoc_method_see_the_same_boundaries():
    fset, th = _features(), SplitThresholds()
    data = head_data(TrialInputs(fset, None, th))
    assert data.counts.tolist() == COUNTS.tolist()
    assert data.split_of_class.tolist() == SPLIT
    splits = {n: (fset.splits[n].features, fset.splits[n].labels) for n in ("train", "val", "test")}
    clf = train_base(BaseSpec.from_mapping({"name": "ce"}, HeadTrainConfig(epochs=1)), splits,
                     len(COUNTS), 0)
    posthoc = build_posthoc_inputs(splits, clf, len(COUNTS), th)
    assert posthoc.split_of_class.tolist() == SPLIT
    assert posthoc.few_mask.tolist() == [s == "few" for s in SPLIT]
    assert posthoc.num_base_classes == 5


def test_per_split_accuracy_counts_each_boundary_class_in_its_split():
    """Only the classes at exactly 100 and exactly 20 samples are predicted right: both are
    medium, so medium gets 2 of 4 classes right and many and few none."""
    labels = np.arange(len(COUNTS))
    right = {1, 4}
    wrong = (labels + 1) % len(COUNTS)
    pred = np.where(np.isin(labels, list(right)), labels, wrong)
    logits = np.eye(len(COUNTS), dtype=np.float32)[pred]
    got = evaluate_logits(logits, labels, SplitThresholds().split_of_class(COUNTS))
    assert got["acc_medium"] == pytest.approx(0.5)
    assert got["acc_many"] == 0.0 and got["acc_few"] == 0.0
    assert got["acc_overall"] == pytest.approx(2 / 7)
