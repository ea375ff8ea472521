"""A two-node Ray cluster on this machine: a head and a worker node with their own temp
dirs (and HOME), features and results only in the S3-compatible server, a sweep submitted
with ``ray job submit``. Rows record the node each trial ran on; the worker node is killed
mid-sweep and the sweep still ends with exactly one row per configuration and seed."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from explore.results.reader import read_rows
from tests.support.ray_nodes import cluster_nodes, start_node
from tests.support.synthetic import write_feature_dir

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
WINDOWS = (2, 3, 4, 5, 6, 7, 8, 9)
SEEDS = 2
# A lost node is declared dead after ~3 missed one-second health checks (default: ~30 s).
FAST_HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                     "RAY_health_check_failure_threshold": "3"}


def _trial_files(s3, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="explore/sweeps/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])
            if "/results/trial-" in o["Key"] and o["Key"].endswith(".parquet")]


def _node_of(s3, bucket: str, key: str) -> str:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return str(pq.read_table(io.BytesIO(body), columns=["node_id"]).column(0)[0])


def _lost_trials(driver_output: str) -> dict[str, str]:
    """Trial id → the error type, for every trial the driver retried (its warm-worker loop
    logs ``trial <id> failed (<error type>); retrying (n of m)``)."""
    return dict(re.findall(r"trial (\S+) failed \((\w+)\); retrying", driver_output))


def test_sweep_runs_on_two_nodes_and_survives_losing_one(s3_bucket, tmp_path):
    head = start_node(tmp_path / "head.log", num_cpus=1, resources={"trial_driver": 1},
                      env=FAST_HEALTH_CHECK)
    worker = None
    job = None
    try:
        # Its own HOME and temp dir: nothing of the head's local storage is visible to it.
        (tmp_path / "worker-home").mkdir()
        worker = start_node(tmp_path / "worker.log", address=head.gcs_address, num_cpus=1,
                            resources={"node_b": 1}, env={"HOME": str(tmp_path / "worker-home")})
        nodes = {n["NodeID"]: n for n in cluster_nodes(head.gcs_address) if n["Alive"]}
        worker_id = next(i for i, n in nodes.items() if "node_b" in n["Resources"])
        head_id = next(i for i, n in nodes.items() if "trial_driver" in n["Resources"])

        s3 = boto3.client("s3")
        for f in write_feature_dir(tmp_path / "feats").iterdir():
            s3.upload_file(str(f), s3_bucket, f"byo/{f.name}")
        runtime_env = {"env_vars": {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]},
                       "excludes": ["tests/", "benchmarks/", "*.parquet", "explore-store/"]}
        cmd = [str(BIN / "ray"), "job", "submit", "--address", str(head.dashboard),
               "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
               sys.executable, "-m", "explore.sweep", "swrm_window",
               f"features=s3://{s3_bucket}/byo", f"storage_uri=s3://{s3_bucket}/explore",
               "search.sampler=grid", f"+space.W={{type: categorical, choices: {list(WINDOWS)}}}",
               f"repeats={SEEDS}", "head.epochs=600", "search.max_concurrent_trials=2",
               "runner.max_failures=3"]
        out_path = tmp_path / "job.out"
        with open(out_path, "w") as out:
            job = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=REPO)

            # Once the worker node has finished a trial, kill it while the sweep goes on.
            deadline = time.monotonic() + 300
            seen: dict[str, str] = {}
            while worker_id not in seen.values():
                assert job.poll() is None, out_path.read_text()[-4000:]
                assert time.monotonic() < deadline, out_path.read_text()[-4000:]
                for key in _trial_files(s3, s3_bucket):
                    if key not in seen:
                        seen[key] = _node_of(s3, s3_bucket, key)
                time.sleep(0.3)
            files_at_kill = len(seen)
            worker.kill()
            rc = job.wait(timeout=400)
        text = out_path.read_text()
        assert rc == 0, text[-4000:]
        assert files_at_kill < len(WINDOWS), "the worker was killed after the sweep had ended"

        uri = next(line for line in reversed(text.splitlines()) if line.startswith("results: "))
        rows = read_rows(uri.removeprefix("results: ")).rows
        configs = rows[rows.role == "configuration"]
        assert (configs.status == "ok").all()
        # Every configuration × seed exactly once, whatever ran where or was retried.
        assert sorted(configs.groupby(["W", "seed"]).size().index) == [
            (w, s) for w in WINDOWS for s in range(SEEDS)]
        assert (configs.groupby(["W", "seed"]).size() == 1).all()
        ran_on = configs.groupby("trial_id").node_id.first()
        assert set(ran_on) == {head_id, worker_id}, ran_on.to_dict()
        after_kill = configs[configs.started_at > configs[configs.node_id == worker_id]
                             .finished_at.max()]
        assert (after_kill.node_id == head_id).all()
        # The lost trial: its worker died with the node; the driver retried it on a new
        # worker, on the head.
        lost = _lost_trials(text)
        assert lost, "no trial was running on the worker node when it was killed"
        for trial_id, error in lost.items():
            # Ray names the loss the actor's death or, when the connection reset is seen
            # first (a loaded machine), the actor being unavailable.
            assert error in ("ActorDiedError", "ActorUnavailableError"), error
            assert (configs[configs.trial_id == trial_id].node_id == head_id).all()
        print(f"\ntrials per node: head {int((ran_on == head_id).sum())}, worker "
              f"{int((ran_on == worker_id).sum())}; worker killed after {files_at_kill} trial "
              f"file(s); lost and rerun on the head: {sorted(lost)}; rows {len(configs)} = {len(WINDOWS)} configurations × {SEEDS} seeds")
    finally:
        t0 = time.monotonic()
        if job is not None and job.poll() is None:
            job.kill()
        if worker is not None:
            worker.stop()
        head.stop()
        print(f"teardown {time.monotonic() - t0:.1f} s")
