"""LFM: text-guided local feature mixup for long-tail classification.

Paper: "Text-guided mixup towards long-tailed image categorization"
(§3 and supplementary Algorithms 1–3; docs/methods.md#lfm). Pieces:

* Eq. (1)/(4), local class sampling: with L2-normalised text features ``f_T``::

      p(j | i) = exp(f_Ti·f_Tj / τ) / Σ_{k≠i} exp(f_Ti·f_Tk / τ)   (j ≠ i),  p(i | i) = 0

  (:func:`pair_probabilities`). ``y_i`` is drawn with probability ∝ n_i, i.e. a
  uniform sample, then ``y_j ~ p(·|y_i)`` and a uniform sample of class y_j
  (:func:`sample_pairs`).
* Mixup with label shift: ``x = λ_x x_i + (1 − λ_x) x_j`` with ``λ_x ~ Beta(a, a)``,
  ``λ_y = clamp(λ_x − α (n_i − n_j)/(n_i + n_j), 0, 1)``,
  ``y = λ_y e_i + (1 − λ_y) e_j`` (:func:`label_shift`, :func:`mix`), trained with
  soft-label cross-entropy (:func:`soft_cross_entropy`).
* Classifier: cosine similarity between the projected image feature ``W_Iᵀ f_I`` and
  the fixed text features, times a scale (:func:`cosine_logits`); MMS variant
  ``(z + 0.3·D[y, :]) / 0.01`` with ``D = 1 − text cosine similarity``
  (:func:`mms_logits`).

Resolutions (docs/methods.md#lfm):

* The paper's printed denominator of p(j|i) includes k = i; we exclude it so every
  row sums to one (docs/methods.md#lfm-pair-sampling).
* Text features are L2-normalised inside every function that uses them, so callers
  may pass raw encoder output.
* ``λ_x ~ Beta(0.5, 0.5)`` in the paper; the reference code draws Beta(0.2, 0.2), one
  λ_x per batch. The Beta parameter is a knob (:attr:`LFMParams.beta_param`) and
  :func:`mix` takes a scalar (one per batch) or one λ_x per sample.
* The reference code uses raw cosines as logits (scale 1); the scale is a knob.
* MMS with mixed (soft) targets: the margin row is the soft-target mixture of rows of
  D, ``Σ_c t_c D[c, :]``, which equals ``D[y, :]`` for a one-hot target (ours; the
  paper does not say).
* :func:`mix` interpolates any trailing shape, so the same code mixes cached feature
  vectors (head mode, LFM stage 2) and image tensors (full mode, stage 1).

Functions take numpy arrays or torch tensors and return the same kind; sampling uses a
numpy Generator. No Ray, Hydra or S3 here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explore.methods._arrays import ArrayT, checks_values
from explore.methods._arrays import as_tensor as _as_tensor
from explore.methods._arrays import like as _like
from explore.methods.params import LFMParams as LFMParams  # re-exported
from explore.methods.params import check_lfm_alpha as _check_alpha
from explore.methods.params import check_lfm_tau as _check_tau


def _normalise_rows(x: torch.Tensor, what: str) -> torch.Tensor:
    norms = x.norm(dim=1, keepdim=True)
    if bool(torch.any(norms == 0)):
        raise ValueError(f"{what} has an all-zero row; it cannot be L2-normalised")
    return x / norms


def pair_probabilities(text_features: ArrayT, tau: float) -> ArrayT:
    """C×C matrix of ``p(j | i)`` (rows i sum to 1, zero diagonal).

    Softmax over ``f_i·f_j / τ`` with the diagonal excluded; the softmax subtracts the
    row maximum, so tiny τ (0.002) stays finite.
    """
    _check_tau(tau)
    f = _as_tensor(text_features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"text_features must be C×D with C >= 2, got {tuple(f.shape)}")
    f = _normalise_rows(f, "text_features")
    scores = (f @ f.T) / tau
    eye = torch.eye(f.shape[0], dtype=torch.bool, device=f.device)
    probs = torch.softmax(scores.masked_fill(eye, float("-inf")), dim=1)
    return _like(probs, text_features)


def label_shift(lambda_x: ArrayT | float, n_i: ArrayT | float, n_j: ArrayT | float,
                alpha: float) -> ArrayT:
    """``λ_y = clamp(λ_x − α (n_i − n_j)/(n_i + n_j), 0, 1)``, elementwise.

    Returns a tensor if any input is one, else a numpy array.
    """
    _check_alpha(alpha)
    args = (lambda_x, n_i, n_j)
    as_torch = any(isinstance(a, torch.Tensor) for a in args)
    lx, ni, nj = (_as_tensor(a) if not isinstance(a, float | int) else
                  torch.tensor(float(a), dtype=torch.float64) for a in args)
    dtype = lx.dtype if lx.is_floating_point() else torch.float64
    ni, nj = ni.to(dtype), nj.to(dtype)
    if checks_values(ni, nj) and bool(torch.any(ni + nj <= 0)):
        raise ValueError("class counts n_i + n_j must be > 0")
    out = (lx.to(dtype) - alpha * (ni - nj) / (ni + nj)).clamp(0.0, 1.0)
    return out if as_torch else out.numpy()  # type: ignore[return-value]


def sample_lambda(beta_param: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of λ_x ~ Beta(beta_param, beta_param) (size 1 = one per batch)."""
    if not beta_param > 0:
        raise ValueError(f"beta_param must be > 0, got {beta_param}")
    return rng.beta(beta_param, beta_param, size=size)


