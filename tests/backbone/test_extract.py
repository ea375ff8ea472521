"""Feature extraction for the feature store: deterministic, equal to the model's own
``embed``, and the same from in-memory images and from paths. Tiny images, CPU only."""

from __future__ import annotations

import numpy as np
import torch

from explore.backbone import (
    BackboneTrainConfig,
    build_model,
    extract_features,
    to_tensor,
    train_backbone,
)
from explore.data.types import ImageSplit
from tests.backbone.images import bars, fresh_cnn


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
