"""Text encoder: real embeddings of Fashion-MNIST class names (offline MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from explore import text_encoder
from explore.text_encoder import TextEncoderUnavailableError, encode_class_names, encoder_name

CLASSES = ["T-shirt/top", "Shirt", "Sandal", "Sneaker"]


@pytest.fixture(autouse=True)
def _no_clip_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(text_encoder.CLIP_CHECKPOINT_ENV, raising=False)


def test_shirt_is_closer_to_tshirt_than_to_sandal() -> None:
    emb, name = encode_class_names(CLASSES)
    assert emb.shape[0] == 4 and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    assert cos[1, 0] > cos[1, 2]
    assert name == encoder_name()
    assert "all-MiniLM-L6-v2" in name


def test_encoding_is_deterministic_across_loads() -> None:
    first = encode_class_names(CLASSES).embeddings
    text_encoder._load_minilm.cache_clear()
    second = encode_class_names(list(reversed(CLASSES))).embeddings
    np.testing.assert_array_equal(first, second[::-1])


def test_prompt_changes_the_embedding() -> None:
    plain = encode_class_names(["Bag"], prompt="{}").embeddings
    photo = encode_class_names(["Bag"]).embeddings
    assert not np.allclose(plain, photo)
    with pytest.raises(ValueError, match=r"exactly one '\{\}'"):
        encode_class_names(["Bag"], prompt="a photo")


def test_configured_but_missing_clip_checkpoint_is_an_error(tmp_path) -> None:
    missing = tmp_path / "clip.pt"
    with pytest.raises(TextEncoderUnavailableError, match="does not exist"):
        encode_class_names(CLASSES, clip_checkpoint=missing)
