"""Backbone registry: architecture name -> ``nn.Module`` with ``embed`` and a linear ``classifier``.

Every backbone is a :class:`Backbone`: ``embed(x)`` gives the ``(N, d)`` features that the
feature store caches, ``classifier`` maps them to logits, so ``model(x) ==
model.classifier(model.embed(x))``. A long-tail method that needs another head (e.g.
LFM's cosine classifier against text features) swaps ``classifier`` for any module
mapping ``(N, d) -> (N, C)``; the training loop only ever calls ``model(x)``.

Architectures:

- ``small_cnn``: three conv blocks, 128-d features; for 28×28 grayscale Fashion-MNIST, it
  reaches good accuracy in a few CPU epochs.
- ``resnet32``: the CIFAR ResNet-32 of He et al. (2016, §4.2) as used by LDAM (Cao et
  al., 2019) and SWRM: 3 stages × 5 basic blocks, 16/32/64 channels, parameter-free
  "option A" shortcuts (stride-2 subsampling + zero channel padding), 64-d features.
- ``resnet18``, ``resnet50``, ``resnext50_32x4d``: torchvision's, when torchvision is
  importable (``pip install torchvision``); the stem is rebuilt for ``in_channels != 3``.

How images become tensors is a :class:`Preprocess` (normalisation and resize). It is part of
the feature-cache spec, together with :func:`weights_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explore.backbone.train_config import (
    ARCHITECTURES,
    CPU_ARCHITECTURES,
    TORCHVISION_ARCHITECTURES,
)
from explore.data.types import ImageSplit

__all__ = [
    "ARCHITECTURES",
    "Backbone",
    "BackboneError",
    "ModelSpec",
    "Preprocess",
    "build_model",
    "default_preprocess",
    "load_batch",
    "to_tensor",
    "unwrap",
    "weights_digest",
]


class BackboneError(ValueError):
    """A backbone could not be built or fed (unknown arch, missing torchvision, bad images)."""


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------

FASHION_MNIST_MEAN_STD = ((0.2860,), (0.3530,))
"""Per-channel mean/std of the Fashion-MNIST training images (pixel values in [0, 1])."""
CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become the float tensors a backbone sees.

    Part of the feature-cache spec: features computed under two different ``Preprocess``
    values are different features. ``as_dict()`` is its stable, JSON-friendly form.
    """

    mean: tuple[float, ...]
    """Per-channel mean, subtracted after scaling pixels to [0, 1]; its length = channel count."""
    std: tuple[float, ...]
    """Per-channel standard deviation, divided by after the mean is subtracted."""
    size: int | None = None
    """Resize to ``size × size`` (bilinear, antialiased) before normalising; None keeps the size."""

    def __post_init__(self) -> None:
        if len(self.mean) not in (1, 3) or len(self.mean) != len(self.std):
            raise ValueError(
                f"Preprocess mean/std must both have 1 or 3 entries, got {len(self.mean)} and "
                f"{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocess std must be positive, got {self.std}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"Preprocess size must be a positive int or None, got {self.size}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def as_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "size": self.size}


def to_tensor(images: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """uint8 ``N×H×W`` or ``N×H×W×3`` images -> normalised float32 ``N×C×H×W`` tensor.

    Grayscale images are repeated to 3 channels when ``pre`` expects 3 (Fashion-MNIST
    through an ImageNet-style ResNet); colour images are never silently dropped to gray.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise BackboneError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    elif images.ndim == 4 and images.shape[-1] == 3:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    else:
        raise BackboneError(f"images must be N×H×W or N×H×W×3 uint8, got shape {images.shape}")
    x = x.float().div_(255.0)
    if x.shape[1] != pre.channels:
        if x.shape[1] == 1:
            x = x.expand(-1, pre.channels, -1, -1)
        else:
            raise BackboneError(
                f"got {x.shape[1]}-channel images for a {pre.channels}-channel backbone; "
                "build the model with in_channels=3"
            )
    if pre.size is not None and tuple(x.shape[-2:]) != (pre.size, pre.size):
        x = F.interpolate(x, size=(pre.size, pre.size), mode="bilinear", antialias=True,
                          align_corners=False)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def load_batch(
    split: ImageSplit,
    indices: np.ndarray,
    pre: Preprocess,
    decode: Callable[[str], np.ndarray] | None = None,
) -> torch.Tensor:
    """The images ``split[indices]`` as a preprocessed float tensor (CPU).

    In-memory splits are sliced; path splits are read with ``decode(path) -> uint8 H×W×3``
    one file at a time, on whichever process calls this (a Ray worker reads its own shard).
    Files of one batch must decode to one size: readers of variable-size images resize.
    """
    if split.images is not None:
        return to_tensor(split.images[indices], pre)
    if decode is None:
        raise BackboneError("this split holds file paths: pass decode=(path -> uint8 H×W×3 array)")
    assert split.paths is not None
    arrays = [np.asarray(decode(split.paths[int(i)])) for i in indices]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise BackboneError(
            f"decode returned images of different shapes in one batch ({sorted(shapes)[:3]}); "
            "make the reader resize to a fixed size"
        )
    return to_tensor(np.stack(arrays), pre)


def default_preprocess(arch: str, in_channels: int, size: int | None = None) -> Preprocess:
    """The usual normalisation for an architecture: Fashion-MNIST statistics for
    ``small_cnn`` on grayscale, CIFAR statistics for ``resnet32``, ImageNet statistics for the
    torchvision models (grayscale input uses the mean of the three)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if arch == "small_cnn" and in_channels == 1:
        mean, std = FASHION_MNIST_MEAN_STD
    elif arch in ("small_cnn", "resnet32"):
        mean, std = CIFAR_MEAN_STD
    else:
        mean, std = IMAGENET_MEAN_STD
    if in_channels == 1 and len(mean) == 3:
        mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
    return Preprocess(mean=mean, std=std, size=size)


# ---------------------------------------------------------------------------------------------
# The Backbone wrapper
# ---------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A feature extractor plus a linear classifier: ``forward(x) = classifier(embed(x))``."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int,
                 preprocess: Preprocess, arch: str) -> None:
        super().__init__()
        self.features = features
        self.classifier: nn.Module = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.preprocess = preprocess
        self.arch = arch

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim)`` features: what the feature store caches."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def unwrap(model: nn.Module) -> Backbone:
    """The :class:`Backbone` inside a DDP / DataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, Backbone):
        raise BackboneError(f"expected a Backbone (from build_model), got {type(inner).__name__}")
    return inner


def _small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *block(in_channels, 32), nn.MaxPool2d(2),  # 28 -> 14
        *block(32, 64), nn.MaxPool2d(2),           # 14 -> 7
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return features, 128


class _BasicBlockA(nn.Module):
    """CIFAR ResNet basic block with the parameter-free "option A" shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            # Zero channels split evenly on both sides, as in He et al.'s option A.
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _resnet32(in_channels: int) -> tuple[nn.Module, int]:
    blocks_per_stage = 5  # depth 6n + 2 = 32
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
                               nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    c_in = 16
    for stage, c_out in enumerate((16, 32, 64)):
        for b in range(blocks_per_stage):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(_BasicBlockA(c_in, c_out, stride))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    features = nn.Sequential(*layers)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return features, 64


