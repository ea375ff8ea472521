"""The head-methods benchmark (``python -m benchmarks --only heads``) on tiny sizes, and the
fast paths it measures: each gives exactly what the straightforward code gives.

No timing assertions: speed is measured by ``python -m benchmarks``, not here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks import __main__ as cli
from benchmarks.heads import Shape, case_shape, floor_epochs, floor_seeds, head_cases, with_aux_pool
from benchmarks.synthetic import LongTailSize, Problem, make_aux_split, make_feature_set
from explore.methods.lfm import (
    PairSampler,
    TextCosineClassifier,
    cosine_logits,
    cosine_logits_unit_text,
    pair_probabilities,
    sample_pairs,
    unit_text_rows,
)
from explore.methods.neighbor_silencing import NSLoss, ns_loss
from explore.methods.swrm import DySWRMParams, standardise, swrm_loss, swrm_terms
from explore.plugins import Plugins
from explore.recipes.swrm import dyswrm_plugins
from explore.splits import SplitThresholds
from explore.text_encoder import class_text_features
from explore.training.head import fit_head, predict_logits, top1
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import TrialInputs
from tests.support.torch_threads import one_torch_thread

TINY = LongTailSize(num_classes=40, train_total=4634, d=16)


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem.make(TINY, seed=1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


# --- the benchmark -------------------------------------------------------------------------


def test_floor_work_by_hand():
    linear = Shape("linear", d=4, num_classes=3, rows=10, batch=4, val_rows=5)
    assert linear.batches == 3
    # forward + weight gradient: 2 products of 2·rows·d·C; validation: one of 2·val·d·C
    assert linear.gflop == pytest.approx((2 * 2 * 10 * 4 * 3 + 2 * 5 * 4 * 3) / 1e9)
    cosine = Shape("cosine", d=4, num_classes=3, rows=10, batch=4, val_rows=0, d_text=2)
    # X·W (4·2) and F·Tᵀ (2·3) per row, forward and backward
    assert cosine.gflop == pytest.approx(2 * 2 * 10 * (4 * 2 + 2 * 3) / 1e9)


def test_aux_pool_classes_sit_in_their_parents_super_groups():
    size = LongTailSize(num_classes=40, train_total=4634, d=64)
    fset = make_feature_set(size, seed=3)
    split, names, parents = make_aux_split(size, seed=3, num_aux=12, per_class=7)
    assert names == tuple(f"aux{a:04d}" for a in range(12)) and parents.shape == (12,)
    assert np.array_equal(np.bincount(split.labels), np.full(12, 7))
    again = make_aux_split(size, seed=3, num_aux=12, per_class=7)
    assert np.array_equal(again.split.features, split.features)  # deterministic
    # The target splits do not depend on the pool (it draws from its own stream).
    assert np.array_equal(make_feature_set(size, seed=3).train.features, fset.train.features)
    val = fset.val
    means = np.stack([val.features[val.labels == c].mean(0) for c in range(40)])
    group = np.arange(40) // 10
    closer = 0
    for a in range(12):
        dist = np.linalg.norm(means - split.features[split.labels == a].mean(0), axis=1)
        same = group == group[parents[a]]
        closer += dist[same].mean() < dist[~same].mean()
    assert closer == 12


def test_case_shapes_follow_the_data(problem):
    th = SplitThresholds()
    cases = {c.method: c for c in head_cases(epochs=1)}
    plain = TrialInputs(problem.features, None, th)
    n, val = len(problem.features.train.labels), len(problem.features.val.labels)
    swrm = case_shape(cases["swrm"], replace(plain, head=cases["swrm"].head))
    assert (swrm.kind, swrm.num_classes, swrm.rows, swrm.batch, swrm.val_rows) == ("linear", 40, n, 256, val)
    lfm = case_shape(cases["lfm"], replace(plain, head=cases["lfm"].head))
    text, _ = class_text_features(problem.features.classes)
    assert (lfm.kind, lfm.rows, lfm.batch, lfm.val_rows) == ("cosine", n, 32, 0)  # LFM keeps its last epoch
    assert (lfm.num_classes, lfm.d_text) == text.shape
    ns_inputs = TrialInputs(with_aux_pool(problem, num_aux=10, per_class=60), None, th)
    ns = case_shape(cases["neighbor_silencing"], ns_inputs)
    extra = ns.num_classes - 40
    assert 1 <= extra <= 10
    assert ns.rows == n + 50 * extra  # the epoch holds min(60, cap 50) of each chosen aux class


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_floors_run(problem, kind):
    x = torch.from_numpy(problem.features.train.features)
    shape = Shape(kind, d=16, num_classes=40, rows=1000, batch=64, val_rows=100, d_text=8)
    assert floor_epochs(shape, x, x[:100], epochs=2) > 0
    for batched in (True, False):
        assert floor_seeds(shape, x, seeds=3, batches=4, batched=batched) > 0


def test_cli_runs_the_heads_benchmark_on_a_tiny_problem():
    tiny = replace(cli.QUICK, big=TINY, heads_epochs=1, heads_seeds=1, heads_aux=8, heads_batch_seeds=2)
    lines: list[str] = []
    figures = cli.run(tiny, {"heads"}, out=lines.append)
    assert any("6. head methods vs their matrix-product floor" in line for line in lines)
    names = [f.name for f in figures]
    for method in ("swrm", "dyswrm", "neighbor_silencing", "lfm"):
        assert f"{method}: seconds per epoch per seed" in names
    assert len(figures) == 4 * 5 + 4  # five per method, then the four fast paths
    assert [f.name.split(":")[0] for f in figures[-4:]] == ["lfm", "lfm", "dyswrm", "neighbor_silencing"]
    assert all(math.isfinite(f.value) and f.value > 0 for f in figures)
    ratios = [f for f in figures if f.name.strip().startswith("ratio to the floor")]
    assert len(ratios) == 4 and all(f.met is (f.value <= 2.0) for f in ratios)


def test_cli_rejects_zero_threads():
    with pytest.raises(SystemExit):
        cli.main(["--threads", "0", "--only", "heads"])


# --- fast paths equal the straightforward code ----------------------------------------------


def _reference_pairs(labels, probs, batch, rng):
    """LFM's local sampling as first written: every table rebuilt per call."""
    C = probs.shape[0]
    n = np.bincount(labels, minlength=C)
    idx_i = rng.integers(0, labels.size, size=batch)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    y_j = np.minimum((rng.random(batch)[:, None] >= cdf[labels[idx_i]]).sum(axis=1), C - 1)
    by_class = np.argsort(labels, kind="stable")
    start = np.concatenate(([0], np.cumsum(n)[:-1]))
    offset = np.minimum(np.floor(rng.random(batch) * n[y_j]).astype(np.int64), n[y_j] - 1)
    return idx_i, by_class[start[y_j] + offset]


