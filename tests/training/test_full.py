"""Full mode: the recipes' plug-ins on tiny synthetic images (plain, no Ray), and one
full-mode sweep end to end on a real local Ray cluster (Tune trial → TorchTrainer on 2
gloo workers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explore.backbone.loop import train_backbone
from explore.backbone.models import ModelSpec, Preprocess
from explore.backbone.train_config import BackboneTrainConfig
from explore.data.types import ImageSplit, LongTailDataset
from explore.methods.lfm import draw_partners
from explore.methods.swrm import DySWRMParams, SWRMParams, window_weights_and_margins
from explore.recipes import get_recipe
from explore.recipes.lfm import LFMTrialParams, lfm_plugins
from explore.recipes.neighbor_silencing import ns_plugins, ns_training_split
from explore.recipes.swrm import dyswrm_plugins, swrm_plugins
from explore.training.full import FullModeError, method_start


def images(labels: list[int] | np.ndarray, seed: int = 0) -> ImageSplit:
    """Noisy 28×28 images whose brightness encodes the class."""
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 40, (len(y), 28, 28)) + 20 * y[:, None, None]).astype(np.uint8)
    return ImageSplit(labels=y, images=x)


# --------------------------------------------------------------------------- settings


def test_drw_start_defaults_to_a_fraction_of_the_epochs_and_is_checked():
    assert method_start(None, 0.8, 10) == 8  # LDAM-DRW: 160 of 200
    assert method_start(None, 0.8, 2) == 1
    assert method_start(0, 0.8, 3) == 0
    with pytest.raises(FullModeError, match="drw_start=3 must be below backbone.epochs=3"):
        method_start(3, 0.8, 3)
    with pytest.raises(ValueError, match="drw_start"):
        get_recipe("swrm").params({"drw_start": -1})


def test_full_mode_is_refused_for_a_post_hoc_method():
    assert not get_recipe("alphanet").has_full_mode
    with pytest.raises(FullModeError, match="use mode=head"):
        get_recipe("alphanet").full_plan(get_recipe("alphanet").params({}), None, 0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SWRM


def test_swrm_hook_is_ce_before_the_deferral_epoch_and_eq4_after():
    torch.manual_seed(0)
    z = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 1, 2])
    counts, coords = np.array([50.0, 20, 8, 3]), np.array([0.3, -1.0, 2.0, 0.1])
    w, m = window_weights_and_margins(counts, coords, 3, 2.0)
    hooks = swrm_plugins(counts, coords, SWRMParams(W=3, beta=2.0), start_epoch=2)

    def ce(i: int) -> float:
        return -math.log(math.exp(z[i, y[i]]) / sum(math.exp(z[i, j]) for j in range(4)))

    def eq4(i: int) -> float:  # w_y · log(1 + Σ_{j≠y} exp(z_j − z_y − m_y))
        t = int(y[i])
        s = sum(math.exp(z[i, j] - z[i, t] - m[t]) for j in range(4) if j != t)
        return w[t] * math.log(1 + s)

    for epoch in (0, 1):
        got = hooks.loss(z, y, epoch)
        assert np.allclose(got.numpy(), [ce(i) for i in range(5)], atol=1e-5)
    for epoch in (2, 5):
        got = hooks.loss(z, y, epoch)
        assert np.allclose(got.numpy(), [eq4(i) for i in range(5)], atol=1e-5)


def test_dyswrm_hook_learns_its_similarity_only_after_the_deferral():
    hooks = dyswrm_plugins(np.array([50.0, 20, 8, 3]), np.array([0.3, -1.0, 2.0, 0.1]),
                           DySWRMParams(W=3, beta=2.0, s_objective="loss"), start_epoch=1)
    (s,) = hooks.parameters
    z, y = torch.randn(6, 4, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 1])
    hooks.loss(z, y, 0).mean().backward()
    assert s.grad is None  # plain CE: the similarity vector is not involved
    hooks.loss(z, y, 1).mean().backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0  # margins depend on s


def test_swrm_hooks_train_a_backbone():
    train = images([0] * 12 + [1] * 6 + [2] * 3)
    cfg = BackboneTrainConfig(epochs=2, batch_size=8, lr=0.05)
    hooks = swrm_plugins(np.array([12.0, 6, 3]), np.array([0.1, 0.2, 0.4]), SWRMParams(W=2),
                         start_epoch=1)
    out = train_backbone(ModelSpec("small_cnn", 3).build(), train, None, cfg, hooks)
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    assert all(math.isfinite(h["train_loss"]) for h in out["history"])


# --------------------------------------------------------------------------- neighbor silencing


def test_ns_training_split_appends_the_chosen_aux_images_as_new_labels():
    ds = LongTailDataset(
        "open", ("a", "b", "c"), images([0, 0, 0, 1, 1, 2]), images([0, 1, 2]), images([0, 1, 2]),
        aux=images([0, 1, 1, 2, 2, 2, 0]), aux_classes=("x", "y", "z"),
    )
    split = ns_training_split(ds, ["z", "x"])  # z → label 3, x → label 4, y left out
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 2, 4, 3, 3, 3, 4]
    assert np.array_equal(split.images[6], ds.aux.images[0])  # order of the pool kept
    assert np.array_equal(split.images[7], ds.aux.images[3])


def test_ns_hook_caps_aux_classes_per_epoch_and_keeps_every_target():
    L, cap = 3, 4
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3] * 9 + [4] * 3)
    counts = np.array([10, 5, 2, min(9, cap), min(3, cap)], dtype=float)
    neighbor = np.zeros((5, 5), bool)
    neighbor[0, 3] = neighbor[3, 0] = neighbor[2, 4] = neighbor[4, 2] = True
    hooks = ns_plugins(counts, neighbor, 0.1, L, cap)
    seen = set()
    for epoch in range(3):
        idx = hooks.sample_indices(labels, epoch, np.random.default_rng(epoch))
        per_class = np.bincount(labels[idx], minlength=5)
        assert per_class.tolist() == [10, 5, 2, 4, 3]  # all targets; aux 3 capped, aux 4 whole
        assert len(set(idx.tolist())) == len(idx)  # no repeats
        seen |= set(idx[labels[idx] == 3].tolist())
    assert len(seen) > cap  # the capped class is redrawn every epoch

    z, y = torch.randn(4, 5), torch.tensor([0, 3, 2, 1])
    got = hooks.loss(z, y, 0).numpy()
    for i in range(4):  # eq. (4): log(1 + Σ_{j≠y} λ_yj · exp(log n_j − log n_y + z_j − z_y))
        t = int(y[i])
        s = sum((0.1 if neighbor[t, j] else 1.0) * math.exp(math.log(counts[j]) - math.log(counts[t])
                                                               + z[i, j] - z[i, t])
                for j in range(5) if j != t)
        assert got[i] == pytest.approx(math.log(1 + s), abs=1e-5)


# --------------------------------------------------------------------------- LFM


def test_lfm_partners_follow_the_pair_distribution():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    to_next = np.array([[0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])  # class c always pairs with c+1
    y_i = np.array([0, 0, 1, 2, 2, 1])
    j = draw_partners(y_i, labels, to_next, np.random.default_rng(0))
    assert labels[j].tolist() == [1, 1, 2, 0, 0, 2]


@pytest.mark.parametrize("per_batch", [True, False])
def test_lfm_stage1_mix_gives_soft_targets_with_the_label_shift(per_batch):
    labels = [0] * 6 + [1] * 3 + [2] * 1
    # Every image of class c is flat except two pixels (a_c, b_c); the three points are not
    # collinear, so a mixed image tells which two classes were mixed, and at what λ_x.
    pix = {0: (10, 200), 1: (130, 20), 2: (250, 150)}
    x = np.full((10, 28, 28), 60, np.uint8)
    for i, c in enumerate(labels):
        x[i, 0, 0], x[i, 0, 1] = pix[c]
    train = ImageSplit(labels=np.array(labels), images=x)
    pre = Preprocess(mean=(0.5,), std=(0.25,))
    text = np.eye(3)  # equidistant classes: every other class is as likely a partner
    alpha = 0.7
    params = LFMTrialParams(alpha=alpha, beta_param=0.5, lambda_per_batch=per_batch)
    from explore.backbone.models import load_batch

    hooks = lfm_plugins(train.labels, text, params, lambda idx, dev: load_batch(train, idx, pre))
    xb = (torch.from_numpy(x).float().unsqueeze(1) / 255 - 0.5) / 0.25
    mixed, soft = hooks.mix(xb, torch.tensor(labels), 0, np.random.default_rng(3))

    assert soft.shape == (10, 3)
    assert torch.allclose(soft.sum(1), torch.ones(10, dtype=soft.dtype))
    n = np.bincount(labels)
    g = {c: [(v / 255 - 0.5) / 0.25 for v in ab] for c, ab in pix.items()}
    lambdas = []
    for i in range(10):
        p0, p1 = float(mixed[i, 0, 0, 0]), float(mixed[i, 0, 0, 1])
        fits = []
        for a in range(3):  # (a, b, λ) and (b, a, 1−λ) give the same soft target
            for b in (b for b in range(3) if b != a):
                lam = (p0 - g[b][0]) / (g[a][0] - g[b][0])
                fits.append((abs(lam * g[a][1] + (1 - lam) * g[b][1] - p1), a, b, lam))
        _, yi, yj, lam_x = min(fits)
        assert -1e-6 <= lam_x <= 1 + 1e-6
        lambdas.append(min(lam_x, 1 - lam_x))
        lam_y = min(max(lam_x - alpha * (n[yi] - n[yj]) / (n[yi] + n[yj]), 0.0), 1.0)
        expected = np.zeros(3)
        expected[yi] += lam_y
        expected[yj] += 1 - lam_y
        assert np.allclose(soft[i].numpy(), expected, atol=1e-4), (i, yi, yj, lam_x)
    assert (len(set(np.round(lambdas, 4))) == 1) == per_batch  # one λ_x per batch, or one each
    # soft-label CE: uniform logits cost log 3 whatever the targets
    assert hooks.loss(torch.zeros(10, 3), soft.float(), 0).allclose(torch.full((10,), math.log(3)))


# --------------------------------------------------------------------------- end to end


@pytest.mark.ray
def test_full_mode_sweep_trains_the_backbone_in_a_train_run_per_seed(ray_cluster, tmp_path, capsys):
    """Neighbor silencing in full mode on a small Fashion-MNIST-LT-open: the auxiliary
    images join the Train run's training set, one run per seed, rows with mode=full."""
    import json

    from explore.results.reader import read_rows
    from explore.sweep.__main__ import main as sweep_main

    store = tmp_path / "store"
    argv = ["ns_lambda", "mode=full", "num_samples=1", "repeats=1", "search.sampler=random",
            f"storage_uri={store}", "dataset.n_max=60", "dataset.imbalance_factor=10",
            "dataset.val_per_class=5", "dataset.aux_per_class=20", "dataset.test_per_class=40",
            "splits.many_above=30", "splits.few_below=10", "backbone.epochs=2",
            "backbone.batch_size=64", "backbone.num_workers=2", "head.epochs=2",
            "method.neighbor_source=prototype", "method.aux_per_class_cap=8"]
    assert sweep_main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    uri = out.strip().splitlines()[-1].removeprefix("results: ")
    df = read_rows(uri).rows
    rows = df[df.method == "neighbor_silencing"]
    assert len(rows) == 1 and (rows["mode"] == "full").all() and (rows.status == "ok").all(), df
    row = rows.iloc[0]
    assert row.best_epoch == 2 and row.lambda_s in (0.01, 0.1, 0.2, 0.3, 0.5, 1.0)
    resolved = json.loads(row.params_json)["resolved"]
    assert resolved["aux_classes"] and set(resolved["aux_classes"]) <= {"Shirt", "Coat", "Ankle boot"}
    for col in ("acc_overall", "acc_many", "acc_medium", "acc_few", "val_acc_overall"):
        assert 0 <= row[col] <= 1, col
    (base,) = df[df.role == "reference"].itertuples()  # the reference row (one seed):
    assert base.mode == "head" and base.method == "balanced_softmax"  # a head on the CE features

    sweep_dir = store / "sweeps" / row.sweep_id
    run = sweep_dir / "train" / f"full-{row.trial_id}-seed0"
    assert len([p for p in run.glob("checkpoint_*") if p.is_dir()]) == 2  # one per epoch
    # every epoch reached Tune (TuneReportCallback), then the trial's evaluated mean
    (result_file,) = (sweep_dir / "tune").rglob("result.json")
    reports = [json.loads(line) for line in result_file.read_text().splitlines()]
    epochs = [r for r in reports if r.get("checkpoint_path")]
    assert [int(r["epoch"]) for r in epochs] == [1, 2]  # 1-based, as head trials report
    assert [r["explore_epochs"] for r in epochs] == [1, 2] and all(r["seed"] == 0 for r in epochs)
    assert all(r["world_size"] == 2 and r["dist_world_size"] == 2 for r in epochs)  # gloo DDP
    assert reports[-1]["val_acc_overall"] == pytest.approx(row.val_acc_overall)


