"""Every tensor of a head trial lives on the device the trial was given.

On the CPU: a trial runs with ``device=cpu`` while torch's *default* device is ``meta``
(tensors with no data). A tensor that a recipe, a plug-in, the loop or the evaluation
creates without following the trial's device lands on ``meta``, and the first operation
mixing it with the trial's tensors fails (or a result cannot be read back): so a passing
run shows that every tensor was placed on the trial's device. On a CUDA machine the same
trials run on ``cuda`` and must match the CPU results within float tolerance.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from explore.recipes import RECIPES, get_recipe
from explore.recipes.bases import BaseSpec, train_base
from explore.training.inputs import TrialInputs, splits_of
from explore.training.posthoc import build_posthoc_inputs
from tests.recipes.conftest import FAST

SEEDS = [3, 4]
CASES = {
    **{name: (name, {"tau": 0.7} if name in ("tau_norm", "logit_adjustment") else {})
       for name in ("ce", "crt", "lws", "tau_norm", "ncm", "logit_adjustment",
                    "balanced_softmax")},
    "swrm": ("swrm", {"W": 4, "beta": 2.0}),
    "dyswrm": ("dyswrm", {"W": 3}),
    "dyswrm_loss": ("dyswrm", {"W": 3, "s_objective": "loss"}),
    "neighbor_silencing": ("neighbor_silencing", {"lambda_s": 0.3}),
    "lfm": ("lfm", {"alpha": 1.0, "tau": 0.05}),
    "lfm_mms": ("lfm", {"alpha": 0.5, "tau": 0.25, "mms": True}),
    "alphanet": ("alphanet", {"k": 2, "epochs": 4}),
    "alphanet_random": ("alphanet", {"k": 2, "epochs": 4, "neighbors": "random",
                                     "learn_bias": True}),
}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_every_method_is_covered():
    assert {name for name, _ in CASES.values()} == set(RECIPES)


def _trial(case: str, inputs: TrialInputs, neighbor_map: str, device: torch.device,
           stacked: bool):
    name, settings = CASES[case]
    recipe = get_recipe(name)
    if name == "neighbor_silencing":
        settings = {**settings, "neighbor_map": neighbor_map}
    head = dataclasses.replace(FAST, seeds_stacked=stacked)
    posthoc = None
    if recipe.posthoc:
        splits = splits_of(inputs.features)
        crt = train_base(BaseSpec.from_mapping({"name": "crt"}, FAST), splits, 9, 0)
        posthoc = build_posthoc_inputs(splits, crt, 9, inputs.thresholds)
    trial = dataclasses.replace(inputs, posthoc=posthoc, head=head, device=device)
    return recipe.fit_head(trial, recipe.params(settings), SEEDS)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "sequential"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_trial_places_every_tensor_on_its_device(case, stacked, inputs, neighbor_map):
    cpu = torch.device("cpu")
    want = _trial(case, inputs, neighbor_map, cpu, stacked)
    with torch.device("meta"):  # a tensor not put on the trial's device lands here
        got = _trial(case, inputs, neighbor_map, cpu, stacked)
    assert [r.test for r in got.results] == [r.test for r in want.results]
    assert all(0 <= r.test["acc_overall"] <= 1 for r in got.results)


@CUDA
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_trial_on_cuda_matches_the_cpu(case, inputs, neighbor_map):
    """The same seeds on the GPU (stacked, as ``auto`` trains there) and on the CPU: equal
    accuracies within a few test samples, the same validation curves within rounding."""
    cpu = _trial(case, inputs, neighbor_map, torch.device("cpu"), stacked=False)
    gpu = _trial(case, inputs, neighbor_map, torch.device("cuda", 0), stacked=True)
    n_test = len(inputs.features.test.labels)
    for a, b in zip(gpu.results, cpu.results, strict=True):
        assert a.test["acc_overall"] == pytest.approx(b.test["acc_overall"], abs=3 / n_test)
        assert a.test["top5_overall"] == pytest.approx(b.test["top5_overall"], abs=3 / n_test)
        assert len(a.val_curve) == len(b.val_curve)


@CUDA
def test_a_head_trained_on_cuda_keeps_its_logits_within_tolerance(inputs):
    """One linear head, seed by seed: the CUDA weights and logits equal the CPU ones
    within float tolerance, and the trained model is on the GPU."""
    from explore.plugins import Plugins
    from explore.training.head import fit_heads, predict_logits, seeded_linear

    train = (inputs.features.train.features, inputs.features.train.labels)
    val = (inputs.features.val.features, inputs.features.val.labels)
    fits = {}
    for device, stacked in ((torch.device("cpu"), False), (torch.device("cuda", 0), True)):
        models = [seeded_linear(16, 9, seed) for seed in SEEDS]
        fits[device.type] = fit_heads(models, train, val, FAST, seeds=SEEDS,
                                      plugins=[Plugins() for _ in SEEDS], device=device,
                                      stacked=stacked)
    test_x = inputs.features.test.features
    for g, c in zip(fits["cuda"], fits["cpu"], strict=True):
        assert g.model.weight.device.type == "cuda"
        torch.testing.assert_close(predict_logits(g.model, test_x).cpu(),
                                   predict_logits(c.model, test_x), rtol=1e-4, atol=1e-4)
