"""Warm trial workers (explore/sweep/workers.py) on the session's real Ray cluster: which
sweeps they run, that a second sweep on a running cluster reuses them and gets the same
rows, that a lost worker's trial is retried, and that idle workers end."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from explore.config import ConfigError, load
from explore.results.reader import read_rows
from explore.sweep import scheduling
from explore.sweep.__main__ import main as sweep_main
from explore.sweep.workers import NAMESPACE, TrialWorker, code_fingerprint, release_idle_workers
from tests.support.ray_nodes import end_detached_workers
from tests.support.synthetic import write_feature_dir


@pytest.mark.parametrize(("overrides", "on_workers"), [
    ([], True),
    (["runner.trial_runner=tune"], False),
    (["search.scheduler=asha"], False),
    (["runner.head_placement=ray_train"], False),
])
def test_which_sweeps_run_on_workers(overrides, on_workers):
    assert scheduling.runs_on_workers(load(["alphanet_k", *overrides])) is on_workers


def test_workers_cannot_run_what_needs_tune():
    cfg = load(["alphanet_k", "runner.trial_runner=workers", "search.scheduler=asha"])
    with pytest.raises(ConfigError, match="search.scheduler=asha.*runner.trial_runner=tune"):
        scheduling.runs_on_workers(cfg)


def test_fingerprint_covers_the_code(tmp_path, monkeypatch):
    import explore

    before = code_fingerprint()
    code_fingerprint.cache_clear()
    copy = tmp_path / "explore"
    import shutil

    shutil.copytree(os.path.dirname(explore.__file__), copy)
    (copy / "recipes" / "alphanet.py").write_text((copy / "recipes" / "alphanet.py").read_text()
                                                  + "\n# changed\n")
    monkeypatch.setattr(explore, "__file__", str(copy / "__init__.py"))
    try:
        assert code_fingerprint() != before
    finally:
        code_fingerprint.cache_clear()


def _rows(out: str):
    uri = out.strip().splitlines()[-1].split(" ", 1)[1]
    rows = read_rows([uri]).rows
    return rows[rows.role == "configuration"]


def _worker_ids(ray) -> dict[str, str]:
    return {entry["name"]: ray.get_actor(entry["name"], namespace=NAMESPACE)._actor_id.hex()
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry.get("namespace") == NAMESPACE}


@pytest.mark.ray
def test_a_second_sweep_on_a_running_cluster_reuses_the_warm_worker(ray_cluster, tmp_path, capsys,
                                                                     monkeypatch):
    """RAY_ADDRESS names a running cluster: the worker is detached and named, the next
    sweep finds the same actor, and its rows (same seeds) equal the first sweep's."""
    ray = ray_cluster
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    feats = write_feature_dir(tmp_path / "feats")
    argv = ["alphanet_k", f"features={feats}", f"storage_uri={tmp_path / 'store'}",
            "space.k=3", "space.distance=euclidean", "repeats=2", "runner.worker_idle_s=120"]
    try:
        assert sweep_main(argv) == 0
        first = _rows(capsys.readouterr().out)
        workers = _worker_ids(ray)
        assert len(workers) == 1 and code_fingerprint() in next(iter(workers))
        assert sweep_main(argv) == 0
        second = _rows(capsys.readouterr().out)
        assert _worker_ids(ray) == workers  # the same actor served the second sweep
        assert first.sweep_id.iloc[0] != second.sweep_id.iloc[0]
        key = ["seed", "acc_overall", "acc_few", "val_acc_overall"]
        assert (first.sort_values("seed")[key].to_numpy()
                == second.sort_values("seed")[key].to_numpy()).all()
    finally:
        end_detached_workers(ray)


@pytest.mark.ray
def test_an_idle_worker_ends_itself_and_a_stale_one_is_released(ray_cluster):
    ray = ray_cluster
    worker = ray.remote(TrialWorker).options(
        name="trial-worker-stale", namespace=NAMESPACE, lifetime="detached", num_cpus=0,
        max_concurrency=2).remote(3.0)
    ray.get(worker.ready.remote())
    _wait_until(lambda: "trial-worker-stale" not in _worker_ids(ray), 60)  # idle 3 s: gone

    stale = ray.remote(TrialWorker).options(
        name="trial-worker-stale", namespace=NAMESPACE, lifetime="detached", num_cpus=0,
        max_concurrency=2).remote(0.0)
    ray.get(stale.ready.remote())
    release_idle_workers(keep_prefix=f"trial-worker-{code_fingerprint()}")
    _wait_until(lambda: "trial-worker-stale" not in _worker_ids(ray), 30)


@pytest.mark.ray
def test_a_lost_worker_s_trial_is_retried_and_every_row_arrives(ray_cluster, tmp_path, capsys,
                                                                caplog):
    from ray.util.state import list_actors

    feats = write_feature_dir(tmp_path / "feats")
    argv = ["alphanet_k", f"features={feats}", f"storage_uri={tmp_path / 'store'}",
            "search.sampler=grid", "space.k.high=3", "space.distance=euclidean", "repeats=2",
            "method.epochs=1500", "search.max_concurrent_trials=1", "runner.max_failures=2"]
    address = ray_cluster.get_runtime_context().gcs_address
    killed: list[int] = []

    def kill_the_worker_mid_trial() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alive = list_actors(address=address, filters=[("class_name", "=", "TrialWorker"),
                                                          ("state", "=", "ALIVE")])
            if alive and alive[0].pid:
                time.sleep(3.0)  # imports done, a trial running
                os.kill(alive[0].pid, signal.SIGKILL)
                killed.append(alive[0].pid)
                return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_the_worker_mid_trial)
    killer.start()
    rc = sweep_main(argv)
    killer.join()
    out = capsys.readouterr()
    assert killed, "no trial worker was seen"
    assert rc == 0, out.err[-3000:]
    rows = _rows(out.out)
    assert sorted(zip(rows.k, rows.seed)) == [(2, 0), (2, 1), (3, 0), (3, 1)]  # once each
    assert (rows.status == "ok").all()
    assert "failed (ActorDiedError); retrying (1 of 2)" in caplog.text


def _wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)