def _torchvision(name: str) -> Callable[[int, bool], tuple[nn.Module, int]]:
    def make(in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
        try:
            import torchvision.models as tvm
        except Exception as e:  # ImportError, or a wheel that fails to load its ops
            raise BackboneError(
                f"arch {name!r} needs torchvision ({type(e).__name__}: {e}); "
                "pip install torchvision (matching your torch build), or use small_cnn / resnet32"
            ) from e
        net = getattr(tvm, name)(weights="DEFAULT" if pretrained else None)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                  old.padding, bias=False)
            if pretrained:  # keep the pretrained stem: average its RGB filters
                with torch.no_grad():
                    net.conv1.weight.copy_(old.weight.mean(dim=1, keepdim=True)
                                           .repeat(1, in_channels, 1, 1))
        dim = int(net.fc.in_features)
        net.fc = nn.Identity()
        return net, dim

    return make


_CPU_BUILDERS: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "small_cnn": _small_cnn,
    "resnet32": _resnet32,
}
_TORCHVISION = TORCHVISION_ARCHITECTURES
assert tuple(_CPU_BUILDERS) == CPU_ARCHITECTURES  # the names live in train_config (no torch)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a backbone again (on a Ray worker, or to load a checkpoint)."""

    arch: str
    """One of :data:`ARCHITECTURES`."""
    num_classes: int
    in_channels: int = 1
    """1 for grayscale (Fashion-MNIST), 3 for colour."""
    pretrained: bool = False
    """torchvision models only: start from torchvision's default ImageNet weights (downloaded
    by torchvision, so it needs network access or a warm torch hub cache)."""
    preprocess: Preprocess | None = field(default=None)
    """None: :func:`default_preprocess` for the arch."""
    classifier: Callable[[int], nn.Module] | None = field(default=None, compare=False)
    """Replaces the linear classifier: called with the feature dimension, it returns the
    module that maps features to the ``num_classes`` logits (e.g. LFM stage 1's cosine
    classifier against fixed text features). It must pickle (built on every worker)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {list(ARCHITECTURES)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.pretrained and self.arch not in _TORCHVISION:
            raise ValueError(f"pretrained=True is only available for {list(_TORCHVISION)}")
        if self.preprocess is not None and self.preprocess.channels != self.in_channels:
            raise ValueError(
                f"preprocess has {self.preprocess.channels} channels but in_channels="
                f"{self.in_channels}"
            )

    def resolved_preprocess(self) -> Preprocess:
        return self.preprocess or default_preprocess(self.arch, self.in_channels)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, classifier=None))
        d["preprocess"] = self.resolved_preprocess().as_dict()
        d["classifier"] = None if self.classifier is None else repr(self.classifier)[:200]
        return d

    def build(self) -> Backbone:
        if self.arch in _CPU_BUILDERS:
            features, dim = _CPU_BUILDERS[self.arch](self.in_channels)
        else:
            features, dim = _torchvision(self.arch)(self.in_channels, self.pretrained)
        model = Backbone(features, dim, self.num_classes, self.resolved_preprocess(), self.arch)
        if self.classifier is not None:
            model.classifier = self.classifier(dim)
        return model


def build_model(arch: str, num_classes: int, in_channels: int = 1, *, pretrained: bool = False,
                preprocess: Preprocess | None = None) -> Backbone:
    """Build a backbone by name (see :data:`ARCHITECTURES`)."""
    return ModelSpec(arch, num_classes, in_channels, pretrained, preprocess).build()


def weights_digest(model: nn.Module, *, keys: Sequence[str] | None = None) -> str:
    """sha256 hex digest of the model's ``state_dict`` (names, dtypes, shapes and bytes, in
    sorted key order), for the feature-cache key: features from different weights never
    share a cache entry. DDP wrappers are unwrapped so that the digest does not depend on
    how the model was trained. ``keys`` restricts it to some entries (e.g. only
    ``features.*``)."""
    state = getattr(model, "module", model).state_dict()
    h = hashlib.sha256()
    for name in sorted(keys if keys is not None else state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # view as bytes: numpy has no bfloat16, and this is exact for every dtype
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
