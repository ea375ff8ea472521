"""The rerun command: knobs pinned, more seeds, the sweep's own overrides, its storage; and
it composes through the real sweep config into exactly those knobs."""

from __future__ import annotations

import shlex

import pytest

from explore.analyze.commands import hydra_value, rerun_command
from explore.analyze.load import SweepMeta
from explore.config import load as load_sweep_config


def test_command_pins_knobs_and_keeps_only_the_users_other_overrides():
    meta = SweepMeta("s1", "alphanet_k", "s3://bucket/explore",
                     ("num_samples=30", "repeats=3", "resume=old", "space.k.high=8",
                      "+space.extra=1", "storage_uri=/elsewhere", "dataset=cifar10_lt",
                      "runner.cpus_per_trial=0.5", "seed=7"))
    cmd = rerun_command(meta, (("k", 8), ("distance", "cosine")))
    assert cmd == ("python -m explore.sweep alphanet_k space.k=8 space.distance=cosine "
                   "num_samples=1 repeats=10 dataset=cifar10_lt runner.cpus_per_trial=0.5 "
                   "seed=7 storage_uri=s3://bucket/explore")


@pytest.mark.parametrize(("value", "text"), [
    (8, "8"), (0.5, "0.5"), (0.1234567891234, "0.1234567891234"), (1.0, "1.0"),
    (True, "true"), ("cosine", "cosine"), ("null", "'null'"), ("a b", "'a b'"),
    ("it's", "'it\\'s'"),
])
def test_hydra_values_round_trip_their_type(value, text):
    assert hydra_value(value) == text


def test_command_composes_into_the_right_fixed_knobs(tmp_path):
    meta = SweepMeta("s1", "lfm_alpha_tau", str(tmp_path), ("runner.cpus_per_trial=0.5",))
    cmd = rerun_command(meta, (("alpha", 0.1234567891234), ("tau", 0.002)))
    argv = shlex.split(cmd)
    assert argv[:4] == ["python", "-m", "explore.sweep", "lfm_alpha_tau"]
    cfg = load_sweep_config(argv[3:])
    assert {k: (s.type, s.value) for k, s in cfg.space.items()} == {
        "alpha": ("fixed", 0.1234567891234), "tau": ("fixed", 0.002)}
    assert (cfg.num_samples, cfg.repeats, cfg.storage_uri) == (1, 10, str(tmp_path))
    assert cfg.runner.cpus_per_trial == 0.5


def test_quotes_what_the_shell_would_split(tmp_path):
    meta = SweepMeta("s1", "alphanet_k", str(tmp_path / "my store"), None)
    argv = shlex.split(rerun_command(meta, (("k", 3),)))
    assert argv[-1] == f"storage_uri={tmp_path / 'my store'}"


def test_an_unswept_knob_column_is_pinned_as_a_method_setting(tmp_path):
    """alphanet_k searches k and distance; rho is a knob column the sweep held at 0.5: the
    command sets it as method.rho (space.rho is no knob of that space) and composes."""
    meta = SweepMeta("s1", "alphanet_k", str(tmp_path), (), swept=("k", "distance"))
    cmd = rerun_command(meta, (("k", 4), ("distance", "cosine"), ("rho", 0.5)))
    assert "space.k=4 space.distance=cosine method.rho=0.5" in cmd
    cfg = load_sweep_config(shlex.split(cmd)[3:])
    assert set(cfg.space) == {"k", "distance"} and cfg.method_settings["rho"] == 0.5