def sample_pairs(
    labels: np.ndarray,
    counts: np.ndarray,
    pair_probs: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """LFM's local sampling (Algorithm 1): ``batch_size`` sample-index pairs.

    ``i`` is a uniform sample (so y_i is drawn ∝ n_i), ``y_j ~ pair_probs[y_i]``, and
    ``j`` a uniform sample of class y_j. ``counts`` must equal the per-class counts
    of ``labels`` (all > 0). Returns two int64 arrays of length ``batch_size``.
    A training loop draws many batches from the same labels: :class:`PairSampler` does
    the checks and tables once and then draws exactly what this function draws.
    """
    return PairSampler(labels, counts, pair_probs)(batch_size, rng)


class PairSampler:
    """:func:`sample_pairs` for fixed labels, counts and pair probabilities: the checks,
    the cumulative rows of ``pair_probs`` and the samples grouped by class are computed
    once (per call they cost far more than the draw itself: a C×C cumulative sum and a sort
    of every label). ``sampler(batch_size, rng)`` makes the same generator calls in the same
    order as ``sample_pairs``, so it returns the same pairs."""

    def __init__(self, labels: np.ndarray, counts: np.ndarray, pair_probs: np.ndarray) -> None:
        y = np.asarray(labels).astype(np.int64)
        n = np.asarray(counts).astype(np.int64)
        P = np.asarray(pair_probs.detach().cpu() if isinstance(pair_probs, torch.Tensor)
                       else pair_probs, dtype=np.float64)
        C = n.shape[0]
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
        if P.shape != (C, C):
            raise ValueError(f"pair_probs must be {C}×{C}, got {P.shape}")
        if y.min() < 0 or y.max() >= C:
            raise ValueError(f"labels must be class indices in [0, {C})")
        if not np.array_equal(np.bincount(y, minlength=C), n):
            raise ValueError("counts must equal the per-class counts of labels")
        if np.any(n == 0):
            raise ValueError(f"classes {np.flatnonzero(n == 0).tolist()} have no samples")
        self._labels = y
        self._partners = _Partners(y, P)

    def __call__(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx_i = rng.integers(0, self._labels.size, size=batch_size)
        idx_j = self._partners.draw(self._labels[idx_i], rng)
        return idx_i.astype(np.int64), idx_j


class _Partners:
    """The tables of :func:`draw_partners` for fixed labels and pair probabilities."""

    def __init__(self, labels: np.ndarray, pair_probs: np.ndarray) -> None:
        y = np.asarray(labels).astype(np.int64)
        P = np.asarray(pair_probs, dtype=np.float64)
        self.C = P.shape[0]
        self.n = np.bincount(y, minlength=self.C)
        # Inverse-CDF draw of y_j from row y_i; the last cumulative entry is forced to 1.
        self.cdf = np.cumsum(P, axis=1)
        self.cdf[:, -1] = 1.0
        # Samples grouped by class: class c occupies by_class[start[c] : start[c] + n[c]].
        self.by_class = np.argsort(y, kind="stable")
        self.start = np.concatenate(([0], np.cumsum(self.n)[:-1]))

    def draw(self, y_i: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = self.n
        y_j = np.minimum((rng.random(len(y_i))[:, None] >= self.cdf[np.asarray(y_i)]).sum(axis=1),
                         self.C - 1)
        offset = np.minimum(np.floor(rng.random(len(y_i)) * n[y_j]).astype(np.int64), n[y_j] - 1)
        return self.by_class[self.start[y_j] + offset].astype(np.int64)


def draw_partners(y_i: np.ndarray, labels: np.ndarray, pair_probs: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """The partner of each given sample class: ``y_j ~ pair_probs[y_i]``, then a uniform
    sample of class y_j (Algorithm 1 once i is drawn). Returns indices into ``labels``;
    every class must have a sample."""
    return _Partners(labels, pair_probs).draw(y_i, rng)


def mix(
    x_i: ArrayT,
    x_j: ArrayT,
    y_i: ArrayT,
    y_j: ArrayT,
    lambda_x: ArrayT | float,
    counts: ArrayT,
    alpha: float,
    C: int,
) -> tuple[ArrayT, ArrayT]:
    """Mix a batch of pairs: returns ``(x, soft_targets)``, soft targets N×C.

    ``x_i``/``x_j``: N×… (feature vectors or images); ``lambda_x``: a scalar (one per
    batch) or shape (N,); ``counts``: n_c per class.
    """
    _check_alpha(alpha)
    a, b = _as_tensor(x_i), _as_tensor(x_j)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"x_i and x_j must have the same shape, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    N = a.shape[0]
    yi = _as_tensor(y_i, dtype=torch.int64).long().to(a.device)
    yj = _as_tensor(y_j, dtype=torch.int64).long().to(a.device)
    if yi.shape != (N,) or yj.shape != (N,):
        raise ValueError(f"y_i and y_j must have shape ({N},)")
    if checks_values(yi) and N and (min(int(yi.min()), int(yj.min())) < 0
                                    or max(int(yi.max()), int(yj.max())) >= C):
        raise ValueError(f"y_i and y_j must be class indices in [0, {C})")
    dtype = a.dtype if a.is_floating_point() else torch.float64
    lam = (torch.tensor(float(lambda_x), dtype=dtype, device=a.device)
           if isinstance(lambda_x, float | int)
           else _as_tensor(lambda_x).to(dtype)).to(a.device)
    if lam.ndim == 0:
        lam = lam.expand(N)
    if lam.shape != (N,):
        raise ValueError(f"lambda_x must be a scalar or have shape ({N},), got {tuple(lam.shape)}")
    if checks_values(lam) and bool(torch.any((lam < 0) | (lam > 1))):
        raise ValueError("lambda_x must lie in [0, 1]")
    n = _as_tensor(counts).to(dtype).to(a.device)
    if n.shape != (C,):
        raise ValueError(f"counts must have shape ({C},), got {tuple(n.shape)}")

    lam_x = lam.reshape((N,) + (1,) * (a.ndim - 1))
    x = lam_x * a.to(dtype) + (1 - lam_x) * b.to(dtype)
    lam_y = label_shift(lam, n[yi], n[yj], alpha)
    soft = torch.zeros(N, C, dtype=dtype, device=a.device)
    soft.scatter_add_(1, yi[:, None], lam_y[:, None])
    soft.scatter_add_(1, yj[:, None], (1 - lam_y)[:, None])
    return _like(x, x_i), _like(soft, x_i)


def soft_cross_entropy(logits: ArrayT, soft_targets: ArrayT) -> ArrayT:
    """Per-sample ``−Σ_c t_c log softmax(z)_c``; shape (N,)."""
    z = _as_tensor(logits)
    t = _as_tensor(soft_targets).to(z.dtype)
    if z.ndim != 2 or t.shape != z.shape:
        raise ValueError(f"logits and soft_targets must both be N×C, got {tuple(z.shape)} and "
                         f"{tuple(t.shape)}")
    loss = -(t * torch.log_softmax(z, dim=1)).sum(dim=1)
    return _like(loss, logits)


def cosine_logits(
    image_features: ArrayT,
    projection: ArrayT | None,
    text_features: ArrayT,
    scale: float = 1.0,
) -> ArrayT:
    """``scale · cos(W_Iᵀ f, f_T)`` for every image feature f and class text feature.

    ``projection``: W_I of shape d_img×d_txt (``None`` = identity, LFM stage 1).
    Returns N×C.
    """
    f = _as_tensor(image_features)
    t = _as_tensor(text_features).to(f.dtype)
    if f.ndim != 2 or t.ndim != 2:
        raise ValueError("image_features must be N×d and text_features C×D")
    out = _cosine(f, projection, t, scale, text_is_unit=False)
    return _like(out, image_features)


def unit_text_rows(text_features: torch.Tensor) -> torch.Tensor:
    """The L2-normalised text rows :func:`cosine_logits` divides by their norms on every call."""
    return _normalise_rows(_as_tensor(text_features), "text_features")


def cosine_logits_unit_text(
    image_features: torch.Tensor,
    projection: torch.Tensor | None,
    unit_text: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """:func:`cosine_logits` with the text rows normalised beforehand by
    :func:`unit_text_rows` (in the image features' dtype): the same logits, without
    normalising all C text rows again on every call of a training loop."""
    if image_features.ndim != 2 or unit_text.ndim != 2:
        raise ValueError("image_features must be N×d and text_features C×D")
    return _cosine(image_features, projection, unit_text.to(image_features.dtype), scale,
                   text_is_unit=True)


def _cosine(f: torch.Tensor, projection: ArrayT | None, t: torch.Tensor, scale: float,
            text_is_unit: bool) -> torch.Tensor:
    if projection is not None:
        W = _as_tensor(projection).to(f.dtype)
        if W.ndim != 2 or W.shape[0] != f.shape[1]:
            raise ValueError(f"projection must be {f.shape[1]}×D, got {tuple(W.shape)}")
        f = f @ W  # rows are (W_Iᵀ f)ᵀ
    if f.shape[1] != t.shape[1]:
        raise ValueError(
            f"projected image features have width {f.shape[1]} but text features {t.shape[1]}"
        )
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)  # a zero image feature: cos 0
    return scale * f @ (t if text_is_unit else _normalise_rows(t, "text_features")).T


def text_distance(text_features: ArrayT) -> ArrayT:
    """MMS's ``D = 1 − cos(f_Ti, f_Tj)``, C×C with zero diagonal."""
    f = _normalise_rows(_as_tensor(text_features), "text_features")
    return _like(1.0 - f @ f.T, text_features)


def mms_logits(
    cos: ArrayT,
    targets: ArrayT,
    text_distance: ArrayT,
    margin: float = 0.3,
    temperature: float = 0.01,
) -> ArrayT:
    """MMS logits ``(z + margin · D[y, :]) / temperature``.

    ``targets``: class indices (N,) or soft targets N×C (then the margin row is
    ``Σ_c t_c D[c, :]``, see the module docstring).
    """
    z = _as_tensor(cos)
    D = _as_tensor(text_distance).to(z.dtype)
    if isinstance(targets, torch.Tensor):
        y = targets
    else:
        arr = np.asarray(targets)
        y = torch.as_tensor(arr, dtype=torch.int64 if arr.ndim == 1 else torch.float64)
    if z.ndim != 2 or D.shape != (z.shape[1], z.shape[1]):
        raise ValueError(f"cos must be N×C and text_distance C×C, got {tuple(z.shape)}, "
                         f"{tuple(D.shape)}")
    if margin < 0 or not temperature > 0:
        raise ValueError(f"margin must be >= 0 and temperature > 0, got {margin}, {temperature}")
    if y.ndim == 1:
        rows = D[y.long()]
    elif y.shape == z.shape:
        rows = y.to(z.dtype) @ D
    else:
        raise ValueError(f"targets must be (N,) indices or N×C soft targets, got {tuple(y.shape)}")
    return _like((z + margin * rows) / temperature, cos)


def mms_loss(
    cos: torch.Tensor,
    targets: torch.Tensor,
    text_distance: torch.Tensor,
    margin: float = 0.3,
    temperature: float = 0.01,
) -> torch.Tensor:
    """Per-sample MMS loss on raw cosines, as the reference computes it with mixed labels.

    Hard targets (N,): ``CE((z + margin·D[y, :]) / temperature, y)``. Soft targets N×C
    (a mix of two labels): ``Σ_k t_k · CE((z + margin·D[k, :]) / temperature, k)`` over
    the classes with ``t_k > 0`` — each label of the mix gets its own margin row, unlike
    :func:`mms_logits`' blended row.
    """
    z = cos.to(torch.float32) if not cos.is_floating_point() else cos
    D = text_distance.to(z.dtype)
    if targets.ndim == 1:
        logits = (z + margin * D[targets.long()]) / temperature
        return torch.nn.functional.cross_entropy(logits, targets.long(), reduction="none")
    t = targets.to(z.dtype)
    if t.shape != z.shape:
        raise ValueError(f"soft targets must be N×C like the cosines, got {tuple(t.shape)}")
    # A mix holds at most two labels: the two largest target weights of each row.
    weights, labels = t.topk(min(2, t.shape[1]), dim=1)  # (N, 2)
    logits = (z[:, None, :] + margin * D[labels]) / temperature  # (N, 2, C)
    ce = torch.logsumexp(logits, dim=2) - logits.gather(2, labels[..., None]).squeeze(2)
    return (weights * ce).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# LFM's classifier (both stages)
# ---------------------------------------------------------------------------------------------


class TextCosineClassifier(nn.Module):
    """LFM's classifier in both stages: logits ``scale · cos(project(f), f_T,c)`` against
    fixed text features (rows by class), normalised once and again only when the buffer is
    replaced, written or cast.

    Stage 2 (head mode, :meth:`stage2`): ``project`` is the learned ``W_I``, ``f ↦ W_Iᵀ f``
    from :func:`initial_projection`. Stage 1 (full mode, :meth:`stage1`): ``W_I`` at the
    identity; when the backbone's feature width differs from the text width, ``project`` is
    the image encoder's last layer, a trainable linear map to the text width.

    ``W_I`` (d_img × d_txt) starts at the identity when the dimensions match (the paper's
    stage-2 init); otherwise at a seeded matrix with orthonormal columns (d_img ≥ d_txt) or
    rows (d_img < d_txt): the closest a rectangular map gets to the identity.
    """

    def __init__(self, text_features: np.ndarray, scale: float, project: nn.Module) -> None:
        super().__init__()
        text = torch.as_tensor(np.asarray(text_features), dtype=torch.float32, device="cpu")
        self.register_buffer("text", text / text.norm(dim=1, keepdim=True))
        self.scale = float(scale)
        self.project = project
        self._unit: tuple[torch.Tensor, int, torch.dtype, torch.Tensor] | None = None

    @classmethod
    def stage2(cls, d_img: int, text_features: np.ndarray, scale: float,
               seed: int) -> TextCosineClassifier:
        d_txt = int(np.asarray(text_features).shape[1])
        return cls(text_features, scale, _Projection(initial_projection(d_img, d_txt, seed)))

    @classmethod
    def stage1(cls, feature_dim: int, text_features: np.ndarray,
               scale: float) -> TextCosineClassifier:
        d_txt = int(np.asarray(text_features).shape[1])
        project = nn.Identity() if feature_dim == d_txt else nn.Linear(feature_dim, d_txt)
        return cls(text_features, scale, project)

    @property
    def projection(self) -> torch.Tensor:
        """``W_I`` (d_img×d_txt) of a stage-2 classifier."""
        if not isinstance(self.project, _Projection):
            raise AttributeError("only a stage-2 classifier has a projection matrix W_I")
        return self.project.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # = cosine_logits(project(x), None, text, scale), the text rows normalised once.
        text = self.get_buffer("text")
        unit = self._unit
        if unit is None or unit[0] is not text or unit[1] != text._version or unit[2] != x.dtype:
            unit = (text, text._version, x.dtype, unit_text_rows(text.to(x.dtype)).detach())
            self._unit = unit
        return cosine_logits_unit_text(self.project(x), None, unit[3], self.scale)


class _Projection(nn.Module):
    """``f ↦ W_Iᵀ f`` (rows: ``f @ W_I``) with ``W_I`` learned."""

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(initial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.to(x.dtype)


def initial_projection(d_img: int, d_txt: int, seed: int) -> torch.Tensor:
    """Identity when square; else seeded orthonormal columns/rows (see :class:`TextCosineClassifier`)."""
    if d_img == d_txt:
        return torch.eye(d_img, device="cpu")
    g = torch.Generator().manual_seed(seed)
    big, small = max(d_img, d_txt), min(d_img, d_txt)
    q, _ = torch.linalg.qr(torch.randn(big, small, generator=g, device="cpu"))  # orthonormal columns
    return (q if d_img >= d_txt else q.T).contiguous()
