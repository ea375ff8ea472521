"""Head methods on cached features (SWRM, DySWRM, neighbor silencing, LFM) through the
registry, on small synthetic features; and the registry against ``search_spaces/``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explore.training.bases import BASES, BaseSpec, balanced_softmax_loss, train_ce
from explore.training.head_runs import head_data
from explore.training.lfm_fit import CosineTextHead, class_text_features, train_lfm_seed
from explore.training.ns_fit import TargetsAtTest, build_ns_problem, train_ns_seed
from explore.training.registry import METHODS, DataFacts, TrialInputs, get_method
from explore.training.swrm_fit import swrm_tsne_settings, train_dyswrm_seed, train_swrm_seed

from explore.config import SPACES_DIR, list_spaces, load
from explore.splits import SplitThresholds
from explore.store import FeatureSet, FeatureSplit, FeatureStore
from explore.training import lfm_fit
from explore.training.head import ce_loss, fit_head
from tests.support.synthetic import COUNTS, feature_arrays

CLASSES = ("cat", "dog", "horse", "sheep", "truck", "car", "lion", "wolf", "zebra")
AUX = ("tiger", "van", "fox", "bus", "pony")
FAST = {"epochs": 4, "batch_size": 64}
THRESHOLDS = SplitThresholds()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny heads: intra-op threads only add contention on a shared 2-core machine (10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _feature_set(with_aux: bool = True) -> FeatureSet:
    arrays = feature_arrays(seed=0, d=16)
    splits = {name: FeatureSplit(x, y) for name, (x, y) in arrays.items()}
    meta = {}
    if with_aux:
        rng = np.random.default_rng(5)
        centers = rng.normal(size=(len(AUX), 16))
        counts = [80, 30, 60, 10, 45]  # tiger and fox exceed the cap of 50
        y = np.concatenate([np.full(n, a) for a, n in enumerate(counts)])
        splits["aux"] = FeatureSplit((centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32), y)
        meta["aux_classes"] = list(AUX)
    return FeatureSet(splits, CLASSES, meta)


@pytest.fixture(scope="module")
def inputs() -> TrialInputs:
    return TrialInputs(_feature_set(), None, THRESHOLDS)


@pytest.fixture(scope="module")
def neighbor_map(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("nmap") / "map.json"
    path.write_text(json.dumps({"lion": ["tiger"], "wolf": ["fox"], "zebra": ["pony", "tiger"], "car": ["van", "bus"]}))
    return str(path)


def _params(method: str, **settings):
    return get_method(method).make_params({**FAST, **settings})


def _check_results(results, seeds):
    assert [r.seed for r in results] == seeds
    for r in results:
        assert 1 <= r.best_epoch <= FAST["epochs"]
        for split in (r.test, r.val):
            for name in ("acc_overall", "acc_many", "acc_medium", "acc_few", "top5_overall"):
                assert 0.0 <= split[name] <= 1.0, name


@pytest.mark.parametrize("method,settings", [
    ("swrm", {"W": 4, "beta": 2.0}),
    ("dyswrm", {"W": 3, "beta": 1.0}),
    ("neighbor_silencing", {"lambda_s": 0.1}),
    ("lfm", {"alpha": 1.0, "tau": 0.05}),
])
def test_each_method_returns_one_result_per_seed_deterministically(inputs, neighbor_map, method, settings):
    if method == "neighbor_silencing":
        settings = {**settings, "neighbor_map": neighbor_map}
    spec = get_method(method)
    first = spec.run(inputs, _params(method, **settings), [3, 4])
    _check_results(first, [3, 4])
    again = spec.run(inputs, _params(method, **settings), [3, 4])
    assert [r.test for r in again] == [r.test for r in first]
    assert [r.val_curve for r in again] == [r.val_curve for r in first]
    assert first[0].val_curve != first[1].val_curve or first[0].test != first[1].test  # seeds differ


def test_swrm_records_the_tsne_settings_it_used(inputs):
    params = _params("swrm", W=3, tsne_perplexity=30.0)
    get_method("swrm").run(inputs, params, [0])
    assert params.resolved["tsne_perplexity"] == len(CLASSES) - 1  # clamped to C - 1
    assert params.resolved["tsne_learning_rate"] == pytest.approx(len(CLASSES) / 8)
    assert json.loads(json.dumps(dataclasses.asdict(params)))["resolved"]["tsne_perplexity"] == 8.0


def _same_head(a: torch.nn.Module | np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_swrm_without_reweighting_or_margins_is_ce(inputs):
    data = head_data(inputs)
    params = _params("swrm", W=3, reweight=False, margin=False)
    fit = train_swrm_seed(data, params, swrm_tsne_settings(params, data), seed=7)
    ce = train_ce(dict(train=data.train, val=data.val), data.num_classes, params.head_config(), seed=7)
    _same_head(fit.model.weight.detach().numpy(), ce.weight)
    _same_head(fit.model.bias.detach().numpy(), ce.bias)


def test_swrm_with_full_window_and_no_margin_is_class_weighted_ce(inputs):
    """W = C: every window is all classes, so w_c = log(1 + n_max/n_c · mean(n)/n_c) for
    any t-SNE order; β = 0: no margins. That is CE with per-class weights w_y."""
    data = head_data(inputs)
    C, n = data.num_classes, [float(c) for c in COUNTS]
    weights = [math.log(1 + max(n) / n[c] * (sum(n) / C) / n[c]) for c in range(C)]
    w = torch.tensor(weights, dtype=torch.float32)
    params = _params("swrm", W=C, beta=0.0)
    fit = train_swrm_seed(data, params, swrm_tsne_settings(params, data), seed=2)
    torch.manual_seed(2)
    head = torch.nn.Linear(data.d, C)
    fit_head(head, data.train, data.val, params.head_config(), seed=2,
             loss=lambda z, y: F.cross_entropy(z, y, weight=w, reduction="none"))
    _same_head(fit.model.weight.detach().numpy(), head.weight.detach().numpy())


def test_dyswrm_learns_its_similarity_vector_and_without_terms_is_ce(inputs):
    data = head_data(inputs)
    params = _params("dyswrm", W=3, beta=2.0)
    fit = train_dyswrm_seed(data, params, None, seed=1)
    init = np.random.default_rng(1).standard_normal(data.num_classes)  # init="random"
    assert not np.allclose(fit.model.similarity.s.detach().numpy(), init, atol=1e-3)

    off = _params("dyswrm", W=3, reweight=False, margin=False)
    fit = train_dyswrm_seed(data, off, None, seed=1)
    ce = train_ce(dict(train=data.train, val=data.val), data.num_classes, off.head_config(), seed=1)
    _same_head(fit.model.head.weight.detach().numpy(), ce.weight)


def test_ns_problem_from_a_neighbour_map(inputs, neighbor_map):
    params = _params("neighbor_silencing", neighbor_map=neighbor_map)
    problem = build_ns_problem(inputs, params)
    L = len(CLASSES)
    assert problem.aux_classes == ("tiger", "van", "fox", "bus", "pony")  # pool order
    assert problem.counts.tolist() == list(COUNTS) + [50, 30, 50, 10, 45]  # capped at 50 per epoch
    lion, wolf, zebra, car = (CLASSES.index(c) for c in ("lion", "wolf", "zebra", "car"))
    expected = {(lion, L), (zebra, L), (car, L + 1), (wolf, L + 2), (car, L + 3), (zebra, L + 4)}
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(problem.neighbor)) if a < b}
    assert pairs == expected
    assert params.resolved["aux_parents"][0] == ["lion", "zebra"]


def test_ns_with_lambda_one_is_balanced_softmax_on_targets_and_aux(inputs, neighbor_map):
    data = head_data(inputs)
    params = _params("neighbor_silencing", lambda_s=1.0, neighbor_map=neighbor_map)
    problem = build_ns_problem(inputs, params, data)
    ns = train_ns_seed(problem, data, params, seed=4)
    balced = train_ns_seed(problem, data, params, seed=4, loss=balanced_softmax_loss(problem.counts))
    _same_head(ns.model.linear.weight.detach().numpy(), balced.model.linear.weight.detach().numpy())
    silenced = train_ns_seed(problem, data, _params("neighbor_silencing", lambda_s=0.01, neighbor_map=neighbor_map),
                             seed=4)
    assert not np.allclose(silenced.model.linear.weight.detach().numpy(), ns.model.linear.weight.detach().numpy())


def test_ns_predicts_among_targets_only():
    model = TargetsAtTest(4, num_targets=3, num_classes=5, seed=0)
    x = torch.randn(6, 4)
    assert model.train()(x).shape == (6, 5)
    assert model.eval()(x).shape == (6, 3)


def test_ns_finds_neighbours_by_prototype_and_text(inputs):
    for source in ("prototype", "text"):
        params = _params("neighbor_silencing", neighbor_source=source, aux_base_count=1)
        problem = build_ns_problem(inputs, params)
        # few targets get ⌈N_h/N_t⌉ ≥ 1 classes each, capped at the pool of 5: all of them
        assert len(problem.aux_classes) == len(AUX)
        assert params.resolved["neighbor_source"].startswith(source)


def test_ns_without_aux_split_says_what_to_provide():
    bare = TrialInputs(_feature_set(with_aux=False), None, THRESHOLDS)
    with pytest.raises(ValueError, match="aux.*fashion_mnist_lt_open"):
        get_method("neighbor_silencing").run(bare, _params("neighbor_silencing"), [0])


def test_lfm_without_mixup_is_ce_on_cosine_logits(inputs):
    data = head_data(inputs)
    params = _params("lfm", mixup=False)
    text, _ = class_text_features(CLASSES)
    fit = train_lfm_seed(data, params, text, seed=5)
    head = CosineTextHead(data.d, text, 1.0, seed=5)
    fit_head(head, data.train, data.val, params.head_config(), seed=5, loss=ce_loss)
    _same_head(fit.model.projection.detach().numpy(), head.projection.detach().numpy())


def test_lfm_projection_init():
    assert torch.equal(lfm_fit.initial_projection(5, 5, 0), torch.eye(5))
    tall = lfm_fit.initial_projection(16, 4, 0)
    wide = lfm_fit.initial_projection(4, 16, 0)
    torch.testing.assert_close(tall.T @ tall, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(wide @ wide.T, torch.eye(4), atol=1e-5, rtol=0)
    assert torch.equal(tall, lfm_fit.initial_projection(16, 4, 0))


def test_text_features_are_cached_per_process_and_in_a_store(tmp_path):
    first, encoder = class_text_features(("ant", "bee"))
    assert class_text_features(("ant", "bee"))[0] is first
    assert first.shape[0] == 2 and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    store = FeatureStore(str(tmp_path / "store"))
    lfm_fit._TEXT_CACHE.clear()
    emb, _ = class_text_features(("ant", "bee"), store=store)
    np.testing.assert_allclose(emb, first, atol=1e-6)
    lfm_fit._TEXT_CACHE.clear()
    entries = list((tmp_path / "store" / "artifacts").iterdir())
    assert len(entries) == 1
    np.testing.assert_array_equal(class_text_features(("ant", "bee"), store=store)[0], emb)  # read back


@pytest.mark.parametrize("method,knob,value", [
    ("swrm", "W", 1), ("swrm", "beta", -0.5), ("dyswrm", "W", 0), ("dyswrm", "beta", float("inf")),
    ("neighbor_silencing", "lambda_s", 0.0), ("neighbor_silencing", "lambda_s", 1.5),
    ("lfm", "alpha", -0.1), ("lfm", "tau", 0.0),
])
def test_out_of_range_knobs_name_the_knob(method, knob, value):
    with pytest.raises(ValueError, match=knob):
        get_method(method).make_params({knob: value})


def test_window_larger_than_the_classes_is_rejected_and_capped():
    counts = np.array(COUNTS)
    facts = DataFacts(len(COUNTS), counts, THRESHOLDS)
    for name in ("swrm", "dyswrm"):
        spec = get_method(name)
        assert spec.limits(facts) == {"W": len(COUNTS)}
        spec.check(spec.make_params({"W": len(COUNTS)}), facts)
        with pytest.raises(ValueError, match="W=10"):
            spec.check(spec.make_params({"W": 10}), facts)


def test_registry_matches_search_spaces():
    method_files = {p.stem for p in (SPACES_DIR / "method").glob("*.yaml")}
    assert method_files == set(METHODS)
    base_files = {p.stem for p in (SPACES_DIR / "base").glob("*.yaml")}
    assert base_files == set(BASES)
    for space in list_spaces():
        cfg = load([space])
        method = get_method(cfg.method_name)
        params = method.make_params(cfg.method_settings())
        names = {f.name for f in dataclasses.fields(params)}
        assert set(cfg.space) <= names, space
        assert set(cfg.space) <= set(method.knobs), space  # swept knobs are result columns
        BaseSpec.from_mapping(cfg.base)
    for name in ("swrm_window", "dyswrm", "ns_lambda", "lfm_alpha_tau"):
        assert name in list_spaces()
