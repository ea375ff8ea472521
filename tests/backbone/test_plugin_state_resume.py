"""A resumed backbone run with a stateful plug-in (DySWRM) equals an uninterrupted one: the
loop checkpoints the plug-ins' own state (the confusion EMA, Adam's moments of ``s``) and
restores it, and refuses a checkpoint that lacks it."""

from __future__ import annotations

import dataclasses
import functools
import os

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


def _dyswrm_killed_once(flag: str) -> Plugins:
    """DySWRM whose worker dies once, after epoch 1's checkpoint (the flag file says it did)."""
    plugins = make_plugins()
    inner = plugins.on_epoch_end
    assert inner is not None

    def on_epoch_end(epoch: int, model: torch.nn.Module, stats: dict[str, float]) -> None:
        inner(epoch, model, stats)
        if epoch == 2 and not os.path.exists(flag):
            open(flag, "w").close()
            raise RuntimeError("worker lost after epoch 1")

    return dataclasses.replace(plugins, on_epoch_end=on_epoch_end)


@pytest.mark.ray
def test_a_ray_train_job_killed_after_an_epoch_resumes_to_the_uninterrupted_result(
        ray_cluster, tmp_path):
    """The real full-mode path: checkpoints written by Ray Train, the failed job rerun under
    its name resumes from the last one; weights and DySWRM's records equal a run that was
    never interrupted (the same loop in this process, as one Train worker runs it)."""
    from explore.backbone import ModelSpec
    from explore.backbone.ray_job import run_backbone_job

    spec = ModelSpec("small_cnn", num_classes=C)
    train = four_classes(96, 0)
    torch.manual_seed(CFG.seed)  # as a Train worker builds its model
    uninterrupted, plugins = spec.build(), make_plugins()
    train_backbone(uninterrupted, train, None, CFG, plugins)
    whole = uninterrupted.state_dict()
    flag = str(tmp_path / "killed")
    killed_once = functools.partial(_dyswrm_killed_once, flag)
    with pytest.raises(Exception, match="worker lost after epoch 1"):
        run_backbone_job(spec, train, None, CFG, killed_once, str(tmp_path), run_name="resumed")
    assert os.path.exists(flag)
    resumed, metrics = run_backbone_job(spec, train, None, CFG, killed_once, str(tmp_path),
                                        run_name="resumed")
    assert metrics["epoch"] == CFG.epochs - 1
    assert metrics["plugin_records"] == plugins.records
    assert metrics["plugin_records"]["order_changes"] >= 1  # s really moved
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
