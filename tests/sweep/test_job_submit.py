"""`ray job submit -- python -m explore.sweep …` against a real `ray start --head`,
with features and results on the local S3-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from explore.results.reader import read_rows
from tests.support.ray_nodes import start_node
from tests.support.synthetic import write_feature_dir

pytestmark = [pytest.mark.ray, pytest.mark.s3]

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture()
def ray_head(tmp_path):
    """A separate head node (own ports, so it can run beside the session's cluster)."""
    node = start_node(tmp_path / "head.log", num_cpus=2, resources={"trial_driver": 2})
    yield node.dashboard
    node.stop()


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
