"""Build locks with real processes: an owner killed mid-build is noticed at once (not after
the ~2 minute staleness timeout), and a waiter says whom it waits for."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from explore.store import FeatureSet, FeatureSplit, FeatureStore

# Takes the build lock of key "k" under argv[1], says so in argv[2], then builds for
# argv[3] seconds (forever when killed first) and stores a set of its own.
_BUILDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from explore.store import FeatureSet, FeatureSplit, FeatureStore

    def build():
        Path(sys.argv[2]).write_text("building")
        time.sleep(float(sys.argv[3]))
        s = FeatureSplit(np.full((4, 3), 7, np.float32), np.array([0, 1, 1, 0]))
        return FeatureSet({"train": s, "val": s, "test": s}, ("x", "y"), {"by": "child"})

    FeatureStore(sys.argv[1], lock_heartbeat_s=0.5).get_or_build("k", build)
    """
)


def _mine() -> FeatureSet:
    s = FeatureSplit(np.zeros((2, 3), np.float32), np.array([0, 1]))
    return FeatureSet({"train": s, "val": s, "test": s}, ("x", "y"), {"by": "parent"})


def _start_builder(uri: str, tmp_path: Path, build_s: float) -> subprocess.Popen:
    flag = tmp_path / "building"
    proc = subprocess.Popen([sys.executable, "-c", _BUILDER, uri, str(flag), str(build_s)])
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, "the builder exited before taking the lock"
        assert time.monotonic() < deadline, "the builder did not start building"
        time.sleep(0.05)
    return proc


def _lock_body(uri: str) -> dict:
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        obj = boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/features/k/.lock")
        return json.loads(obj["Body"].read())
    return json.loads((Path(uri) / "features" / "k" / ".lock").read_text())


def _killed_owner_is_noticed_at_once(uri: str, tmp_path: Path, caplog, reap: bool) -> None:
    proc = _start_builder(uri, tmp_path, build_s=600)
    body = _lock_body(uri)
    assert (body["host"], body["pid"]) == (socket.gethostname(), proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    if reap:
        proc.wait(timeout=30)
    # else: left a zombie (exited, not reaped) until the end: it is dead all the same
    store = FeatureStore(uri, poll_s=0.1)  # default staleness: 120 s
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="explore"):
        got = store.get_or_build("k", _mine)
    elapsed = time.monotonic() - t0
    proc.wait(timeout=30)
    assert elapsed < 10, f"took {elapsed:.1f}s to notice the dead owner"
    assert got.meta == {"by": "parent"} and store.read("k").meta == {"by": "parent"}
    broke = [r for r in caplog.records if "broke the build lock" in r.getMessage()]
    assert len(broke) == 1 and broke[0].levelno == logging.WARNING
    assert (
        f"pid {proc.pid} on {socket.gethostname()}, is no longer running" in broke[0].getMessage()
    )
    assert "key k" in broke[0].getMessage()


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_lock_of_a_killed_local_builder_is_broken_at_once(tmp_path, caplog, reap):
    _killed_owner_is_noticed_at_once(str(tmp_path / "store"), tmp_path, caplog, reap)
    assert not (tmp_path / "store" / "features" / "k" / ".lock").exists()


@pytest.mark.s3
def test_lock_of_a_killed_s3_builder_is_broken_at_once(s3_bucket, tmp_path, caplog):
    _killed_owner_is_noticed_at_once(f"s3://{s3_bucket}/c", tmp_path, caplog, reap=True)


def test_waiter_reports_whom_it_waits_for_and_takes_the_result(tmp_path, caplog):
    uri = str(tmp_path / "store")
    proc = _start_builder(uri, tmp_path, build_s=2.0)
    store = FeatureStore(uri, poll_s=0.05)

    def must_not_build() -> FeatureSet:
        raise AssertionError("the waiter built although the owner was alive")

    with caplog.at_level(logging.INFO, logger="explore"):
        got = store.get_or_build("k", must_not_build)
    assert proc.wait(timeout=30) == 0
    assert got.meta == {"by": "child"}
    np.testing.assert_array_equal(got.train.features, np.full((4, 3), 7, np.float32))
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
    # ~40 polls in 2 s, one line: the report is rate-limited (every 30 s)
    assert len(waiting) == 1, waiting
    assert waiting[0].startswith(f"waiting for key k ({uri}/features/k): ")
    assert f"pid {proc.pid} on {socket.gethostname()} has been building it for " in waiting[0]
    assert not any("broke" in r.getMessage() for r in caplog.records)