def test_pair_sampler_draws_what_sample_pairs_draws():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(7), [30, 12, 9, 5, 3, 2, 1]))
    counts = np.bincount(labels)
    probs = pair_probabilities(rng.normal(size=(7, 5)), 0.3)
    sampler = PairSampler(labels, counts, probs)
    a, b, c = (np.random.default_rng(42) for _ in range(3))
    for batch in (1, 16, 64, 5):
        got = sampler(batch, a)
        want = sample_pairs(labels, counts, probs, batch, b)
        ref = _reference_pairs(labels, probs, batch, c)
        for g, w, r in zip(got, want, ref):
            assert g.dtype == np.int64 and np.array_equal(g, w) and np.array_equal(g, r)
    with pytest.raises(ValueError, match="counts must equal"):
        PairSampler(labels, counts + 1, probs)
    with pytest.raises(ValueError, match="batch_size"):
        sampler(0, a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ns_loss_with_tables_equals_ns_loss(dtype):
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([50.0, 20, 8, 3, 50, 50, 7])
    nb = torch.zeros(7, 7, dtype=torch.bool)
    for t, a in [(0, 4), (2, 5), (3, 5), (3, 6)]:
        nb[t, a] = nb[a, t] = True
    loss = NSLoss(counts, nb, 0.1)
    for _ in range(3):
        z = torch.randn(33, 7, generator=g, dtype=dtype)
        y = torch.randint(0, 7, (33,), generator=g)
        assert torch.equal(loss(z, y), ns_loss(z, y, counts, nb, 0.1))
    with pytest.raises(ValueError, match="logits must be N×7"):
        loss(torch.zeros(3, 6), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="class indices"):
        loss(torch.zeros(2, 7), torch.tensor([0, 7]))


def test_cosine_head_normalises_its_text_once_and_follows_a_new_buffer():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(9, 5, generator=g)
    x, W = torch.randn(6, 8, generator=g), torch.randn(8, 5, generator=g)
    assert torch.equal(cosine_logits_unit_text(x, W, unit_text_rows(text), 30.0),
                       cosine_logits(x, W, text, 30.0))
    head = TextCosineClassifier.stage2(8, text.numpy(), 30.0, seed=1)
    for _ in range(2):
        assert torch.equal(head(x), cosine_logits(x, head.projection, head.get_buffer("text"), 30.0))
    other = TextCosineClassifier.stage2(8, torch.randn(9, 5, generator=g).numpy(), 30.0, seed=1)
    head.load_state_dict(other.state_dict())  # writes the buffer in place: the cache is redone
    assert torch.equal(head(x), other(x))
    assert torch.equal(head(x.double()), cosine_logits(x.double(), head.projection,
                                                       head.get_buffer("text"), 30.0))


def test_dyswrm_terms_are_reused_only_while_s_is_unchanged():
    counts = np.array([50.0, 20, 8, 3, 30, 12])
    params = DySWRMParams(W=3, beta=2.0)  # s learns from confusions between epochs
    plugins = dyswrm_plugins(counts, np.array([0.3, -1.0, 2.0, 0.1, -0.4, 0.9]), params)
    (s,) = plugins.parameters
    n = torch.as_tensor(counts, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for epoch in range(3):
        for _ in range(2):
            z, y = torch.randn(10, 6, generator=g), torch.randint(0, 6, (10,), generator=g)
            w, m = swrm_terms(n, standardise(s.detach()), params)  # from the current s
            assert torch.equal(plugins.loss(z, y, epoch), swrm_loss(z, y, w, m))
        before = s.detach().clone()
        plugins.on_epoch_end(epoch, torch.nn.Linear(1, 1), {})
        assert not torch.equal(before, s.detach())  # s moved: the next epoch needs new terms


def test_head_loop_reports_the_per_batch_loss_sum_and_top1(problem):
    train = (problem.features.train.features, problem.features.train.labels)
    val = (problem.features.val.features, problem.features.val.labels)
    seen: list[tuple[float, int]] = []
    reported: list[float] = []

    def loss(logits, targets, epoch):
        out = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        seen.append((float(out.detach().mean()), len(targets)))  # what the loop read per batch
        return out

    def on_epoch_end(epoch, model, stats):
        total = 0.0
        for value, size in seen:
            total += value * size
        reported.append(stats["train_loss"])
        assert stats["train_loss"] == total / sum(size for _, size in seen)
        seen.clear()

    model = torch.nn.Linear(TINY.d, TINY.num_classes)
    fit = fit_head(model, train, val, HeadTrainConfig(epochs=2, batch_size=100), seed=0,
                   plugins=Plugins(loss=loss, on_epoch_end=on_epoch_end))
    assert len(reported) == 2
    pred = predict_logits(fit.model, val[0]).argmax(1).numpy()
    assert top1(fit.model, val) == float((pred == val[1]).mean())
