"""Base recipes on cached features (explore/recipes/bases.py): each is a LinearClassifier,
class-balanced bases lift the few split over CE, NCM, τ-norm and logit adjustment match
hand computations, and a base sweeps like any method."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.evaluation import evaluate_logits
from explore.plugins import Plugins
from explore.recipes import RECIPES, BaseRecipe, get_recipe
from explore.recipes._recipe import evaluate_classifier
from explore.recipes.bases import BaseSpec, TauNormTrialParams, train_base
from explore.splits import SplitThresholds
from explore.training.head import fit_head
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import TrialInputs
from explore.training.posthoc import LinearClassifier
from tests.support.synthetic import feature_arrays

CFG = HeadTrainConfig(epochs=12, batch_size=64, lr=0.05)
# A steeper tail than tests/support's default, so plain CE visibly neglects few classes.
COUNTS = (400, 300, 200, 150, 60, 30, 8, 5, 3)


@pytest.fixture(scope="module")
def splits():
    return feature_arrays(seed=1, d=16, counts=COUNTS)


@pytest.fixture(scope="module")
def trained(splits):
    C = len(COUNTS)
    out = {}
    for name in (n for n, r in RECIPES.items() if isinstance(r, BaseRecipe)):
        spec = BaseSpec(name, CFG)
        out[name] = train_base(spec, splits, C, seed=0)
    return out


def _few_acc(clf: LinearClassifier, splits) -> float:
    x, y = splits["test"]
    split_of_class = SplitThresholds().split_of_class(np.asarray(COUNTS))
    return evaluate_logits(clf.logits(x), y, split_of_class)["acc_few"]


def test_every_base_is_a_valid_linear_classifier(trained, splits):
    C, d = len(COUNTS), splits["train"][0].shape[1]
    for name, clf in trained.items():
        assert isinstance(clf, LinearClassifier), name
        assert clf.weight.shape == (C, d) and clf.bias.shape == (C,), name
        assert clf.weight.dtype == np.float32 and clf.bias.dtype == np.float32, name
        assert np.isfinite(clf.weight).all() and np.isfinite(clf.bias).all(), name


def test_class_balanced_bases_raise_few_accuracy_over_ce(trained, splits):
    ce = _few_acc(trained["ce"], splits)
    for name in ("crt", "lws", "tau_norm", "balanced_softmax", "logit_adjustment"):
        assert _few_acc(trained[name], splits) >= ce + 0.1, (name, _few_acc(trained[name], splits), ce)


def test_ncm_predicts_the_nearest_class_mean(trained, splits):
    x_train, y_train = splits["train"]
    C = len(COUNTS)
    means = [x_train[y_train == c].astype(np.float64).mean(axis=0) for c in range(C)]
    x = splits["test"][0][:200].astype(np.float64)
    expected = []
    for f in x:  # explicit distances, one sample at a time
        dists = [float(np.sqrt(((f - m) ** 2).sum())) for m in means]
        expected.append(int(np.argmin(dists)))
    pred = trained["ncm"].logits(x.astype(np.float32)).argmax(1)
    assert pred.tolist() == expected


def test_ncm_cosine_predicts_the_most_similar_mean(splits):
    spec = BaseSpec.from_mapping({"name": "ncm", "metric": "cosine"})
    clf = train_base(spec, splits, len(COUNTS), seed=0)
    x_train, y_train = splits["train"]
    means = [x_train[y_train == c].astype(np.float64).mean(axis=0) for c in range(len(COUNTS))]
    x = splits["test"][0][:100].astype(np.float64)
    expected = [int(np.argmax([f @ m / (np.linalg.norm(f) * np.linalg.norm(m)) for m in means])) for f in x]
    assert clf.logits(x.astype(np.float32)).argmax(1).tolist() == expected


def test_tau_norm_rescales_the_ce_rows(trained, splits):
    ce = trained["ce"]  # tau_norm trains the same CE classifier (same seed and settings)
    for tau in (0.0, 0.5, 1.0):
        clf = train_base(BaseSpec("tau_norm", CFG, TauNormTrialParams(tau)), splits, len(COUNTS), seed=0)
        for c in range(len(COUNTS)):
            norm = float(np.sqrt((ce.weight[c].astype(np.float64) ** 2).sum()))
            np.testing.assert_allclose(clf.weight[c], ce.weight[c] / norm**tau, rtol=1e-5)
        assert (clf.bias == 0).all()
    kept = train_base(BaseSpec("tau_norm", CFG, TauNormTrialParams(1.0, keep_bias=True)), splits, len(COUNTS), seed=0)
    np.testing.assert_array_equal(kept.bias, ce.bias)


def test_lws_scales_each_ce_row_and_bias_by_one_factor(trained):
    ce, lws = trained["ce"], trained["lws"]
    scales = lws.bias / ce.bias
    np.testing.assert_allclose(lws.weight, ce.weight * scales[:, None], rtol=1e-4, atol=1e-6)
    assert not np.allclose(scales, 1.0)  # the scales were learned


def test_balanced_softmax_bias_excludes_log_counts(trained, splits):
    """The returned classifier is the one trained on z + log n, without the log n."""
    C = len(COUNTS)
    log_n = torch.log(torch.tensor(COUNTS, dtype=torch.float32))
    torch.manual_seed(0)
    head = torch.nn.Linear(splits["train"][0].shape[1], C)
    fit_head(head, splits["train"], splits["val"], CFG, seed=0,
             plugins=Plugins(loss=lambda z, y, e: F.cross_entropy(z + log_n, y, reduction="none")))
    np.testing.assert_allclose(trained["balanced_softmax"].bias, head.bias.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trained["balanced_softmax"].weight, head.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_base_settings_are_validated():
    head = HeadTrainConfig(epochs=3)
    spec = BaseSpec.from_mapping({"name": "tau_norm", "tau": 0.5}, head)
    assert spec.settings == TauNormTrialParams(0.5) and spec.train.epochs == 3
    other_tau = BaseSpec.from_mapping({"name": "tau_norm", "tau": 1.0}, head)
    assert spec.cache_spec() != other_tau.cache_spec()
    # the training settings are part of the key too
    assert spec.cache_spec() != BaseSpec.from_mapping({"name": "tau_norm", "tau": 0.5}).cache_spec()
    # training settings belong to the shared `head` group, and the error says so
    with pytest.raises(ValueError, match=r"unknown setting.*epochs.*`head` group"):
        BaseSpec.from_mapping({"name": "tau_norm", "tau": 0.5, "epochs": 3})
    with pytest.raises(ValueError, match="tau"):
        BaseSpec.from_mapping({"name": "tau_norm", "tau": -1.0})
    with pytest.raises(ValueError, match=r"unknown setting.*tau"):
        BaseSpec.from_mapping({"name": "crt", "tau": 0.5})
    with pytest.raises(ValueError, match="metric"):
        BaseSpec.from_mapping({"name": "ncm", "metric": "manhattan"})
    with pytest.raises(ValueError, match="unknown base"):
        BaseSpec.from_mapping({"name": "nope"})
    assert dataclasses.asdict(BaseSpec.from_mapping({"name": "crt"}).settings) == {}


def test_logit_adjustment_at_tau_1_is_balanced_softmax(trained, splits):
    """One maths function: the same loss, the same trained classifier."""
    np.testing.assert_array_equal(trained["logit_adjustment"].weight, trained["balanced_softmax"].weight)
    np.testing.assert_array_equal(trained["logit_adjustment"].bias, trained["balanced_softmax"].bias)


def test_logit_adjustment_trains_on_tau_times_log_priors(splits):
    """The classifier trained with the loss ``CE(z + τ·log π, y)`` written out by hand,
    predicting with the plain ``z``."""
    C, tau = len(COUNTS), 0.5
    log_priors = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    torch.manual_seed(2)
    head = torch.nn.Linear(splits["train"][0].shape[1], C)
    fit_head(head, splits["train"], splits["val"], CFG, seed=2,
             plugins=Plugins(loss=lambda z, y, e: F.cross_entropy(z + tau * log_priors, y,
                                                                  reduction="none")))
    spec = BaseSpec.from_mapping({"name": "logit_adjustment", "tau": tau}, CFG)
    clf = train_base(spec, splits, C, seed=2)
    np.testing.assert_allclose(clf.weight, head.weight.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(clf.bias, head.bias.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_base_sweeps_like_a_method_one_classifier_per_seed(splits):
    """fit_head of a base recipe: each seed's classifier, evaluated as the reference rows are."""
    from explore.store import FeatureSet, FeatureSplit

    fset = FeatureSet({n: FeatureSplit(x, y) for n, (x, y) in splits.items()},
                      tuple(f"c{c}" for c in range(len(COUNTS))))
    recipe = get_recipe("tau_norm")
    params = recipe.params({"tau": 0.5})
    th = SplitThresholds()
    fit = recipe.fit_head(TrialInputs(fset, None, th, CFG), params, [0, 1])
    assert [r.seed for r in fit.results] == [0, 1]
    for result in fit.results:
        clf = recipe.train_classifier(splits, len(COUNTS), CFG, params, result.seed)
        assert result.test == evaluate_classifier(clf, fset, th, result.seed).test
        assert result.train_seconds > 0
    assert fit.results[0].test != fit.results[1].test  # really per seed
    assert recipe.columns(params) == {"tau": 0.5}
