"""Backbone architectures without Ray: the registry, preprocessing, batch loading and the
weights digest. Tiny synthetic images, CPU only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explore.backbone import (
    ARCHITECTURES,
    BackboneError,
    ModelSpec,
    Preprocess,
    build_model,
    load_batch,
    to_tensor,
    weights_digest,
)
from explore.data.types import ImageSplit
from tests.backbone.images import bars, fresh_cnn


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
    except Exception:  # noqa: BLE001  # as models.py: ImportError, or ops that fail to load
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
