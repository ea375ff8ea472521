"""What ``resume=`` accepts and what a new sweep's directory guarantees, on real local and S3
storage (moto): only sweep ids, exclusive creation, corrupt configs named, inputs checked;
and a dead ``RAY_ADDRESS`` ends in one line within seconds."""

from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from explore.config import ConfigError, load
from explore.results import writer
from explore.results.layout import SweepLayout
from explore.results.rows import Provenance, build_row
from explore.splits import SplitThresholds
from explore.store import StorageError
from explore.sweep import resume
from explore.sweep.cluster import check_ray_address
from explore.training.outcome import SeedResult


def _cfg(store, **overrides):
    args = ["alphanet_k", f"storage_uri={store}"] + [f"{k}={v}" for k, v in overrides.items()]
    return load(args)


@pytest.mark.parametrize("ref", [
    "..", "../x", "a/../../b", "sweeps/../../etc", "alphanet_k-20261125-101500-ab12/../../x",
    "s3://bkt1/p/sweeps/../../../../trav/x", "alphanet_k-20261125-101500-AB12",
    "/tmp/store/sweeps/..", "s3://bkt1/p/../q/sweeps/alphanet_k-20261125-101500-ab12",
])
def test_resume_takes_only_sweep_ids(tmp_path, ref):
    with pytest.raises(ConfigError, match="is not a sweep id"):
        resume.locate(_cfg(tmp_path, resume=f"'{ref}'"))


def test_resume_accepts_ids_old_and_new_and_sweep_uris(tmp_path):
    new = resume.new_sweep_id("alphanet_k")
    for ref, root in [(new, str(tmp_path)), ("alphanet_k-20261125-101500-ab12", str(tmp_path)),
                      (f"s3://bkt/prefix/sweeps/{new}", "s3://bkt/prefix")]:
        layout, resuming = resume.locate(_cfg(tmp_path, resume=ref))
        assert resuming and layout.storage_uri == root and layout.sweep_id == ref.split("/")[-1]
    assert len({resume.new_sweep_id("x") for _ in range(200)}) == 200  # 48 random bits


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    s3_endpoint = request.getfixturevalue("s3_endpoint")
    import boto3

    bucket = f"resume-{time.time_ns() % 10**9}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/explore"


def test_a_sweep_directory_is_created_once(store_uri):
    """A collision of ids never merges two sweeps: the second writer is refused and the
    first sweep's config stays as it was."""
    layout = SweepLayout(store_uri, "alphanet_k-20261206-120000-0123456789ab")
    resume.save_config(layout, {"space_name": "alphanet_k", "num_samples": 3})
    with pytest.raises(StorageError, match="exists already"):
        resume.save_config(layout, {"space_name": "alphanet_k", "num_samples": 99})
    assert resume.load_config(layout)["num_samples"] == 3


def test_a_corrupt_sweep_config_is_named(tmp_path):
    layout = SweepLayout(str(tmp_path), "alphanet_k-20261206-120000-0123456789ab")
    (tmp_path / "sweeps" / layout.sweep_id).mkdir(parents=True)
    (tmp_path / "sweeps" / layout.sweep_id / "sweep.json").write_text('{"space_name": "alph')
    with pytest.raises(StorageError, match=r"sweep\.json is corrupt"):
        resume.load_config(layout)


def _reference_rows(layout: SweepLayout, feature_key: str, keys: list[str]) -> None:
    prov = Provenance(sweep_id=layout.sweep_id, space="alphanet_k", mode="head", dataset="d",
                      feature_key=feature_key, thresholds=SplitThresholds(), code_version="v")
    rows = [build_row(dataclasses.replace(prov, base_key=key), trial_id="base-crt", method="crt",
                      role="reference", result=SeedResult(seed=i, best_epoch=0, test={}, val={}),
                      knobs={}) for i, key in enumerate(keys)]
    writer.write_rows(layout, "base-crt", rows)


def test_a_resume_refuses_other_features_or_another_base_model(tmp_path):
    layout = SweepLayout(str(tmp_path), "alphanet_k-20261206-120000-0123456789ab")
    stored = {"inputs": {"feature_key": "f1", "base_key": "b1", "reference_keys": ["b1", "b1"]}}
    same = dict(stored["inputs"])
    resume.check_same_inputs(layout, stored, same)  # nothing changed: no error
    with pytest.raises(ConfigError, match="was run with feature_key f1, and this command would "
                                          "use f2"):
        resume.check_same_inputs(layout, stored, {**same, "feature_key": "f2"})
    with pytest.raises(ConfigError, match="base_key b1, and this command would use b2"):
        resume.check_same_inputs(layout, stored, {**same, "base_key": "b2"})
    # a sweep stored before its inputs were recorded: its reference rows say what they were
    _reference_rows(layout, "f1", ["b1", "b1"])
    resume.check_same_inputs(layout, {}, same)
    with pytest.raises(ConfigError, match="reference_keys"):
        resume.check_same_inputs(layout, {}, {**same, "reference_keys": ["b9", "b9"]})


def test_a_dead_ray_address_is_one_line_within_seconds():
    """Checked before ``ray.init``, which would retry for minutes."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers"):
        check_ray_address(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    with socket.socket() as s:  # a listening one passes
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_ray_address(f"127.0.0.1:{s.getsockname()[1]}")


def test_stored_configs_are_json_documents(tmp_path):
    layout = SweepLayout(str(tmp_path), resume.new_sweep_id("alphanet_k"))
    resume.save_config(layout, {"space_name": "alphanet_k", "inputs": {"feature_key": "k"}})
    text = (tmp_path / "sweeps" / layout.sweep_id / "sweep.json").read_text()
    assert json.loads(text)["inputs"] == {"feature_key": "k"}
