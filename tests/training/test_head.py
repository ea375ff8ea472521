"""The head loop: model selection, plug-ins, and evaluation at the selected epoch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from explore.plugins import Plugins
from explore.training.head import fit_head, reporting_epochs, select_epoch
from explore.training.head_config import HeadTrainConfig
from tests.support.synthetic import feature_arrays


@pytest.mark.parametrize("curve,first,want", [
    ([0.2, 0.5, 0.7, 0.6, 0.4], 1, 3),   # peaks mid-run
    ([0.2, 0.7, 0.5, 0.7, 0.4], 1, 2),   # a tie keeps the earlier epoch
    ([0.9, 0.5, 0.6, 0.55], 2, 3),        # epochs before `first` cannot be selected
    ([], 1, 6),                           # no validation: the last epoch
])
def test_select_epoch(curve, first, want):
    assert select_epoch(curve, num_epochs=6, first_epoch=first) == want


def test_fit_head_returns_the_weights_of_its_best_validation_epoch():
    """The loop's own curve is recomputed here from each epoch's saved weights: the model
    it returns is the one of the (first) best epoch, not the last."""
    arrays = feature_arrays(seed=1, d=8)
    train, val = arrays["train"], arrays["val"]
    states: list[dict] = []
    plugins = Plugins(on_epoch_end=lambda e, model, stats: states.append(copy.deepcopy(model.state_dict())))
    cfg = HeadTrainConfig(epochs=8, batch_size=32, lr=0.5)  # a large lr: a bumpy curve
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 9)
    fit = fit_head(model, train, val, cfg, seed=0, plugins=plugins)
    accs = []
    for state in states:
        probe = torch.nn.Linear(8, 9)
        probe.load_state_dict(state)
        with torch.no_grad():
            pred = probe(torch.as_tensor(val[0])).argmax(1).numpy()
        accs.append(float((pred == val[1]).mean()))
    best = int(np.argmax(accs))
    assert fit.val_curve == pytest.approx(accs)
    assert best != len(accs) - 1, "pick a setting whose curve does not peak at the end"
    assert fit.best_epoch == best + 1
    for name, value in fit.model.state_dict().items():
        torch.testing.assert_close(value, states[best][name])


def test_plugins_see_epoch_and_generator_in_both_loops_signatures():
    arrays = feature_arrays(seed=2, d=4)
    seen: dict[str, list] = {"loss": [], "sample": [], "mix": []}

    def loss(z, y, epoch):
        seen["loss"].append(epoch)
        return torch.nn.functional.cross_entropy(z, y, reduction="none")

    def sample(labels, epoch, rng):
        seen["sample"].append((epoch, isinstance(rng, np.random.Generator)))
        return rng.permutation(len(labels))[:50]

    def mix(x, y, epoch, rng):
        seen["mix"].append(epoch)
        return x, y

    cfg = HeadTrainConfig(epochs=3, batch_size=25, select="last")
    fit_head(torch.nn.Linear(4, 9), arrays["train"], None, cfg, seed=0,
             plugins=Plugins(loss=loss, sample_indices=sample, mix=mix))
    assert seen["sample"] == [(0, True), (1, True), (2, True)]
    assert seen["mix"] == [0, 0, 1, 1, 2, 2]  # 50 samples per epoch in batches of 25
    assert seen["loss"] == [0, 0, 1, 1, 2, 2]


def test_adam_with_cosine_to_a_floor():
    cfg = HeadTrainConfig(epochs=4, optimizer="adam", lr=0.01, min_lr_ratio=0.001, select="last")
    arrays = feature_arrays(seed=3, d=4)
    lrs: list[float] = []
    model = torch.nn.Linear(4, 9)

    def record(epoch, m, stats):
        lrs.append(epoch)

    fit_head(model, arrays["train"], None, cfg, seed=0, plugins=Plugins(on_epoch_end=record))
    assert lrs == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="optimizer"):
        HeadTrainConfig(optimizer="rmsprop")


@pytest.mark.parametrize("select", ["best_val", "last"])
def test_reporting_epochs_sees_every_epochs_validation_top1(select):
    """The hook gets (seed, epoch, val top-1) after each epoch, recomputed here from the
    weights saved at that epoch; outside the block nothing is reported."""
    arrays = feature_arrays(seed=1, d=8)
    states: list[dict] = []
    plugins = Plugins(on_epoch_end=lambda e, model, stats: states.append(copy.deepcopy(model.state_dict())))
    cfg = HeadTrainConfig(epochs=4, batch_size=32, lr=0.5, select=select)
    seen: list[tuple[int, int, float]] = []
    with reporting_epochs(lambda *args: seen.append(args)):
        fit_head(torch.nn.Linear(8, 9), arrays["train"], arrays["val"], cfg, seed=3, plugins=plugins)
    fit_head(torch.nn.Linear(8, 9), arrays["train"], arrays["val"], cfg, seed=4)
    accs = []
    for state in states:
        probe = torch.nn.Linear(8, 9)
        probe.load_state_dict(state)
        with torch.no_grad():
            accs.append(float((probe(torch.as_tensor(arrays["val"][0])).argmax(1).numpy()
                               == arrays["val"][1]).mean()))
    assert [(s, e) for s, e, _ in seen] == [(3, 1), (3, 2), (3, 3), (3, 4)]
    assert [a for _, _, a in seen] == pytest.approx(accs)


def test_a_hook_that_raises_ends_training():
    """How a scheduler's stop reaches the loop: the exception leaves fit_head."""
    arrays = feature_arrays(seed=1, d=8)
    epochs: list[int] = []

    def stop_after_two(seed: int, epoch: int, acc: float) -> None:
        epochs.append(epoch)
        if epoch == 2:
            raise SystemExit(0)

    with pytest.raises(SystemExit), reporting_epochs(stop_after_two):
        fit_head(torch.nn.Linear(8, 9), arrays["train"], arrays["val"],
                 HeadTrainConfig(epochs=6, batch_size=32), seed=0)
    assert epochs == [1, 2]
