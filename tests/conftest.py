"""Shared fixtures: a real local Ray cluster and a real S3-compatible server (moto).

Both are started at most once per test session, only by tests that ask for them,
and stopped at the end. They must run inside a loopback-only network namespace
(``.ci/loopback``): Ray otherwise talks to itself through the host's address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Environment for every Ray process and S3 client started from the tests. It must be
# in place before Ray starts, so that raylet and workers inherit it.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="explore-tests-"))
os.environ["HOME"] = str(_SESSION_TMP / "home")  # Ray writes its auth token under $HOME
os.environ["RAY_TMPDIR"] = str(_SESSION_TMP / "ray")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["AWS_ACCESS_KEY_ID"] = "explore-test-key-id"
os.environ["AWS_SECRET_ACCESS_KEY"] = "explore-test-secret-do-not-log"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("RAY_ADDRESS", None)
(_SESSION_TMP / "home").mkdir(exist_ok=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


S3_PORT = _free_port()
os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{S3_PORT}"


def _confined_to_loopback() -> bool:
    if os.environ.get("EXPLORE_IN_LOOPBACK_NS") == "1":
        return True
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def _require_loopback() -> None:
    if not _confined_to_loopback():
        pytest.fail(
            "this test starts Ray or an S3 server and must run in a loopback-only network "
            "namespace: bash .ci/loopback .venv/bin/python -m pytest ...",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1; yields its endpoint URL. Stopped by PID at the end."""
    _require_loopback()
    log = open(_SESSION_TMP / "moto.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(S3_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", S3_PORT), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start; see " + str(_SESSION_TMP / "moto.log"))
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture()
def s3_bucket(s3_endpoint, request):
    """A fresh bucket on the moto server; yields its name."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{time.time_ns() % 10**8}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session (dashboard on: Train's
    placement-group cleaner needs it). ``trial_driver`` is the custom resource that
    Train-in-Tune trial drivers hold instead of a CPU (docs/operations.md#the-trial_driver-resource)."""
    _require_loopback()
    import ray

    ray.init(num_cpus=2, resources={"trial_driver": 2}, include_dashboard=True,
             log_to_driver=False)
    yield ray
    ray.shutdown()
