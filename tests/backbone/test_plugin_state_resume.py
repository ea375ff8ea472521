"""A resumed backbone run with a stateful plug-in (DySWRM) equals an uninterrupted one: the
loop checkpoints the plug-ins' own state (the confusion EMA, Adam's moments of ``s``) and
restores it, and refuses a checkpoint that lacks it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explore.backbone import BackboneTrainConfig, build_model, train_backbone, weights_digest
from explore.data.types import ImageSplit
from explore.methods.swrm import DySWRMParams
from explore.plugins import Plugins
from explore.recipes.swrm import dyswrm_plugins
from tests.backbone.images import bars

C = 4
COUNTS = np.array([40.0, 20.0, 10.0, 5.0])
PARAMS = DySWRMParams(W=3, beta=1.0, s_objective="confusion", s_steps=5, s_lr=0.1)
CFG = BackboneTrainConfig(epochs=4, batch_size=32, lr=0.05)


def four_classes(n: int, seed: int) -> ImageSplit:
    """Noisy images with four labels (the bars' orientation and which half they lie in)."""
    split = bars(n, seed)
    rng = np.random.default_rng(seed + 7)
    return ImageSplit(labels=split.labels * 2 + rng.integers(0, 2, n), images=split.images)


def cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", C)


def make_plugins() -> Plugins:
    init = np.random.default_rng(3).normal(size=C)
    return dyswrm_plugins(COUNTS, init, PARAMS)


def test_resumed_dyswrm_run_equals_an_uninterrupted_one():
    train = four_classes(96, 0)
    whole, plugins = cnn(), make_plugins()
    states: list[dict | None] = []
    train_backbone(whole, train, None, CFG, plugins, report=lambda m, s: states.append(s))
    after_epoch1 = states[1]
    assert after_epoch1 is not None
    saved = after_epoch1["plugin_state"]
    assert saved["affinity"] is not None and saved["s_optimizer"]["state"]  # EMA and Adam moments

    resumed_plugins = make_plugins()  # a fresh plug-in: its state must come from the checkpoint
    resumed = cnn(seed=99)
    out = train_backbone(resumed, train, None, CFG, resumed_plugins, start_state=after_epoch1)
    assert [m["epoch"] for m in out["history"]] == [2, 3]
    assert torch.equal(resumed_plugins.parameters[0], plugins.parameters[0])  # s
    assert resumed_plugins.records == plugins.records
    assert weights_digest(resumed) == weights_digest(whole)
    assert torch.equal(resumed_plugins.state_dict()["affinity"], plugins.state_dict()["affinity"])


def test_resume_without_the_plugin_state_changes_the_run_so_it_is_refused():
    train = four_classes(96, 0)
    whole, plugins = cnn(), make_plugins()
    states: list[dict | None] = []
    train_backbone(whole, train, None, CFG, plugins, report=lambda m, s: states.append(s))
    after_epoch1 = dict(states[1] or {})

    # What resuming used to do (s restored, EMA and Adam state reset) ends elsewhere ...
    reset = make_plugins()
    no_state = Plugins(loss=reset.loss, on_epoch_end=reset.on_epoch_end,
                       parameters=reset.parameters, records=reset.records)
    train_backbone(cnn(), train, None, CFG, no_state,
                   start_state={**after_epoch1, "plugin_state": None})
    assert not torch.equal(reset.parameters[0], plugins.parameters[0])

    # ... so a checkpoint without the state the plug-ins keep is refused, and vice versa.
    with pytest.raises(ValueError, match="holds no plug-in state"):
        train_backbone(cnn(), train, None, CFG, make_plugins(),
                       start_state={**after_epoch1, "plugin_state": None})
    with pytest.raises(ValueError, match="plug-ins keep none"):
        train_backbone(cnn(), train, None, CFG, no_state, start_state=after_epoch1)


def test_plugins_need_both_state_functions():
    with pytest.raises(ValueError, match="both"):
        Plugins(state_dict=dict)
