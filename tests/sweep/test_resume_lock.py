"""The resume lock ``sweeps/<id>/resume.lock`` is a lease: a lock written by a process
on another host (or container, or boot) that stopped renewing it is broken; a live one is
refused with a line naming the file and the override that forces it. Real files and a
real S3 server (moto); no Ray."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from explore.config import ConfigError, load
from explore.results.layout import SweepLayout
from explore.store import uri as storage
from explore.sweep.study import SweepLock

SWEEP_ID = "20261206-120000-abcd"


def _other_host_body(heartbeat_age_s: float) -> bytes:
    """A lock body as explore writes it on another machine (its pid means nothing here)."""
    now = time.time()
    return json.dumps({"owner": "node-7:4242:deadbeef", "host": "node-7", "pid": 4242,
                       "pid_scope": "another-boot/pid:[4026531836]",
                       "created": now - heartbeat_age_s - 600,
                       "heartbeat": now - heartbeat_age_s}).encode()


def _plant(root: str, body: bytes) -> str:
    uri = storage.join(root, "sweeps", SWEEP_ID, "resume.lock")
    fs, path = storage.resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(body)
    return uri


def _read(uri: str) -> dict:
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as f:
        return json.loads(f.read())


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return f"s3://{request.getfixturevalue('s3_bucket')}/store"


def test_a_lapsed_lease_from_another_host_is_broken(root, caplog):
    uri = _plant(root, _other_host_body(heartbeat_age_s=3600))  # a lost node, an hour ago
    lock = SweepLock(SweepLayout(root, SWEEP_ID))
    with caplog.at_level("WARNING"):
        lock.acquire()
    try:
        assert _read(uri)["pid"] == os.getpid()  # now ours
        assert "pid 4242 on node-7, stopped renewing it" in caplog.text
    finally:
        lock.release()


def test_a_live_lease_from_another_host_is_refused_naming_the_file_and_the_override(root):
    uri = _plant(root, _other_host_body(heartbeat_age_s=5))
    lock = SweepLock(SweepLayout(root, SWEEP_ID))
    with pytest.raises(ConfigError) as err:
        lock.acquire()
    message = str(err.value)
    assert "\n" not in message
    assert f"sweep {SWEEP_ID} is held by pid 4242 on node-7" in message
    assert re.search(r"renewed \d+s ago", message)
    assert f"resume_force_unlock=true to break {uri}" in message
    assert _read(uri)["host"] == "node-7"  # untouched

    lock.acquire(force=True)  # what the override does
    try:
        assert _read(uri)["pid"] == os.getpid()
    finally:
        lock.release()


def test_the_held_lease_is_renewed(tmp_path):
    """The owner's heartbeat keeps its lease fresh (here every 0.2 s)."""
    from explore.store._locks import LockPolicy, take_exclusive

    policy = LockPolicy(heartbeat_s=0.2, stale_after_s=1.0, poll_s=0.1, wait_timeout_s=0.0)
    held = take_exclusive(str(tmp_path), "sweeps/x/resume.lock", "sweep x", policy)
    try:
        path = tmp_path / "sweeps" / "x" / "resume.lock"
        first = json.loads(path.read_bytes())["heartbeat"]
        time.sleep(0.7)
        assert json.loads(path.read_bytes())["heartbeat"] > first
    finally:
        held.release()
    assert not path.exists()


def test_the_override_is_a_switch_not_stored_with_the_sweep():
    cfg = load(["alphanet_k", "resume_force_unlock=true"])
    assert cfg.resume_force_unlock is True
    assert load(["alphanet_k"]).resume_force_unlock is False
    with pytest.raises(ConfigError, match="resume_force_unlock"):
        load(["alphanet_k", "resume_force_unlock=maybe"])
