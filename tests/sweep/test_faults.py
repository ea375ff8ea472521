"""Faults a hostile-but-realistic user meets, each reproduced on real components: a swapped
classifier, a stale Ray address file, an S3 server down at resume, a sweep whose every trial
fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explore.results.reader import read_rows
from explore.sweep.__main__ import main as sweep_main
from tests.support.moto import MotoServer
from tests.support.synthetic import write_feature_dir

pytestmark = pytest.mark.ray

ONE = ["search.sampler=grid", "space.k=3", "space.distance=euclidean", "repeats=2", "method.epochs=6"]


def _rows(out: str):
    return read_rows(out.strip().splitlines()[-1].split(" ", 1)[1]).rows


def _alphanet(df):
    a = df[df.method == "alphanet"].sort_values("seed")
    return a[["seed", "acc_overall", "acc_few", "val_acc_overall"]].to_numpy(dtype=float)


def test_a_replaced_classifier_is_a_new_entry_never_a_stale_hit(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats", classifier=True)
    store = tmp_path / "store"
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", *ONE]) == 0
    out = capsys.readouterr().out
    first = _rows(out)
    first_id = out.strip().splitlines()[-1].split("/sweeps/")[1].split("/")[0]
    # the same features, another classifier (its rows scaled): a different base model
    clf = np.load(feats / "classifier.npz")
    rng = np.random.default_rng(1)
    np.savez(feats / "classifier.npz", weight=clf["weight"] * rng.uniform(0.2, 2.0, (len(clf["bias"]), 1)),
             bias=clf["bias"][::-1].copy())
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", *ONE]) == 0
    second = _rows(capsys.readouterr().out)
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={tmp_path / 'fresh'}", *ONE]) == 0
    fresh = _rows(capsys.readouterr().out)
    np.testing.assert_allclose(_alphanet(second), _alphanet(fresh))  # as a fresh store gives
    assert not np.allclose(_alphanet(first)[:, 1], _alphanet(second)[:, 1])
    assert first.base_key.dropna().iloc[0] != second.base_key.dropna().iloc[0]
    assert second.feature_key.iloc[0] != first.feature_key.iloc[0]
    # resuming the first sweep now would mix two base models in one sweep: refused, one line
    assert sweep_main(["alphanet_k", f"storage_uri={store}", f"resume={first_id}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"was run with feature_key {first.feature_key.iloc[0]}" in err[0]
    assert f"would use {second.feature_key.iloc[0]}" in err[0]
    np.testing.assert_allclose(_alphanet(_rows(f"results: {store}/sweeps/{first_id}/results")),
                               _alphanet(first))  # the first sweep's rows are untouched


def test_a_stale_ray_address_file_does_not_hijack_the_sweep(tmp_path):
    """An earlier `ray start` leaves `ray_current_cluster` in Ray's temp dir; without
    RAY_ADDRESS the sweep starts its own local cluster anyway (a separate process: the
    session's cluster is not involved)."""
    import shutil
    import tempfile

    feats = write_feature_dir(tmp_path / "feats")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ert", dir="/tmp"))  # short: Ray's socket paths
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")  # nothing listens
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "explore.sweep", "alphanet_k", f"features={feats}",
             f"storage_uri={tmp_path / 'store'}", *ONE],
            env=env, capture_output=True, text=True, timeout=400, cwd=Path(__file__).parents[2])
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "starting a local cluster" in done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("results: ")


@pytest.mark.s3
def test_s3_down_at_resume_is_one_line(ray_cluster, tmp_path, capsys, monkeypatch, s3_endpoint):
    import boto3

    """The sweep runs in a process of its own (its own local Ray, whose workers use this
    test's S3 server); the server is then stopped by its PID and the resume fails at once."""
    import shutil
    import tempfile

    server = MotoServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    server.start()
    ray_tmp = Path(tempfile.mkdtemp(prefix="ert", dir="/tmp"))  # short: Ray's socket paths
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="resume-bucket")
        feats = write_feature_dir(tmp_path / "feats")
        store = "s3://resume-bucket/explore"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
        done = subprocess.run([sys.executable, "-m", "explore.sweep", "alphanet_k", f"features={feats}",
                               f"storage_uri={store}", *ONE], env=env, capture_output=True, text=True,
                              timeout=400, cwd=Path(__file__).parents[2])
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        sweep_id = done.stdout.strip().splitlines()[-1].split("/sweeps/")[1].split("/")[0]
    finally:
        server.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    rc = sweep_main(["alphanet_k", f"storage_uri={store}", f"resume={sweep_id}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot reach S3 endpoint" in err[0], err
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in err[0]


def test_a_sweep_whose_every_trial_fails_exits_non_zero_with_a_summary(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats", aux=True)
    missing = tmp_path / "no-such-map.json"
    rc = sweep_main(["ns_lambda", f"features={feats}", f"storage_uri={tmp_path / 'store'}",
                     "repeats=1", "head.epochs=2", "space.lambda_s=0.1", "runner.max_failures=0",
                     f"method.neighbor_map={missing}"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and "no trial of sweep" in err[-1] and "succeeded" in err[-1], err
    assert "status=error" in captured.out  # the summary came first
    store_rows = read_rows(str(tmp_path / "store")).rows
    errors = store_rows[store_rows.role == "configuration"]
    assert (errors.status == "error").all() and errors.error.str.contains("does not exist").all()
    assert json.loads(errors.knob_columns.iloc[0]) == ["lambda_s"]


@pytest.fixture()
def small_disk(tmp_path):
    """A 16 MB tmpfs the test mounts and unmounts (root on these machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    with open(path / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


def test_a_read_only_or_full_store_is_one_line_and_keeps_finished_rows(ray_cluster, tmp_path, capsys,
                                                                      small_disk):
    feats = write_feature_dir(tmp_path / "feats")
    store = small_disk / "store"
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", *ONE]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)[1]
    kept = {p: p.read_bytes() for p in Path(first).glob("*.parquet")}

    # read-only: the features are cached, but the new sweep's config cannot be written
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        rc = sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", *ONE])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "Read-only file system" in err[0], err
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)

    # full: every trial's write fails for good; no retries, one line, exit 2
    _fill(small_disk)
    rc = sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", *ONE,
                     "runner.max_failures=3"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left" in err[0], (err, captured.out[-2000:])
    assert {p: p.read_bytes() for p in Path(first).glob("*.parquet")} == kept  # finished rows intact
