"""SWRM / DySWRM: similarity window reweighting and margins.

Paper: "SWRM: Similarity Window Reweighting and Margins for Long-Tailed Recognition"
(§3; docs/methods.md#swrm--dyswrm). Equations implemented, with C classes, ``n_c`` training
samples of class c and a 1-D similarity coordinate ``s_c`` per class:

* Eq. (2), window reweighting (SWR)::

      w_c = log(1 + (n_max / n_c) · (1/W) · Σ_{i ∈ win(c)} n_i / n_c)

* Eq. (3), window margin (SWM)::

      m_c = log((1/W) · Σ_{i ∈ win(c)} sim(i, c)^(−β))

* Eq. (4), the loss (margin on the target logit only)::

      L = w_y · log(1 + Σ_{j ≠ y} exp(z_j − z_y − m_y))

Resolutions (docs/methods.md#swrm--dyswrm; the paper leaves these open):

* **Window.** Sort classes by their coordinate (ascending; ties keep class-index
  order). The window of class c is the W consecutive classes around c in that order,
  c included, shifted at the ends so it always holds W classes. For even W the extra
  class is taken on the side of *larger* coordinates: with W = 4 the window is one
  class below c, c, and two above (unless shifted at an end).
* **Similarity.** ``sim`` is undefined in the paper. We standardise the coordinates to
  zero mean and unit variance (population variance) and use
  ``sim(i, c) = exp(−|s_i − s_c|)``, so ``m_c = log mean_{i∈win(c)} exp(β |s_i − s_c|)``:
  ``m_c ≥ 0``, and ``m_c = 0`` for β = 0. If every coordinate is equal the
  standardised coordinates are all 0 (and so are the margins).
* **Coordinates (SWRM).** Class prototypes (mean features under a CE-trained model)
  projected to one dimension with t-SNE (:func:`tsne_coordinates`).
* **DySWRM.** A learnable vector ``s ∈ R^C`` replaces the t-SNE coordinates
  (:class:`DySWRMSimilarity`), standardised before every use. Window membership comes
  from the current order of ``s``. Trained through eq. (4) (the literal reading), the
  loss's gradient with respect to every margin is negative, so ``s`` only spreads out to
  inflate the margins. Our resolution (``s_objective="confusion"``): weights and margins
  use ``s`` detached, and ``s`` minimises :func:`similarity_objective` on
  :func:`confusion_update`'s affinity of the current model's confusions.
* **Ablations.** ``components`` (swrm, swr, swm; the paper's Table 5) and
  ``margin_sign`` (paper: +m on the target logit; ldam: −m), see :func:`swrm_terms`.
* **t-SNE learning rate.** sklearn's default is far too large for a few dozen points
  in one dimension; see :func:`tsne_learning_rate`.

Every function takes numpy arrays or torch tensors and returns the same kind; class
order is class index. No Ray, Hydra or S3 here.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from explore.methods._arrays import ArrayT, checks_values
from explore.methods._arrays import as_tensor as _as_tensor
from explore.methods._arrays import like as _like
from explore.methods.params import Components as Components  # re-exported
from explore.methods.params import DySWRMParams as DySWRMParams  # re-exported
from explore.methods.params import MarginSign as MarginSign  # re-exported
from explore.methods.params import SWRMParams as SWRMParams  # re-exported
from explore.methods.params import WindowParams
from explore.methods.params import check_beta as _check_beta
from explore.methods.params import check_window as _check_W

log = logging.getLogger(__name__)


# Standardising divides by the spread; below this the coordinates count as all equal.
_STD_EPS = 1e-12






def window_indices(coords: np.ndarray | torch.Tensor, W: int) -> np.ndarray:
    """The window of every class: a C×W int array of class indices (rows by class).

    Row c lists the classes in c's window in ascending coordinate order. The order
    comes from a stable sort of the (detached) coordinates, so it carries no gradient.
    """
    s = coords.detach().cpu().numpy() if isinstance(coords, torch.Tensor) else np.asarray(coords)
    if s.ndim != 1:
        raise ValueError(f"coords must be 1-D (one coordinate per class), got shape {s.shape}")
    C = s.shape[0]
    _check_W(W)
    if W > C:
        raise ValueError(f"W (window size) must be in [2, C={C}], got {W}")
    order = np.argsort(s, kind="stable")
    position = np.empty(C, dtype=np.int64)
    position[order] = np.arange(C)
    # (W-1)//2 classes below c, the rest above: for even W the extra one is above.
    start = np.clip(position - (W - 1) // 2, 0, C - W)
    return order[start[:, None] + np.arange(W)[None, :]]


def _standardise(s: torch.Tensor) -> torch.Tensor:
    centred = s - s.mean()
    std = centred.pow(2).mean().sqrt()
    # Constant coordinates carry no similarity information: all zeros, no division by 0.
    if float(std.detach()) <= _STD_EPS:
        return torch.zeros_like(centred)
    return centred / std


def standardise(coords: ArrayT) -> ArrayT:
    """Zero mean, unit (population) variance; all zeros when every coordinate is equal."""
    return _like(_standardise(_as_tensor(coords)), coords)


def window_weights_and_margins(
    counts: ArrayT, coords: ArrayT, W: int, beta: float
) -> tuple[ArrayT, ArrayT]:
    """SWR weights (eq. 2) and SWM margins (eq. 3) of every class.

    ``counts``: training samples per class (all > 0); ``coords``: the 1-D similarity
    coordinates (t-SNE or DySWRM's vector). Returns ``(weights, margins)``, each of
    shape (C,), of the same kind as ``coords``. With torch ``coords`` the margins are
    differentiable w.r.t. them; window membership is not (it comes from a sort).
    """
    n = _as_tensor(counts)
    s = _as_tensor(coords)
    if n.ndim != 1 or s.ndim != 1:
        raise ValueError(
            f"counts and coords must be 1-D, got shapes {tuple(n.shape)} and {tuple(s.shape)}"
        )
    if n.shape[0] != s.shape[0]:
        raise ValueError(
            f"counts has {n.shape[0]} classes but coords has {s.shape[0]}; they must match"
        )
    if not bool(torch.all(n > 0)):
        raise ValueError("counts must all be > 0 (every class needs training samples)")
    if not bool(torch.all(torch.isfinite(s))):
        raise ValueError("coords must be finite")
    _check_beta(beta)
    win = torch.as_tensor(window_indices(s, W), device=s.device)  # C×W, validates W

    n = n.to(s.dtype if s.is_floating_point() else torch.float64)
    # Eq. (2): local ratio (window mean of n_i / n_c) times the global ratio n_max / n_c.
    local = n[win].mean(dim=1) / n
    weights = torch.log1p(n.max() / n * local)

    # Eq. (3) with sim(i, c) = exp(-|s_i - s_c|) on standardised coordinates.
    z = _standardise(s if s.is_floating_point() else s.to(torch.float64))
    gap = (z[win] - z[:, None]).abs()
    margins = torch.logsumexp(beta * gap, dim=1) - math.log(W)
    # logsumexp - log W can round to a hair below 0 when every gap is 0.
    margins = margins.clamp_min(0.0)
    return _like(weights, coords), _like(margins, coords)


def swrm_terms(
    counts: ArrayT, coords: ArrayT, params: WindowParams
) -> tuple[ArrayT, ArrayT]:
    """:func:`window_weights_and_margins` with the params' ablations applied: weights 1
    without SWR (swm, none), margins 0 without SWM (swr, none), and margins negated with
    ``margin_sign="ldam"`` (then eq. (4) subtracts them from the target logit, as LDAM)."""
    weights, margins = window_weights_and_margins(counts, coords, params.W, params.beta)
    if params.components in ("swm", "none"):
        weights = weights * 0 + 1
    if params.components in ("swr", "none"):
        margins = margins * 0
    if params.margin_sign == "ldam":
        margins = -margins
    return weights, margins


def confusion_update(previous: torch.Tensor | None, mean_softmax: torch.Tensor,
                     momentum: float) -> torch.Tensor:
    """DySWRM's affinity ``A``: the exponential moving average (per epoch) of the
    symmetrised per-class mean softmax ``P`` (row i: class i's samples' mean predicted
    probability of each class j) with the diagonal zeroed. The first epoch's ``P`` starts
    the average."""
    P = mean_softmax.detach().clone()
    P.fill_diagonal_(0.0)
    current = 0.5 * (P + P.T)
    if previous is None:
        return current
    return momentum * previous + (1.0 - momentum) * current


def similarity_objective(s: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """``L_s = Σ_{i,j} A_ij (ŝ_i − ŝ_j)²`` over the standardised ``ŝ``: classes the model
    confuses are pulled together; standardising keeps ``ŝ`` from collapsing to a point."""
    z = _standardise(s)
    return (affinity * (z[:, None] - z[None, :]) ** 2).sum()


def swrm_loss(logits: ArrayT, targets: ArrayT, weights: ArrayT, margins: ArrayT) -> ArrayT:
    """Per-sample SWRM loss, eq. (4): ``w_y · log(1 + Σ_{j≠y} exp(z_j − z_y − m_y))``.

    Equivalent to ``w_y ·`` cross-entropy on logits whose target entry is raised by
    ``m_y``, computed with logsumexp (stable for any logit scale). Returns shape (N,).
    """
    z = _as_tensor(logits)
    y = _as_tensor(targets, dtype=torch.int64).long()
    w = _as_tensor(weights).to(z.dtype)
    m = _as_tensor(margins).to(z.dtype)
    if z.ndim != 2:
        raise ValueError(f"logits must be N×C, got shape {tuple(z.shape)}")
    N, C = z.shape
    if y.shape != (N,):
        raise ValueError(f"targets must have shape ({N},), got {tuple(y.shape)}")
    if w.shape != (C,) or m.shape != (C,):
        raise ValueError(
            f"weights and margins must have shape ({C},), got {tuple(w.shape)}, {tuple(m.shape)}"
        )
    if checks_values(y) and N and (int(y.min()) < 0 or int(y.max()) >= C):
        raise ValueError(f"targets must be class indices in [0, {C})")
    shifted = z.scatter_add(1, y[:, None], m[y][:, None])
    loss = w[y] * (torch.logsumexp(shifted, dim=1) - shifted.gather(1, y[:, None]).squeeze(1))
    return _like(loss, logits)


def effective_perplexity(perplexity: float, num_classes: int) -> float:
    """The t-SNE perplexity actually used: ``min(perplexity, (C − 1) / 3)``.

    A perplexity near C − 1 makes every class equally a neighbour of every other: the
    affinities carry no structure and the 1-D embedding collapses to a point (seen on
    Fashion-MNIST-LT's 10 prototypes at perplexity 9: coordinates equal to 1e-12, so every
    SWM margin was 0). (C − 1)/3 is the bound the reference Barnes-Hut t-SNE enforces; it
    leaves the paper's settings (C ≥ 100, perplexity 30) unchanged. Record the value used.
    """
    if num_classes < 2:
        raise ValueError(f"t-SNE needs at least 2 classes, got {num_classes}")
    if not perplexity > 0:
        raise ValueError(f"perplexity must be > 0, got {perplexity}")
    return float(min(perplexity, (num_classes - 1) / 3))


def tsne_learning_rate(num_classes: int) -> float:
    """Default t-SNE learning rate for C points: ``min(max(C / 8, 0.5), 50)``.

    sklearn's ``learning_rate="auto"`` is ``max(C / 48, 50)``; its floor of 50 is far
    too large for a few dozen points in one dimension: two well-separated clusters
    of 4 prototypes came out interleaved for most seeds, while C/8 kept every cluster
    contiguous for C = 8, 40, 100 and 1000 (50 is sklearn's value from C ≈ 400 up).
    """
    return float(min(max(num_classes / 8, 0.5), 50.0))


def tsne_coordinates(
    prototypes: np.ndarray,
    seed: int,
    perplexity: float = 30.0,
    learning_rate: float | None = None,
) -> np.ndarray:
    """1-D t-SNE coordinates of the C class prototypes (SWRM's similarity modelling).

    Uses ``sklearn.manifold.TSNE(n_components=1, init="pca")`` with
    ``random_state=seed``. With the PCA start the coordinates come out the same for every
    seed (measured: docs/methods.md#swrm-similarity-coordinates). The perplexity is capped at
    (C − 1)/3 (see :func:`effective_perplexity`, which the caller should record);
    ``learning_rate`` defaults to :func:`tsne_learning_rate`. Returns a float64 array of
    shape (C,).
    """
    from sklearn.manifold import TSNE  # scikit-learn is slow to import; only SWRM needs it

    P = prototypes.detach().cpu().numpy() if isinstance(prototypes, torch.Tensor) else prototypes
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"prototypes must be C×d, got shape {P.shape}")
    used = effective_perplexity(perplexity, P.shape[0])
    if used != perplexity:
        log.info("t-SNE perplexity %s clamped to %s for %d classes", perplexity, used, P.shape[0])
    lr = tsne_learning_rate(P.shape[0]) if learning_rate is None else learning_rate
    if not lr > 0:
        raise ValueError(f"learning_rate must be > 0, got {lr}")
    tsne = TSNE(n_components=1, perplexity=used, learning_rate=lr, random_state=seed, init="pca")
    coords = tsne.fit_transform(P)[:, 0].astype(np.float64)
    if not coords.std() > _STD_EPS * max(1.0, float(np.abs(coords).max())):
        log.warning("t-SNE collapsed the %d prototypes to one point (perplexity %s): every "
                    "margin will be 0; lower tsne_perplexity", P.shape[0], used)
    return coords


class DySWRMSimilarity(nn.Module):
    """DySWRM's learnable similarity vector ``s ∈ R^C``.

    Initialised from the given coordinates (t-SNE ones for a warm start, or seeded
    random draws, see :func:`initial_similarity`); optimise it with the classifier.
    :meth:`standardised` is what every use sees, so its scale cannot run away.
    """

    def __init__(self, init_coords: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        if isinstance(init_coords, torch.Tensor):
            s = init_coords.detach().to(torch.float32).clone()
        else:
            s = torch.tensor(np.asarray(init_coords), dtype=torch.float32, device="cpu")
        if s.ndim != 1 or s.shape[0] < 2:
            raise ValueError(f"init_coords must be 1-D with >= 2 classes, got {tuple(s.shape)}")
        self.s = nn.Parameter(s)

    def standardised(self) -> torch.Tensor:
        """``s`` with zero mean and unit variance (differentiable)."""
        return _standardise(self.s)

    def weights_and_margins(
        self, counts: np.ndarray | torch.Tensor, W: int, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Current SWR weights and SWM margins; margins carry gradient w.r.t. ``s``."""
        n = _as_tensor(counts).to(self.s.dtype)
        return window_weights_and_margins(n, self.standardised(), W, beta)


def initial_similarity(
    num_classes: int,
    init: Literal["random", "tsne"],
    seed: int,
    tsne_coords: np.ndarray | None = None,
) -> np.ndarray:
    """DySWRM's initial similarity vector (see :attr:`DySWRMParams.init`)."""
    if init == "random":
        return np.random.default_rng(seed).standard_normal(num_classes)
    if init == "tsne":
        if tsne_coords is None or np.asarray(tsne_coords).shape != (num_classes,):
            raise ValueError(f"init='tsne' needs tsne_coords of shape ({num_classes},)")
        return np.asarray(tsne_coords, dtype=np.float64)
    raise ValueError(f"init must be 'random' or 'tsne', got {init!r}")
