"""Hydra composition of the real search spaces, typed config, knob-range validation."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from explore.config import SPACES_DIR, ConfigError, KnobSpace, compose, list_spaces, load
from explore.recipes import RECIPES, get_recipe
from explore.recipes.bases import TauNormTrialParams
from explore.splits import SplitThresholds
from explore.sweep.__main__ import main as sweep_main
from explore.sweep.plan import checked_space
from explore.training.head_config import HeadTrainConfig
from explore.training.inputs import DataFacts


def test_every_space_composes_and_names_a_registered_method():
    spaces = list_spaces()
    assert {"alphanet_k", "alphanet_rho", "swrm_window", "dyswrm", "ns_lambda", "lfm_alpha_tau"} <= set(spaces)
    assert not any(s.startswith("_") for s in spaces)
    for name in spaces:
        cfg = load([name, "num_samples=2"])
        assert cfg.method in RECIPES, f"{name}: method {cfg.method} is not registered"
        recipe = get_recipe(cfg.method)
        recipe.params(cfg.method_settings)  # the defaults are valid parameters
        for knob in cfg.space:
            assert knob in recipe.params_type.__dataclass_fields__, f"{name}: {knob}"


def test_every_registered_method_has_a_config():
    for name in RECIPES:
        assert (SPACES_DIR / "method" / f"{name}.yaml").exists()


def test_every_group_is_typed_once_and_the_head_group_is_shared():
    cfg = load(["swrm_window", "head.epochs=7", "base=tau_norm", "base.tau=0.5"])
    assert cfg.head == HeadTrainConfig(epochs=7)
    assert cfg.base.train is cfg.head  # the reference trains like the method's head
    assert cfg.base.settings == TauNormTrialParams(tau=0.5)
    assert cfg.backbone.arch == "small_cnn" and cfg.dataset is not None
    assert "epochs" not in cfg.method_settings  # training settings are the head group's


@pytest.mark.parametrize("value,want", [("auto", "auto"), ("true", True), ("false", False)])
def test_head_seeds_stacked_reads_auto_true_or_false(value, want):
    assert load(["swrm_window", f"head.seeds_stacked={value}"]).head.seeds_stacked == want
    assert load(["swrm_window"]).head.seeds_stacked == "auto"


@pytest.mark.parametrize("override,message", [
    ("head.seeds_stacked=sometimes", "head: head training: seeds_stacked='sometimes' must be"),
    ("search.sampler=tpee", "search.sampler='tpee' must be one of tpe, random, grid (did you mean tpe?)"),
    ("seed=-5", "seed=-5 must be an integer >= 0"),
    ("+num_sample=3", "unknown setting(s): num_sample (did you mean num_samples?)"),
    ("num_samples=2.5", "num_samples=2.5 must be an integer >= 1"),
    ("storage_uri=s3:/bucket/x", "storage_uri: storage URI 's3:/bucket/x'"),
    ("head.optimizer=rmsprop", "head: head training: optimizer='rmsprop'"),
    ("runner.head_placement=gpu", "runner.head_placement='gpu' must be one of"),
    ("runner.gpus_per_worker=-0.5", "runner.gpus_per_worker=-0.5 must be a number >= 0"),
    ("runner.gpus_per_worker=two", "runner.gpus_per_worker='two' must be a number >= 0"),
    ("search.tolerance=2.5e2", "search.tolerance=250.0 must be in (0, 100) points"),
    ("search.objective=few", "search.objective='few' must be one of"),
    ("search.scheduler=hyperband", "search.scheduler='hyperband' must be one of fifo, asha"),
    ("search.grace_period=0", "search.grace_period=0 must be an integer >= 1"),
    ("search.reduction_factor=1", "search.reduction_factor=1 must be a number > 1"),
    ("method.rho=-1", "alphanet: alphanet: rho=-1"),
    ("dataset.n_max=0", "dataset.n_max must be an integer >= 1"),
    ("backbone.epochs=0", "epochs must be >= 1"),
])
def test_bad_settings_are_one_line_errors_before_anything_runs(override, message):
    with pytest.raises(ConfigError) as info:
        load(["alphanet_k", override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_overrides_reach_the_typed_config():
    cfg = load(["alphanet_k", "num_samples=3", "repeats=4", "storage_uri=s3://bucket/x",
                "seed=7", "method.rho=1.5", "dataset=fashion_mnist_lt", "splits.few_below=15"])
    assert (cfg.num_samples, cfg.repeats, cfg.storage_uri) == (3, 4, "s3://bucket/x")
    assert cfg.seeds == [7, 8, 9, 10]
    assert cfg.method_settings["rho"] == 1.5
    assert cfg.splits == SplitThresholds(many_above=100, few_below=15)
    assert cfg.space["k"] == KnobSpace("k", "int", low=2, high=10)
    assert cfg.space["distance"].choices == ("euclidean", "cosine")


def test_group_defaults_merge_not_replace():
    cfg = load(["alphanet_rho"])
    assert cfg.search.sampler == "grid"
    assert cfg.search.metric == "val_acc_overall"  # from _common's objective, kept


def test_unknown_space_and_bad_override():
    with pytest.raises(ConfigError, match="unknown search space 'nope'; known spaces: .*alphanet_k"):
        load(["nope"])
    with pytest.raises(ConfigError, match="bad override"):
        compose("alphanet_k", ["no_such_key=1"])
    with pytest.raises(ConfigError, match="repeats=0"):
        load(["alphanet_k", "repeats=0"])


def test_knob_space_parsing():
    assert KnobSpace.parse("k", 4) == KnobSpace("k", "fixed", value=4)
    assert KnobSpace.parse("d", {"choices": ["a", "b"]}).type == "categorical"
    assert KnobSpace("k", "int", low=2, high=4).values() == [2, 3, 4]
    with pytest.raises(ConfigError, match="low <= high"):
        KnobSpace("k", "int", low=5, high=2)
    with pytest.raises(ConfigError, match="log range"):
        KnobSpace("tau", "float", low=0.0, high=1.0, log=True)


def _facts(num_base: int = 7) -> DataFacts:
    counts = np.array([500] * 4 + [50] * (num_base - 4) + [5] * 3)
    return DataFacts(len(counts), counts, SplitThresholds())


def test_k_range_is_capped_but_a_fixed_k_past_the_base_classes_is_an_error():
    method = get_recipe("alphanet")
    cfg = load(["alphanet_k"])
    space = checked_space(cfg, method, _facts())
    assert space["k"].high == 7 and space["k"].low == 2
    with pytest.raises(ConfigError, match="k=9 is larger than the 7 base"):
        checked_space(load(["alphanet_k", "space.k=9"]), method, _facts())
    with pytest.raises(ConfigError, match="larger than the 7 base"):
        checked_space(load(["alphanet_k", "method.k=12", "space={}"]), method, _facts())


def test_out_of_range_knobs_are_errors():
    method = get_recipe("alphanet")
    with pytest.raises(ConfigError, match="rho"):
        checked_space(load(["alphanet_rho", "space.rho.choices=[0.0,1.0]"]), method, _facts())
    with pytest.raises(ConfigError, match="not a parameter of method alphanet"):
        checked_space(load(["alphanet_k", "+space.beta=1.0"]), method, _facts())


def test_cli_errors_are_one_line(capsys):
    assert sweep_main(["no_such_space"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown search space")


def test_cli_lists_spaces(capsys):
    assert sweep_main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list_spaces()


def test_composed_config_is_plain_data():
    raw = OmegaConf.to_container(compose("alphanet_k", []), resolve=True)
    assert raw["method"]["name"] == "alphanet" and raw["base"]["name"] == "crt"


def test_local_uris_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(["alphanet_k", "storage_uri=./store", "features=feats", "resume=./store/sweeps/x"])
    assert cfg.storage_uri == str(tmp_path / "store")
    assert cfg.features == str(tmp_path / "feats")
    assert cfg.resume == str(tmp_path / "store" / "sweeps" / "x")
    cfg = load(["alphanet_k", "storage_uri=s3://bkt/p", "resume=alphanet_k-1"])
    assert cfg.storage_uri == "s3://bkt/p" and cfg.resume == "alphanet_k-1"


def test_neighbor_silencing_without_an_auxiliary_pool_is_an_error_before_any_trial():
    method = get_recipe("neighbor_silencing")
    with pytest.raises(ValueError, match="needs an auxiliary pool .* dataset=fashion_mnist_lt_open"):
        checked_space(load(["ns_lambda"]), method, _facts())
    facts = DataFacts(10, _facts().counts, SplitThresholds(), aux_classes=("Shirt",))
    assert set(checked_space(load(["ns_lambda"]), method, facts)) == {"lambda_s"}


def test_unreachable_storage_is_a_one_line_error_without_secrets(monkeypatch, capsys):
    import os
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    assert sweep_main(["alphanet_k", "storage_uri=s3://explore-bucket/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach S3 endpoint" in err[0] and f"127.0.0.1:{port}" in err[0]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in err[0]


def test_gpus_per_worker_follows_use_gpu_and_bounds_full_mode_concurrency():
    """``runner.gpus_per_worker``: null is 1 GPU per worker with backbone.use_gpu, else 0;
    full-mode trials run at most as many at once as the cluster's CPUs and GPUs hold."""
    from explore.sweep.plan import check_mode
    from explore.sweep.scheduling import trials_that_fit

    cpu, gpu = load(["swrm_window", "mode=full"]), load(["swrm_window", "backbone=resnet32"])
    assert cpu.runner.gpus_per_worker is None and cpu.runner.worker_gpus(cpu.backbone.use_gpu) == 0
    assert gpu.runner.worker_gpus(gpu.backbone.use_gpu) == 1
    cfg = load(["swrm_window", "mode=full", "runner.gpus_per_worker=0.25",
                "search.max_concurrent_trials=8", "backbone.num_workers=2"])
    assert cfg.runner.worker_gpus(False) == 0.25
    assert trials_that_fit(cfg, {"CPU": 16, "GPU": 1}) == 2  # 2 trials × 2 workers × 0.25
    assert trials_that_fit(cfg, {"CPU": 6, "GPU": 4}) == 3  # CPU-bound: 3 × 2 workers
    assert trials_that_fit(cfg, {"CPU": 16}) == 1  # no GPU yet: one (it waits)
    assert trials_that_fit(cpu, {"CPU": 16, "GPU": 0}) == 2  # no GPUs asked: CPUs and the cap
    refused = load(["swrm_window", "mode=full", "backbone=resnet32", "runner.gpus_per_worker=0"])
    with pytest.raises(ConfigError, match="runner.gpus_per_worker=0 gives the Train workers no GPU"):
        check_mode(refused, get_recipe("swrm"))


def test_asha_compares_the_epochs_validation_top1_so_needs_that_objective():
    cfg = load(["swrm_window", "search.scheduler=asha", "search.grace_period=2",
                "search.reduction_factor=2.5"])
    assert (cfg.search.scheduler, cfg.search.grace_period, cfg.search.reduction_factor) == (
        "asha", 2, 2.5)
    assert load(["swrm_window"]).search.scheduler == "fifo"
    with pytest.raises(ConfigError, match="needs search.objective=val_overall"):
        load(["swrm_window", "search.scheduler=asha", "search.objective=pareto"])
