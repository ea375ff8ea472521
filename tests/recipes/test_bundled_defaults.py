"""The methods' bundled defaults (issue 20, item 13), through the config and the recipes:
LFM's stage 2 trains with the paper's optimiser settings from whichever space runs it;
LFM's reference is plain CE even when the sweep uses MMS; neighbor silencing's bundled
``aux_base_count`` is resolved from the auxiliary pool (the paper's 5 where it fits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from explore.config import load
from explore.methods.neighbor_silencing import fitting_base_count
from explore.recipes import get_recipe
from explore.recipes import lfm as lfm_recipe
from explore.recipes.neighbor_silencing import build_ns_problem
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import head_data

LFM_STAGE2 = HeadTrainConfig(epochs=10, batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0,
                             min_lr_ratio=0.001, select="last")


@pytest.mark.parametrize("argv", [["lfm_alpha_tau"], ["alphanet_k", "method=lfm", "space={}"],
                                  ["ns_lambda", "method=lfm", "space={}"]])
def test_lfm_trains_stage2_the_same_from_any_space(argv):
    cfg = load(argv)
    assert cfg.method == "lfm" and cfg.head == LFM_STAGE2


def test_lfm_stage2_settings_are_still_overridable_and_other_methods_keep_the_shared_head():
    assert load(["lfm_alpha_tau", "head.lr=0.005"]).head.lr == 0.005
    assert load(["lfm_alpha_tau", "head=default"]).head == HeadTrainConfig()
    assert load(["alphanet_k"]).head == HeadTrainConfig()
    assert load(["swrm_window"]).head == HeadTrainConfig()


def test_lfm_reference_is_plain_ce_even_with_mms(inputs, spy_on):
    recipe = get_recipe("lfm")
    params = recipe.params({"mms": True, "alpha": 0.5})
    own = recipe.own_reference(params)
    assert own is not None and own.name == "cosine_ce"
    ref = own.params
    assert (ref.mixup, ref.mms) == (False, False)
    spy = spy_on(lfm_recipe)
    recipe.fit_head(inputs, ref, [0])
    call = spy.calls[0]
    assert call["model"].scale == params.logit_scale  # CE on scaled cosines, not MMS's 1/T
    assert call["plugins"].mix is None
    logits = torch.randn(6, 9, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6)
    torch.testing.assert_close(call["plugins"].loss(logits, y, 0),
                               F.cross_entropy(logits, y, reduction="none"))


def test_fitting_base_count_by_hand():
    assert fitting_base_count(1, 1000) == 5  # the paper's count where the pool allows
    assert fitting_base_count(3, 1000) == 5  # ImageNet-LT's 1 : 1 : 3
    assert fitting_base_count(2, 3) == 1  # Fashion-MNIST-LT-open: 3 auxiliary classes, 1 : 2 : 2
    assert fitting_base_count(2, 5) == 2
    assert fitting_base_count(94, 3) == 1  # never 0
    with pytest.raises(ValueError):
        fitting_base_count(0, 3)


def test_bundled_ns_config_resolves_the_base_count_from_the_pool(inputs):
    """The bundled method config (null) on the synthetic pool of 5 auxiliary classes with
    4 many / 2 medium / 3 few targets (1 : 2 : 2): base ⌊5/2⌋ = 2, so 2 per many target
    and 4 per medium or few target; the paper's 5 would give every target the whole pool."""
    settings = dict(load(["ns_lambda"]).method_settings)
    assert settings["aux_base_count"] is None
    recipe = get_recipe("neighbor_silencing")
    params = recipe.params({**settings, "neighbor_source": "prototype"})
    problem = build_ns_problem(inputs.features, params, head_data(inputs))
    assert problem.resolved["aux_base_count"] == 2
    assert problem.resolved["aux_per_target"] == [2] * 4 + [4] * 5
    paper = build_ns_problem(inputs.features, recipe.params({**settings, "aux_base_count": 5,
                                                             "neighbor_source": "prototype"}),
                             head_data(inputs))
    assert paper.resolved["aux_per_target"] == [5] * 9
