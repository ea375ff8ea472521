"""Stacked seeds equal sequential seeds, for every head method, through the code trials run.

Each method trains the same seeds once with ``head.seeds_stacked=true`` (one batched head)
and once with ``false`` (one seed after another): the selected epochs, the validation
curves and every accuracy must be identical, and each seed's logits equal within 1e-5.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from explore.plugins import Plugins
from explore.recipes import RECIPES, BaseRecipe, get_recipe
from explore.recipes import lfm as lfm_recipe
from explore.recipes import neighbor_silencing as ns_recipe
from explore.recipes import swrm as swrm_recipe
from explore.recipes.alphanet import train_alphanet
from explore.recipes.bases import BaseSpec, train_base
from explore.training.head import fit_heads, predict_logits, seeded_linear
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import TrialInputs, splits_of
from explore.training.posthoc import build_posthoc_inputs
from tests.recipes.conftest import FAST

SEEDS = [3, 4, 5]
# Method cases beyond the bases: (recipe, settings, the module whose train_seeds to spy on).
HEAD_CASES = {
    "swrm": ("swrm", {"W": 4, "beta": 2.0}, swrm_recipe),
    "dyswrm_confusion": ("dyswrm", {"W": 3}, swrm_recipe),
    "dyswrm_loss": ("dyswrm", {"W": 3, "s_objective": "loss"}, swrm_recipe),
    "neighbor_silencing": ("neighbor_silencing", {"lambda_s": 0.3}, ns_recipe),
    "lfm": ("lfm", {"alpha": 1.0, "tau": 0.05}, lfm_recipe),
    "lfm_mms": ("lfm", {"alpha": 0.5, "tau": 0.25, "mms": True, "lambda_per_batch": False},
                lfm_recipe),
    "lfm_nomix": ("lfm", {"mixup": False}, lfm_recipe),
}
BASES = sorted(name for name, recipe in RECIPES.items() if isinstance(recipe, BaseRecipe))


@pytest.fixture()
def stacked_runs(monkeypatch) -> list[int]:
    """How many seeds each stacked training had (so a test knows stacking really ran)."""
    from explore.training import stacked

    runs: list[int] = []
    real = stacked.fit_stacked

    def counted(models, *args, **kwargs):
        runs.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(stacked, "fit_stacked", counted)
    return runs


def _with(inputs: TrialInputs, stacked: bool, **head) -> TrialInputs:
    return dataclasses.replace(
        inputs, head=dataclasses.replace(FAST, seeds_stacked=stacked, **head))


def _assert_same_results(stacked, sequential):
    for a, b in zip(stacked.results, sequential.results, strict=True):
        assert (a.seed, a.best_epoch) == (b.seed, b.best_epoch)
        assert a.val_curve == b.val_curve
        assert a.test == b.test and a.val == b.val
        assert a.records.keys() == b.records.keys()
        for key, value in a.records.items():
            assert value == pytest.approx(b.records[key], abs=1e-5), key
    assert stacked.resolved == sequential.resolved


def test_every_head_method_is_covered():
    covered = set(BASES) | {case[0] for case in HEAD_CASES.values()} | {"alphanet"}
    assert covered == set(RECIPES)


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_stacked_seeds_equal_sequential_seeds(case, inputs, neighbor_map, spy_on, stacked_runs):
    name, settings, module = HEAD_CASES[case]
    if name == "neighbor_silencing":
        settings = {**settings, "neighbor_map": neighbor_map}
    recipe = get_recipe(name)
    params = recipe.params(settings)
    fits, models = {}, {}
    for stacked in (True, False):
        spy = spy_on(module)
        fits[stacked] = recipe.fit_head(_with(inputs, stacked), params, SEEDS)
        models[stacked] = [call["model"] for call in spy.calls]
        assert stacked_runs == [len(SEEDS)]  # one stacked run, and none when sequential
    _assert_same_results(fits[True], fits[False])
    test_x = inputs.features.test.features
    for a, b in zip(models[True], models[False], strict=True):
        torch.testing.assert_close(predict_logits(a, test_x), predict_logits(b, test_x),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", BASES)
def test_stacked_seeds_equal_sequential_seeds_for_every_base(name, inputs, stacked_runs):
    recipe = get_recipe(name)
    assert isinstance(recipe, BaseRecipe)
    params = recipe.params({"tau": 0.7} if name in ("tau_norm", "logit_adjustment") else {})
    splits, test_x = splits_of(inputs.features), inputs.features.test.features
    classifiers = {stacked: recipe.train_classifiers(
        splits, 9, dataclasses.replace(FAST, seeds_stacked=stacked), params, SEEDS)
        for stacked in (True, False)}
    assert stacked_runs == ([] if name == "ncm" else [3, 3] if name == "lws" else [3])
    for a, b in zip(classifiers[True], classifiers[False], strict=True):
        np.testing.assert_allclose(a.logits(test_x), b.logits(test_x), rtol=0, atol=1e-5)
    _assert_same_results(recipe.fit_head(_with(inputs, True), params, SEEDS),
                         recipe.fit_head(_with(inputs, False), params, SEEDS))


@pytest.mark.parametrize("neighbors", ["nearest", "random"])
def test_alphanet_stacked_equals_one_seed_at_a_time(neighbors, inputs):
    """AlphaNet's own batched training (stacked unless seeds_stacked=false) against one
    call per seed: the corrections (the few-class logits' weights) within 1e-5."""
    splits = splits_of(inputs.features)
    crt = train_base(BaseSpec.from_mapping({"name": "crt"}, FAST), splits, 9, 0)
    posthoc = build_posthoc_inputs(splits, crt, 9, inputs.thresholds)
    recipe = get_recipe("alphanet")
    params = recipe.params({"k": 2, "epochs": 6, "neighbors": neighbors})
    together = train_alphanet(posthoc, params, SEEDS)
    for r, seed in enumerate(SEEDS):
        alone = train_alphanet(posthoc, params, [seed])
        assert alone.best_epoch == [together.best_epoch[r]]
        np.testing.assert_allclose(alone.alpha_tilde[0], together.alpha_tilde[r], atol=1e-5)
        np.testing.assert_allclose(alone.few_bias[0], together.few_bias[r], atol=1e-5)
    with_posthoc = dataclasses.replace(inputs, posthoc=posthoc)
    _assert_same_results(recipe.fit_head(_with(with_posthoc, True), params, SEEDS),
                         recipe.fit_head(_with(with_posthoc, False), params, SEEDS))


@pytest.mark.parametrize("optimizer,select", [("adam", "best_val"), ("sgd", "last")])
def test_stacked_loop_with_adam_and_last_epoch_selection(optimizer, select, inputs):
    """The other optimiser and selection rule, with a plug-in parameter and an epoch-end
    step: each seed's plug-ins see their own model and their own epochs."""
    cfg = HeadTrainConfig(epochs=5, batch_size=32, lr=0.02, optimizer=optimizer, select=select)
    train, val = (inputs.features.train.features, inputs.features.train.labels), None
    if select == "best_val":
        val = (inputs.features.val.features, inputs.features.val.labels)
    results = {}
    for stacked in (True, False):
        seen: dict[int, list[float]] = {seed: [] for seed in SEEDS}

        def plugins(seed: int) -> Plugins:
            temperature = torch.nn.Parameter(torch.ones(()))

            def loss(logits, targets, epoch):
                return torch.nn.functional.cross_entropy(logits * temperature, targets,
                                                         reduction="none")

            def record(epoch, model, stats, seed=seed):
                seen[seed].append(float(model.weight.detach().sum()) + stats["train_loss"])

            return Plugins(loss=loss, on_epoch_end=record, parameters=(temperature,))

        models = [seeded_linear(16, 9, seed) for seed in SEEDS]
        fits = fit_heads(models, train, val, cfg, seeds=SEEDS,
                         plugins=[plugins(seed) for seed in SEEDS], stacked=stacked)
        results[stacked] = (fits, seen)
    for a, b in zip(results[True][0], results[False][0], strict=True):
        assert a.best_epoch == b.best_epoch and a.val_curve == b.val_curve
        torch.testing.assert_close(a.model.weight, b.model.weight, rtol=0, atol=1e-5)
    for seed in SEEDS:
        np.testing.assert_allclose(results[True][1][seed], results[False][1][seed], atol=1e-4)


def test_auto_stacks_on_a_gpu_only():
    cfg = HeadTrainConfig()
    assert cfg.seeds_stacked == "auto"
    assert cfg.stacks_seeds(torch.device("cuda", 0)) and not cfg.stacks_seeds(torch.device("cpu"))
    assert HeadTrainConfig(seeds_stacked=True).stacks_seeds(torch.device("cpu"))
    assert not HeadTrainConfig(seeds_stacked=False).stacks_seeds(torch.device("cuda", 0))
    with pytest.raises(ValueError, match="seeds_stacked"):
        HeadTrainConfig(seeds_stacked="yes")  # type: ignore[arg-type]
