"""Backbones without Ray: the registry, preprocessing, the weights digest, the training loop
and its hooks, resume, and feature extraction. Tiny synthetic images, CPU only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.backbone import (
    ARCHITECTURES,
    BackboneError,
    BackboneTrainConfig,
    ModelSpec,
    Preprocess,
    TrainHooks,
    build_model,
    evaluate,
    extract_features,
    load_batch,
    lr_at,
    to_tensor,
    train_backbone,
    weights_digest,
)
from explore.backbone.loop import _rank_indices
from explore.data.types import ImageSplit


@pytest.fixture(autouse=True)
def one_thread():
    """The machine is shared and these models are tiny; restore torch's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bars(n: int, seed: int, channels: int = 0, size: int = 28) -> ImageSplit:
    """Two classes of noisy images: class 0 has a bright horizontal bar, class 1 a vertical
    one, at a random position. ``channels=3`` gives N×H×W×3 images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 90, (n, size, size)).astype(np.uint8)
    for i in range(n):
        p = rng.integers(2, size - 6)
        if y[i]:
            x[i, :, p:p + 4] += 120
        else:
            x[i, p:p + 4, :] += 120
    if channels == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    return ImageSplit(labels=y, images=x)


def fresh_cnn(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("small_cnn", 2)


FAST = BackboneTrainConfig(epochs=3, batch_size=32, lr=0.05, weight_decay=0.0)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,in_channels,size,dim", [
    ("small_cnn", 1, 28, 128), ("small_cnn", 3, 32, 128),
    ("resnet32", 3, 32, 64), ("resnet32", 1, 28, 64),
])
def test_cpu_archs_output_shapes_and_embed(arch, in_channels, size, dim):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_channels=in_channels).eval()
    x = torch.randn(5, in_channels, size, size)
    with torch.no_grad():
        feats, logits = model.embed(x), model(x)
    assert model.feature_dim == dim
    assert feats.shape == (5, dim) and logits.shape == (5, 7)
    assert torch.allclose(model.classifier(feats), logits)
    assert isinstance(model.classifier, torch.nn.Linear)


def test_resnet32_has_the_papers_depth_and_size():
    model = build_model("resnet32", num_classes=10, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 32  # 1 stem conv + 3 stages x 5 blocks x 2 convs + fc
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < n_params < 0.48e6  # He et al. 2016, Table 6: ResNet-32 has 0.46M


def test_torchvision_archs_build_or_say_how_to_install():
    try:
        import torchvision  # noqa: F401
        available = True
    except Exception:
        available = False
    for arch in ("resnet18", "resnet50", "resnext50_32x4d"):
        assert arch in ARCHITECTURES
        if available:
            model = build_model(arch, num_classes=5, in_channels=1)
            out = model(torch.randn(2, 1, 32, 32))
            assert out.shape == (2, 5)
        else:
            with pytest.raises(BackboneError, match="pip install torchvision"):
                build_model(arch, num_classes=5)


@pytest.mark.parametrize("kwargs,match", [
    ({"arch": "vgg", "num_classes": 3}, "unknown arch"),
    ({"arch": "small_cnn", "num_classes": 1}, "num_classes"),
    ({"arch": "small_cnn", "num_classes": 3, "in_channels": 2}, "in_channels"),
    ({"arch": "resnet32", "num_classes": 3, "pretrained": True}, "pretrained"),
    ({"arch": "resnet32", "num_classes": 3, "in_channels": 3,
      "preprocess": Preprocess(mean=(0.5,), std=(0.5,))}, "channels"),
])
def test_model_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec(**kwargs)


def test_weights_digest_is_stable_and_sees_every_change():
    a, b = fresh_cnn(0), fresh_cnn(0)
    d = weights_digest(a)
    assert d == weights_digest(a) == weights_digest(b)
    assert d != weights_digest(fresh_cnn(1))
    with torch.no_grad():
        a.classifier.weight[0, 0] += 1e-6
    assert weights_digest(a) != d
    with torch.no_grad():
        b.features[1].running_mean[3] = 0.5  # a buffer, not a parameter
    assert weights_digest(b) != d


def test_to_tensor_normalises_and_lays_out_channels_first():
    pre = Preprocess(mean=(0.5, 0.25, 0.0), std=(0.25, 0.5, 1.0))
    img = np.zeros((1, 2, 3, 3), dtype=np.uint8)
    img[0, 1, 2] = (255, 51, 0)
    x = to_tensor(img, pre)
    assert x.shape == (1, 3, 2, 3)
    # hand values: (v/255 - mean) / std
    assert x[0, :, 1, 2].tolist() == pytest.approx([(1 - 0.5) / 0.25, (0.2 - 0.25) / 0.5, 0.0])
    assert x[0, 0, 0, 0].item() == pytest.approx(-0.5 / 0.25)
    gray = to_tensor(np.full((2, 4, 4), 255, np.uint8), pre)  # grayscale -> 3 channels
    assert gray.shape == (2, 3, 4, 4)
    assert gray[0, :, 0, 0].tolist() == pytest.approx([2.0, 1.5, 1.0])
    resized = to_tensor(np.zeros((1, 28, 28), np.uint8), Preprocess((0.0,), (1.0,), size=32))
    assert resized.shape == (1, 1, 32, 32)
    with pytest.raises(BackboneError, match="uint8"):
        to_tensor(np.zeros((1, 4, 4), np.float32), pre)
    with pytest.raises(BackboneError, match="in_channels=3"):
        to_tensor(np.zeros((1, 4, 4, 3), np.uint8), Preprocess((0.0,), (1.0,)))


def test_load_batch_reads_paths_with_decode():
    split = bars(6, 0, channels=3)
    files = {f"img/{i}.png": split.images[i] for i in range(6)}
    by_path = ImageSplit(labels=split.labels, paths=tuple(files))
    pre = Preprocess((0.5,) * 3, (0.5,) * 3)
    idx = np.array([4, 1])
    assert torch.equal(load_batch(by_path, idx, pre, files.__getitem__),
                       load_batch(split, idx, pre))
    with pytest.raises(BackboneError, match="decode"):
        load_batch(by_path, idx, pre)


# ---------------------------------------------------------------------------------------------
# training loop
# ---------------------------------------------------------------------------------------------


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
    shards = [_rank_indices(labels, cfg, TrainHooks(), 0, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4  # 7 padded to 8: DDP needs equal step counts
    assert set(np.concatenate(shards)) == set(range(7))
    again = _rank_indices(labels, cfg, TrainHooks(), 0, 0, 2)
    assert np.array_equal(again, shards[0])
    assert not np.array_equal(_rank_indices(labels, cfg, TrainHooks(), 1, 0, 2), shards[0])


def test_training_lifts_accuracy_well_above_chance():
    train, val = bars(240, 0), bars(120, 1)
    model = fresh_cnn()
    before = evaluate(model, val)["acc"]
    out = train_backbone(model, train, val, FAST)
    assert [m["epoch"] for m in out["history"]] == [0, 1, 2]
    assert out["final"]["val_acc"] >= 0.9 > before + 0.2
    assert out["final"]["val_acc"] == evaluate(model, val)["acc"]
    assert out["final"]["dist_world_size"] == 1


def test_loss_hook_is_used_per_sample_or_scalar():
    train = bars(64, 0)
    calls: list[int] = []

    def zero_loss(logits, targets, epoch):
        calls.append(epoch)
        return 0.0 * F.cross_entropy(logits, targets)

    model = fresh_cnn()
    start = weights_digest(model)
    train_backbone(model, train, None, BackboneTrainConfig(epochs=2, batch_size=32,
                                                           weight_decay=0.0),
                   TrainHooks(loss=zero_loss))
    assert calls == [0, 0, 1, 1]  # 2 batches per epoch
    # zero loss and no weight decay: SGD never moves the parameters (BN stats still update)
    params_after = {k: v for k, v in model.state_dict().items() if "running" not in k
                    and "num_batches" not in k}
    ref = fresh_cnn().state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in params_after.items())
    assert weights_digest(model) != start  # ... the BatchNorm running statistics did move

    # a per-sample loss is averaged over the batch: it trains exactly like the default CE
    per_sample, default = fresh_cnn(), fresh_cnn()
    train_backbone(per_sample, train, None, FAST, TrainHooks(
        loss=lambda z, t, e: F.cross_entropy(z, t, reduction="none")))
    train_backbone(default, train, None, FAST)
    for (k, v), w in zip(per_sample.state_dict().items(), default.state_dict().values(),
                             strict=True):
        assert torch.allclose(v.float(), w.float(), atol=1e-5), k


def test_mix_and_sample_hooks_see_the_batches():
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
                         TrainHooks(mix=spy_mix, sample_indices=class0))
    for epoch in (0, 1):
        ys = np.concatenate([y for e, _, y in seen if e == epoch])
        assert sorted(ys.tolist()) == [0] * len(only_class0)  # each class-0 sample once
    assert all(shape[1:] == (1, 28, 28) for _, shape, _ in seen)
    # trained on class 0 only, the model predicts class 0 everywhere: half the balanced val
    assert out["final"]["val_class_acc"] == pytest.approx(0.5)


def test_extra_hook_parameters_are_trained_and_saved():
    temperature = torch.nn.Parameter(torch.tensor(1.0))
    states = []
    hooks = TrainHooks(loss=lambda z, t, e: F.cross_entropy(z * temperature, t),
                       parameters=(temperature,))
    train_backbone(fresh_cnn(), bars(64, 0), None, BackboneTrainConfig(epochs=1, batch_size=32),
                   hooks, report=lambda m, s: states.append(s))
    assert temperature.item() != 1.0
    assert states[-1]["hook_parameters"][0].item() == temperature.item()


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
                       TrainHooks(sample_indices=lambda y, e, r: np.array([0, 99])))


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


# ---------------------------------------------------------------------------------------------
# feature extraction
# ---------------------------------------------------------------------------------------------


def test_extraction_is_deterministic_and_equals_manual_embed():
    split = bars(37, 2)
    model = fresh_cnn()
    train_backbone(model, bars(64, 0), None, BackboneTrainConfig(epochs=1, batch_size=32))
    model.train()
    a = extract_features(model, split, batch_size=10)
    b = extract_features(model, split, batch_size=10)
    assert a.dtype == np.float32 and a.shape == (37, 128)
    assert np.array_equal(a, b)
    assert model.training  # mode restored

    model.eval()
    with torch.no_grad():
        manual = model.embed(to_tensor(split.images[:10], model.preprocess)).numpy()
    assert np.allclose(a[:10], manual, atol=1e-6)
    # eval-mode BatchNorm: a sample's features do not depend on the batch it is in
    assert np.allclose(extract_features(model, split, batch_size=37), a, atol=1e-5)


def test_extraction_from_paths_matches_in_memory_images():
    split = bars(12, 3, channels=3, size=32)
    files = {f"x/{i}.jpg": split.images[i] for i in range(12)}
    by_path = ImageSplit(labels=split.labels, paths=tuple(files))
    torch.manual_seed(0)
    model = build_model("resnet32", num_classes=2, in_channels=3)
    want = extract_features(model, split, batch_size=5)
    got = extract_features(model, by_path, batch_size=5, decode=files.__getitem__)
    assert want.shape == (12, 64) and np.array_equal(want, got)
