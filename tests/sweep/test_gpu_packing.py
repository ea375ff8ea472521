"""GPU packing on a Ray node with fake GPUs (``ray start --num-gpus=2`` on a CPU machine):
four 0.5-GPU head trials run at once, two per GPU; full-mode Train workers are placed by
GPU (one each) and still train on the CPU over gloo, since there is no CUDA here. A test
that trains on a real CUDA device is skipped without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from explore.results.reader import read_rows
from tests.support.ray_nodes import start_node
from tests.support.synthetic import write_feature_dir

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
REPO = str(Path(__file__).resolve().parents[2])
"""This checkout: the separate node's workers and the driver import explore from it (not
from wherever the environment's install points)."""
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def gpu_head(tmp_path_factory):
    """A separate head node with 2 fake GPUs, 4 CPUs and 2 ``trial_driver`` (own ports, so it
    runs beside the session's cluster); yields its GCS address."""
    from tests.conftest import _require_loopback

    _require_loopback()
    node = start_node(tmp_path_factory.mktemp("gpu-head") / "head.log", num_cpus=4, num_gpus=2,
                      resources={"trial_driver": 2}, env={"PYTHONPATH": REPO})
    yield node.gcs_address
    node.stop()


def _sweep(address: str, argv: list[str], tmp_path: Path) -> str:
    """``python -m explore.sweep`` as a driver of the GPU head (RAY_ADDRESS); the results URI."""
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-m", "explore.sweep", *argv], capture_output=True,
                          text=True, timeout=400, cwd=tmp_path, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("results: ")]
    assert lines, out[-3000:]
    return lines[-1].removeprefix("results: ")


def test_four_half_gpu_head_trials_share_two_gpus_at_once(gpu_head, tmp_path):
    # long enough trials (~10 s each on 2 shared cores) that the actors' start-up stagger
    # (1–3 s) cannot keep them from overlapping
    feats = write_feature_dir(tmp_path / "feats", d=64)
    uri = _sweep(gpu_head, [
        "alphanet_rho", f"features={feats}", f"storage_uri={tmp_path / 'store'}",
        "space.rho.choices=[0.25,0.5,1.0,1.5]", "repeats=8", "method.epochs=150",
        "runner.gpus_per_trial=0.5", "runner.cpus_per_trial=1", "search.max_concurrent_trials=4",
    ], tmp_path)
    df = read_rows(uri).rows
    trials = (df[df.role == "configuration"].groupby("trial_id")
              .agg(start=("started_at", "min"), end=("finished_at", "max"),
                   gpu=("gpu_ids", "first")))
    t0 = trials.start.min()
    print((trials[["start", "end"]] - t0).round(2).assign(gpu=trials.gpu).to_string())  # (-s)
    assert len(trials) == 4 and (df[df.role == "configuration"].status == "ok").all()
    # all four ran at once: the last to start started before the first to finish ended
    assert trials.start.max() < trials.end.min(), trials
    assert set(trials.gpu) <= {"0", "1"}  # one GPU id each (a 0.5 share)
    assert Counter(trials.gpu) == {"0": 2, "1": 2}  # two trials on each GPU
    if not torch.cuda.is_available():  # GPUs only claimed: the heads trained on the CPU
        assert (df[df.role == "configuration"].device == "cpu").all()


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_full_mode_workers_are_placed_by_gpu_and_train_on_the_cpu(gpu_head, tmp_path):
    # the small full-mode setup of tests/training/test_full.py, one configuration, one epoch
    uri = _sweep(gpu_head, [
        "ns_lambda", "mode=full", "space.lambda_s=0.1", "repeats=1",
        f"storage_uri={tmp_path / 'store'}", "dataset.n_max=60", "dataset.imbalance_factor=10",
        "dataset.val_per_class=5", "dataset.aux_per_class=20", "dataset.test_per_class=40",
        "splits.many_above=30", "splits.few_below=10", "backbone.epochs=1",
        "backbone.batch_size=64", "backbone.num_workers=2", "head.epochs=2",
        "method.neighbor_source=prototype", "method.aux_per_class_cap=8",
        "runner.gpus_per_worker=1",
    ], tmp_path)
    df = read_rows(uri).rows
    rows = df[df.role == "configuration"]
    assert len(rows) == 1 and (rows.status == "ok").all() and (rows["mode"] == "full").all()
    ids = json.loads(rows.iloc[0].params_json)["resolved"]["worker_gpu_ids"]
    print("worker_gpu_ids", ids)
    assert len(ids) == 2 and sorted(ids) == ["0", "1"]  # one whole GPU per worker, distinct


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_mode_trains_on_cuda_with_use_gpu(ray_cluster, tmp_path):
    """With a real GPU: ``backbone.use_gpu=true`` workers hold a GPU each and train on it."""
    from explore.backbone.models import ModelSpec
    from explore.backbone.ray_job import run_backbone_job
    from explore.backbone.train_config import BackboneTrainConfig
    from tests.training.test_full import images

    train = images([0] * 40 + [1] * 20 + [2] * 10)
    cfg = BackboneTrainConfig(arch="small_cnn", epochs=1, batch_size=32, num_workers=1,
                              use_gpu=True)
    state, metrics = run_backbone_job(ModelSpec("small_cnn", 3, 1), train, None, cfg, None,
                                      str(tmp_path / "train"), run_name="cuda",
                                      resources_per_worker={"CPU": 1, "GPU": 1})
    assert metrics["worker_gpu_ids"] and metrics["worker_gpu_ids"][0] != ""
    assert all(t.device.type == "cpu" for t in state.values())  # loaded back onto the CPU
