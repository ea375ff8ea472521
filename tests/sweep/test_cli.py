"""The command line: --help, NAME --help, --cfg job, closest-key hints, and dry_run=true
(which checks everything, prints what would run and writes nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from explore.config import compose, list_spaces, sweep_config
from explore.pipeline import prepare
from explore.recipes import get_recipe
from explore.store import FeatureStore
from explore.sweep.__main__ import main
from tests.support.synthetic import write_feature_dir

REPO = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_help_lists_every_space_with_method_knobs_and_ranges(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in list_spaces():
        assert f"\n  {name} " in out, name
    assert "alphanet on crt" in out
    assert "k: int 2..10; distance: euclidean | cosine" in out
    assert "beta: float 0..10" in out  # dyswrm's continuous knob with its range
    for override in ("num_samples=20 repeats=10", "space.k=5", "dry_run=true", "verbose=true",
                     "storage_uri=", "resume="):
        assert override in out, override
    assert main([]) == 2  # no space: the usage, on stderr
    assert "usage: python -m explore.sweep NAME" in capsys.readouterr().err


def test_space_help_shows_the_composed_config_and_its_knobs(capsys):
    assert main(["alphanet_k", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alphanet_k: alphanet on crt, fashion_mnist_lt, backbone small_cnn")
    assert "  k: int 2..10\n  distance: euclidean | cosine\n" in out
    assert "space.k=5" in out  # how to pin a knob, with the method's default as the example
    config = yaml.safe_load(out.split("--cfg job prints it alone):\n", 1)[1])
    assert config["method"]["name"] == "alphanet" and config["space"]["k"]["high"] == 10
    # --help after overrides shows them applied, and so does --help before NAME
    assert main(["--help", "alphanet_k", "base=lws"]) == 0
    assert "alphanet on lws" in capsys.readouterr().out


def test_cfg_job_prints_the_composed_config_and_exits(capsys, tmp_path):
    store = tmp_path / "never"
    assert main(["alphanet_k", "num_samples=7", "space.k={type:int,low:2,high:4}",
                 f"storage_uri={store}", "--cfg", "job"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["num_samples"] == 7 and config["space"]["k"] == {"type": "int", "low": 2,
                                                                   "high": 4}
    assert config["method"]["rho"] == 0.5 and not store.exists()
    # unresolved by default, as Hydra prints it; --resolve resolves interpolations
    assert main(["alphanet_k", "--cfg=job"]) == 0
    assert "${oc.env:EXPLORE_STORAGE_URI" in capsys.readouterr().out
    assert main(["alphanet_k", "--cfg", "job", "--resolve"]) == 0
    assert "${" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["alphanet_k", "num_sample=3"], "no key 'num_sample' (did you mean num_samples?)"),
    (["alphanet_k", "backbone.epoch=3"], "(did you mean backbone.epochs?)"),
    (["alphanet_k", "epochs=3"], "did you mean head.epochs or backbone.epochs or method.epochs?"),
    (["alphanet_k", "search.samplr=grid"], "(did you mean search.sampler?)"),
    (["alphanet_k", "dataset=cifar10"], "no dataset 'cifar10' (did you mean dataset=cifar10_lt?)"),
    (["alphanet_k", "space.rho=1"], "space.rho is not a knob of alphanet_k (its knobs: space.k, "
                                    "space.distance); add a knob with +space.rho=1"),
    (["alphanet_k", "k"], "'k' is not an override: write key=value"),
    (["alphanet_kk"], "unknown search space 'alphanet_kk' (did you mean alphanet_k?)"),
    (["alphanet_k", "-m"], "-m/--multirun is not needed"),
    (["alphanet_k", "--cfg", "hydra"], "--cfg job prints the sweep's composed config"),
    (["alphanet_k", "--frobnicate"], "unknown option --frobnicate"),
    (["alphanet_k", "dry_run=maybe"], "dry_run='maybe' must be true or false"),
])
def test_bad_command_lines_end_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_switches_need_no_yaml_key_and_are_typed():
    cfg = sweep_config(compose("alphanet_k", ["dry_run=true", "verbose=true"]), "alphanet_k")
    assert cfg.dry_run is True and cfg.verbose is True
    cfg = sweep_config(compose("alphanet_k", []), "alphanet_k")
    assert cfg.dry_run is False and cfg.verbose is False


def _dry_run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """A separate process with its own HOME and RAY_TMPDIR, so that anything it wrote
    (a Ray session, an auth token) would be seen."""
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(tmp_path / "ray")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "explore.sweep", *args, "dry_run=true"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_dry_run_on_a_cold_store_trains_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    done = _dry_run(["alphanet_k", f"storage_uri={store}", "num_samples=20", "repeats=3"],
                    tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dry run of alphanet_k: nothing is trained or written" in out
    assert f"{store}: would be created" in out
    # the data were loaded and checked: Fashion-MNIST-LT's profile (n_max 1000, IF 200)
    assert "fashion_mnist_lt: 10 classes (7 with >= 20 training samples), 2238 train" in out
    assert "k int 2..7; distance euclidean | cosine" in out  # capped at the 7 base classes
    # 20 asked, but the finite space has 6 × 2 configurations
    assert "12 configuration(s) (the space has 12) × 3 seeds (0, 1, 2) = 36 runs" in out
    assert "a local Ray cluster started by this command" in out
    assert "each trial trains its seeds on a warm trial worker (1 CPU, 0 GPU; ended with the sweep)" in out
    for step in ("backbone   would run  small_cnn", "features   would run  extract train/val/test "
                 "(13238 images)", "base       would run  crt on the features, seed(s) 0"):
        assert step in out, step
    assert "results:" not in out
    # nothing written: no store, no Ray session, no auth token
    assert not store.exists()
    assert _files(tmp_path / "ray") == [] and _files(tmp_path / "home") == []


def test_dry_run_reports_what_is_cached_and_still_writes_nothing(tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    args = ["alphanet_k", f"features={feats}", f"storage_uri={store}", "repeats=2",
            "space.k=3", "space.distance=cosine"]
    assert main([*args, "dry_run=true"]) == 0
    cold = capsys.readouterr().out
    assert "features   would run  import" in cold and "base       would run  crt" in cold
    assert "1 configuration(s) × 2 seeds (0, 1) = 2 runs" in cold  # every knob pinned
    assert "none (every knob pinned)" in cold
    assert not store.exists()

    # prepare() (no Ray for imported features) fills the cache the way a sweep does
    cfg = sweep_config(compose("alphanet_k", args[1:]), "alphanet_k")
    prepare(cfg, get_recipe(cfg.method), FeatureStore(str(store)))
    before = _files(store)
    assert before
    assert main([*args, "dry_run=true"]) == 0
    warm = capsys.readouterr().out
    assert "features   cached     import" in warm and "base       cached     crt" in warm
    assert _files(store) == before


def test_dry_run_fails_on_bad_data_with_one_line(tmp_path, capsys):
    assert main(["alphanet_k", f"features={tmp_path / 'missing'}",
                 f"storage_uri={tmp_path / 'store'}", "dry_run=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.npz" in err[0], err
    assert not (tmp_path / "store").exists()
