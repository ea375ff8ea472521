"""The reference is a recipe with its params, run on the sweep's seeds (one path in
``prepare``): a base recipe's classifiers are cached by everything they depend on, a
post-hoc method's base is trained once and reported on every seed, a given classifier is a
post-hoc method's base. Imported features: no backbone, no Ray."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from explore.config import compose, sweep_config
from explore.pipeline import prepare, reference_of
from explore.recipes import get_recipe
from explore.recipes._recipe import evaluate_classifier
from explore.recipes.bases import BaseSpec, train_base
from explore.store import FeatureStore
from explore.training.inputs import TrialInputs, splits_of
from tests.support.synthetic import write_feature_dir
from tests.support.torch_threads import one_torch_thread

FAST = ["head.epochs=3", "head.batch_size=64"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def _config(space: str, tmp_path, *overrides: str, classifier: bool = False):
    feats = write_feature_dir(tmp_path / "feats", classifier=classifier)
    args = [f"features={feats}", f"storage_uri={tmp_path / 'store'}", *FAST, *overrides]
    return sweep_config(compose(space, args), space)


def test_a_training_time_reference_is_the_base_recipe_run_like_a_sweep_and_cached(tmp_path, caplog):
    cfg = _config("swrm_window", tmp_path, "base=tau_norm", "base.tau=0.5", "repeats=2", "seed=3")
    store = FeatureStore(cfg.storage_uri)
    prepared = prepare(cfg, get_recipe("swrm"), store)
    ref = prepared.reference
    assert ref.name == "tau_norm" and not ref.deterministic and prepared.base_key is None
    assert [r.seed for r in ref.results] == [3, 4] and len(set(ref.keys)) == 2
    # the same rows a sweep of method=tau_norm with tau=0.5 gives on these seeds
    tau_norm = get_recipe("tau_norm")
    fset = store.read(prepared.feature_key)
    fit = tau_norm.fit_head(TrialInputs(fset, None, cfg.splits, cfg.head),
                            tau_norm.params({"tau": 0.5}), [3, 4])
    assert [r.test for r in ref.results] == [r.test for r in fit.results]
    assert [r.val for r in ref.results] == [r.val for r in fit.results]

    caplog.set_level(logging.INFO, logger="explore")
    caplog.clear()
    again = prepare(cfg, get_recipe("swrm"), store)
    assert again.reference.keys == ref.keys and "base: training" not in caplog.text
    assert "base: cached tau_norm seed 3" in caplog.text
    assert [r.test for r in again.reference.results] == [r.test for r in ref.results]
    other_tau = _config("swrm_window", tmp_path, "base=tau_norm", "base.tau=0.25", "repeats=2",
                        "seed=3")
    assert not set(prepare(other_tau, get_recipe("swrm"), store).reference.keys) & set(ref.keys)


def test_a_post_hoc_base_is_trained_once_on_seed_and_reported_on_every_seed(tmp_path):
    cfg = _config("alphanet_k", tmp_path, "base=lws", "repeats=3", "seed=2")
    store = FeatureStore(cfg.storage_uri)
    prepared = prepare(cfg, get_recipe("alphanet"), store)
    ref = prepared.reference
    assert ref.name == "lws" and ref.deterministic
    assert ref.keys == [prepared.base_key] * 3 and [r.seed for r in ref.results] == [2, 3, 4]
    fset = store.read(prepared.feature_key)
    lws = train_base(BaseSpec("lws", cfg.head), splits_of(fset), fset.num_classes, seed=2)
    want = evaluate_classifier(lws, fset, cfg.splits, seed=2)
    assert all(r.test == want.test and r.val == want.val for r in ref.results)
    arrays, _ = store.get_arrays(prepared.base_key, "classifier")  # what the trials load
    np.testing.assert_array_equal(arrays["weight"], lws.weight)


def test_a_given_classifier_is_the_post_hoc_base_but_not_a_training_time_reference(tmp_path):
    cfg = _config("alphanet_k", tmp_path, "repeats=2", classifier=True)
    store = FeatureStore(cfg.storage_uri)
    prepared = prepare(cfg, get_recipe("alphanet"), store)
    assert prepared.reference.name == "given" and prepared.reference.deterministic
    assert prepared.base_key is not None and store.has_arrays(prepared.base_key, "classifier")
    swrm = dataclasses.replace(cfg, method="swrm", method_settings={})
    assert prepare(swrm, get_recipe("swrm"), store).reference.name == "crt"


@pytest.mark.parametrize("space,method,name", [
    ("lfm_alpha_tau", "lfm", "cosine_ce"),  # the method's own reference
    ("swrm_window", "swrm", "ce"),  # the base group's
    ("alphanet_k", "alphanet", "crt"),  # a post-hoc method corrects the base group's
])
def test_reference_of_names_one_recipe_with_params(space, method, name, tmp_path):
    cfg = _config(space, tmp_path)
    ref = reference_of(cfg, get_recipe(method))
    assert ref.name == name
    assert isinstance(ref.params, ref.recipe.params_type)
    if name == "cosine_ce":  # LFM's control: the same params without mixup
        params = get_recipe("lfm").params(cfg.method_settings)
        assert ref.recipe is get_recipe("lfm") and ref.params == dataclasses.replace(params, mixup=False)
    else:
        assert ref.recipe is get_recipe(name)