def test_lfm_stage1_logits_are_cosines_against_the_text_features():
    """Full-mode LFM trains the backbone against the fixed text-cosine classifier (W_I = I;
    a learned map to the text width when the widths differ), not a linear head."""
    from explore.backbone.models import ModelSpec, load_batch
    from explore.methods.lfm import TextCosineClassifier
    from explore.splits import SplitThresholds
    from explore.store import FeatureSet, FeatureSplit
    from explore.text_encoder import class_text_features
    from explore.training.full import FullSetup
    from explore.training.head_config import HeadTrainConfig

    classes = ("T-shirt", "Trouser", "Sneaker")
    train = images([0] * 6 + [1] * 4 + [2] * 2)
    ds = LongTailDataset("tiny", classes, train, images([0, 1, 2], 1), images([0, 1, 2], 2))
    feats = FeatureSet({n: FeatureSplit(np.zeros((len(s), 4), np.float32), s.labels)
                        for n, s in (("train", train), ("val", ds.val), ("test", ds.test))}, classes)
    setup = FullSetup(ds, feats, BackboneTrainConfig(epochs=2), SplitThresholds(10, 5),
                      HeadTrainConfig(), in_channels=1)
    recipe = get_recipe("lfm")
    params = recipe.params({})
    plan = recipe.full_plan(params, setup, seed=0)
    model = ModelSpec("small_cnn", plan.num_outputs, 1, classifier=plan.classifier).build()
    assert isinstance(model.classifier, TextCosineClassifier)
    x = load_batch(train, np.arange(12), model.preprocess)
    with torch.no_grad():
        logits = model(x)
        u = model.classifier.project(model.embed(x))
    text, _ = class_text_features(classes)
    t = torch.as_tensor(text, dtype=torch.float32)
    cos = (u / u.norm(dim=1, keepdim=True)) @ (t / t.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(logits, params.logit_scale * cos, rtol=1e-4, atol=1e-4)
    assert float(logits.abs().max()) <= params.logit_scale + 1e-4
