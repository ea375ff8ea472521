"""`ray job submit -- python -m explore.sweep …` against a real `ray start --head`,
with features and results on the local S3-compatible server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from explore.results.reader import read_rows
from tests.support.synthetic import write_feature_dir

pytestmark = [pytest.mark.ray, pytest.mark.s3]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def ray_head(tmp_path):
    """A separate head node (own ports, so it can run beside the session's cluster),
    stopped by terminating its `ray start --block` process."""
    dash = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    ports = {f"--{name}": str(_free_port()) for name in (
        "port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")}
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
           "--resources", json.dumps({"trial_driver": 2}), "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--disable-usage-stats",
           f"--temp-dir={temp_dir}",  # short: Ray's socket paths must fit in 107 bytes
           *[f"{k}={v}" for k, v in ports.items()]]
    log = open(tmp_path / "head.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with socket.create_connection(("127.0.0.1", dash), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError((tmp_path / "head.log").read_text()[-3000:])
            time.sleep(0.5)
    yield address
    os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submission_runs_a_sweep_into_s3(ray_head, s3_bucket, tmp_path):
    local = write_feature_dir(tmp_path / "feats")
    s3 = boto3.client("s3")
    for f in local.iterdir():
        s3.upload_file(str(f), s3_bucket, f"byo/{f.name}")
    runtime_env = {
        # The endpoint is configuration, not a secret; credentials reach the cluster from
        # its own environment (instance profile / env of `ray start`), never the job spec.
        "env_vars": {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]},
        "excludes": ["tests/", "benchmarks/", "*.parquet", "explore-store/"],
    }
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--",
           sys.executable, "-m", "explore.sweep", "alphanet_k",
           f"features=s3://{s3_bucket}/byo", f"storage_uri=s3://{s3_bucket}/explore",
           "num_samples=2", "repeats=2", "method.epochs=5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "succeeded" in out
    lines = [line for line in out.splitlines() if line.startswith("results: ")]
    assert lines, out[-3000:]
    uri = lines[-1][len("results: "):]
    assert uri.startswith(f"s3://{s3_bucket}/explore/sweeps/alphanet_k-")
    df = read_rows(uri).rows
    assert len(df[df.method == "alphanet"]) == 4 and len(df[df.method == "crt"]) == 2  # a row per seed
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in out
