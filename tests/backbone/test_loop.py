"""The backbone training loop without Ray: configuration, schedules, rank sharding, the
method plug-ins, checkpoints and resume. Tiny synthetic images, CPU only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.backbone import (
    BackboneTrainConfig,
    evaluate,
    extract_features,
    lr_at,
    train_backbone,
    weights_digest,
)
from explore.backbone.loop import _rank_indices
from explore.plugins import Plugins
from tests.backbone.images import bars, fresh_cnn

FAST = BackboneTrainConfig(epochs=3, batch_size=32, lr=0.05, weight_decay=0.0)


def test_config_validation():
    with pytest.raises(ValueError, match="amp"):
        BackboneTrainConfig(amp=True)
    with pytest.raises(ValueError, match="lr_milestones"):
        BackboneTrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="per worker"):
        BackboneTrainConfig(batch_size=3, num_workers=2)
    with pytest.raises(ValueError, match="epochs"):
        BackboneTrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown arch"):
        BackboneTrainConfig(arch="alexnet")


def test_lr_schedules_match_hand_values():
    cos = BackboneTrainConfig(epochs=4, lr=0.2)
    assert [lr_at(cos, e) for e in range(4)] == pytest.approx(
        [0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1, 0.1 * (1 + math.cos(3 * math.pi / 4))])
    step = BackboneTrainConfig(epochs=10, lr=0.1, lr_schedule="step", lr_milestones=(3, 6),
                               warmup_epochs=2)
    assert [lr_at(step, e) for e in range(8)] == pytest.approx(
        [0.05, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])


def test_rank_shards_cover_the_epoch_with_equal_lengths():
    cfg = BackboneTrainConfig(seed=3)
    labels = np.zeros(7, dtype=np.int64)
    shards = [_rank_indices(labels, cfg, Plugins(), 0, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4  # 7 padded to 8: DDP needs equal step counts
    assert set(np.concatenate(shards)) == set(range(7))
    again = _rank_indices(labels, cfg, Plugins(), 0, 0, 2)
    assert np.array_equal(again, shards[0])
    assert not np.array_equal(_rank_indices(labels, cfg, Plugins(), 1, 0, 2), shards[0])


def test_training_lifts_accuracy_well_above_chance():
    train, val = bars(240, 0), bars(120, 1)
    model = fresh_cnn()
    before = evaluate(model, val)["acc"]
    out = train_backbone(model, train, val, FAST)
    assert [m["epoch"] for m in out["history"]] == [0, 1, 2]
    assert out["final"]["val_acc"] >= 0.9 > before + 0.2
    assert out["final"]["val_acc"] == evaluate(model, val)["acc"]
    assert out["final"]["dist_world_size"] == 1


def test_loss_plugin_is_used_per_sample_or_scalar():
    train = bars(64, 0)
    calls: list[int] = []

    def zero_loss(logits, targets, epoch):
        calls.append(epoch)
        return 0.0 * F.cross_entropy(logits, targets)

    model = fresh_cnn()
    start = weights_digest(model)
    train_backbone(model, train, None, BackboneTrainConfig(epochs=2, batch_size=32,
                                                           weight_decay=0.0),
                   Plugins(loss=zero_loss))
    assert calls == [0, 0, 1, 1]  # 2 batches per epoch
    # zero loss and no weight decay: SGD never moves the parameters (BN stats still update)
    params_after = {k: v for k, v in model.state_dict().items() if "running" not in k
                    and "num_batches" not in k}
    ref = fresh_cnn().state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in params_after.items())
    assert weights_digest(model) != start  # ... the BatchNorm running statistics did move

    # a per-sample loss is averaged over the batch: it trains exactly like the default CE
    per_sample, default = fresh_cnn(), fresh_cnn()
    train_backbone(per_sample, train, None, FAST, Plugins(
        loss=lambda z, t, e: F.cross_entropy(z, t, reduction="none")))
    train_backbone(default, train, None, FAST)
    for (k, v), w in zip(per_sample.state_dict().items(), default.state_dict().values(),
                             strict=True):
        assert torch.allclose(v.float(), w.float(), atol=1e-5), k


def test_mix_and_sample_plugins_see_the_batches():
    train = bars(80, 0)
    only_class0 = np.flatnonzero(train.labels == 0)
    seen: list[tuple[int, tuple[int, ...], np.ndarray]] = []

    def spy_mix(x, y, epoch, rng):
        seen.append((epoch, tuple(x.shape), y.numpy().copy()))
        assert x.dtype == torch.float32 and isinstance(rng, np.random.Generator)
        return x, F.one_hot(y, 2).float()  # soft targets are accepted by the default loss

    def class0(labels, epoch, rng):
        return only_class0

    model = fresh_cnn()
    out = train_backbone(model, train, bars(40, 1), BackboneTrainConfig(epochs=2, batch_size=16),
                         Plugins(mix=spy_mix, sample_indices=class0))
    for epoch in (0, 1):
        ys = np.concatenate([y for e, _, y in seen if e == epoch])
        assert sorted(ys.tolist()) == [0] * len(only_class0)  # each class-0 sample once
    assert all(shape[1:] == (1, 28, 28) for _, shape, _ in seen)
    # trained on class 0 only, the model predicts class 0 everywhere: half the balanced val
    assert out["final"]["val_class_acc"] == pytest.approx(0.5)


def test_extra_plugin_parameters_are_trained_and_saved():
    temperature = torch.nn.Parameter(torch.tensor(1.0))
    states = []
    plugins = Plugins(loss=lambda z, t, e: F.cross_entropy(z * temperature, t),
                      parameters=(temperature,))
    train_backbone(fresh_cnn(), bars(64, 0), None, BackboneTrainConfig(epochs=1, batch_size=32),
                   plugins, report=lambda m, s: states.append(s))
    assert temperature.item() != 1.0
    assert states[-1]["plugin_parameters"][0].item() == temperature.item()


def test_epoch_end_plugin_extends_the_report_and_its_records_survive_a_resume():
    train, cfg = bars(64, 0), BackboneTrainConfig(epochs=3, batch_size=32)
    seen: list[tuple[int, bool, bool]] = []

    def make_plugins() -> Plugins:
        records: dict = {}

        def on_epoch_end(epoch, model, stats):
            seen.append((epoch, isinstance(model, torch.nn.Module), "train_loss" in stats))
            stats["epoch_squared"] = float(epoch**2)
            records["epochs_seen"] = records.get("epochs_seen", ()) + (epoch,)

        return Plugins(on_epoch_end=on_epoch_end, records=records)

    plugins = make_plugins()
    reports: list[tuple[dict, dict | None]] = []
    out = train_backbone(fresh_cnn(), train, None, cfg, plugins,
                         report=lambda m, s: reports.append((m, s)))
    assert seen == [(0, True, True), (1, True, True), (2, True, True)]
    assert [m["epoch_squared"] for m in out["history"]] == [0.0, 1.0, 4.0]
    assert plugins.records == {"epochs_seen": (0, 1, 2)}
    after_epoch0 = reports[0][1]
    assert after_epoch0 is not None and after_epoch0["plugin_records"] == {"epochs_seen": (0,)}

    seen.clear()
    resumed = make_plugins()  # fresh records: what epoch 0 recorded must come from the state
    train_backbone(fresh_cnn(), train, None, cfg, resumed, start_state=after_epoch0)
    assert [epoch for epoch, _, _ in seen] == [1, 2]
    assert resumed.records == {"epochs_seen": (0, 1, 2)}


def test_resume_continues_at_the_next_epoch_and_matches_an_unbroken_run():
    train, val = bars(96, 0), bars(40, 1)
    cfg = BackboneTrainConfig(epochs=3, batch_size=32, lr=0.05, augment=True)
    reports: list[tuple[dict, dict | None]] = []
    full = fresh_cnn()
    train_backbone(full, train, val, cfg, report=lambda m, s: reports.append((m, s)))
    assert [m["epoch"] for m, _ in reports] == [0, 1, 2]
    assert all(s is not None for _, s in reports)  # checkpoint_every=1
    after_epoch0 = reports[0][1]
    assert after_epoch0["epoch"] == 0 and after_epoch0["config"]["epochs"] == 3

    resumed = fresh_cnn(seed=99)  # different init: everything must come from the state
    out = train_backbone(resumed, train, val, cfg, start_state=after_epoch0)
    assert [m["epoch"] for m in out["history"]] == [1, 2]
    assert weights_digest(resumed) == weights_digest(full)
    assert out["final"]["val_acc"] == reports[-1][0]["val_acc"]


def test_checkpoint_every_hands_state_only_at_checkpoint_epochs():
    states = []
    train_backbone(fresh_cnn(), bars(40, 0), None,
                   BackboneTrainConfig(epochs=5, batch_size=20, checkpoint_every=2),
                   report=lambda m, s: states.append(None if s is None else s["epoch"]))
    assert states == [None, 1, None, 3, 4]  # and always after the last epoch


def test_loop_rejects_mismatched_arch_and_bad_sampler():
    with pytest.raises(ValueError, match="arch"):
        train_backbone(fresh_cnn(), bars(8, 0), None, BackboneTrainConfig(arch="resnet32"))
    with pytest.raises(ValueError, match="sample_indices"):
        train_backbone(fresh_cnn(), bars(8, 0), None, FAST,
                       Plugins(sample_indices=lambda y, e, r: np.array([0, 99])))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_training_on_cuda():
    train, val = bars(240, 0), bars(120, 1)
    model = fresh_cnn()
    cfg = BackboneTrainConfig(epochs=3, batch_size=32, lr=0.05, use_gpu=True, amp=True)
    out = train_backbone(model, train, val, cfg)
    assert next(model.parameters()).is_cuda
    assert math.isfinite(out["final"]["train_loss"]) and out["final"]["val_acc"] >= 0.9
    feats = extract_features(model, val, batch_size=50, device="cuda")
    assert feats.dtype == np.float32 and feats.shape == (120, 128)
