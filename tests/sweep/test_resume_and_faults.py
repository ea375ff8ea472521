"""Faults injected into real sweeps: a killed driver resumes to exactly the rows of an
uninterrupted sweep; a killed Ray Train worker is retried and every row arrives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from explore.results.reader import read_rows
from explore.sweep.__main__ import main as sweep_main
from tests.support.ray_nodes import end_detached_workers
from tests.support.synthetic import write_feature_dir

pytestmark = pytest.mark.ray

GRID = ["search.sampler=grid", "space.k.high=4", "repeats=2", "search.max_concurrent_trials=1"]


def _key_rows(df):
    m = df[df.method == "alphanet"]
    return sorted(zip(m.k, m.distance, m.seed, m.acc_overall.round(9), m.acc_few.round(9)))


def test_killed_driver_resumes_to_the_rows_of_an_uninterrupted_sweep(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    common = ["alphanet_k", f"features={feats}", f"storage_uri={store}", *GRID, "method.epochs=600"]

    # Reference: the same sweep, uninterrupted.
    assert sweep_main(common) == 0
    reference = read_rows(capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)[1]).rows

    # The same sweep in a separate driver process on this cluster, SIGKILLed after two trials.
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, "-m", "explore.sweep", *common], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sweeps = store / "sweeps"
    deadline = time.monotonic() + 180
    victim = None
    while time.monotonic() < deadline and proc.poll() is None:
        new = [d for d in sweeps.iterdir() if d.name != reference.sweep_id.iloc[0]] if sweeps.exists() else []
        if new and len(list((new[0] / "results").glob("trial-*.parquet"))) >= 2:
            victim = new[0]
            break
        time.sleep(0.2)
    assert victim is not None, "the driver never finished two trials"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Its detached trial worker outlives it (by design); it finishes the trial it runs and
    # is ended here, so that it holds no CPU of this cluster after the test.
    end_detached_workers(ray_cluster, timeout=120)
    before = {p.name: p.read_bytes() for p in (victim / "results").glob("*.parquet")}
    assert len([n for n in before if n.startswith("trial-")]) < 6, "the driver finished before the kill"

    assert sweep_main([common[0], f"storage_uri={store}", f"resume={victim.name}"]) == 0
    resumed = read_rows(str(victim / "results")).rows
    # finished rows were kept byte for byte, nothing finished ran again
    after = {p.name: p.read_bytes() for p in (victim / "results").glob("*.parquet")}
    assert all(after[name] == data for name, data in before.items())
    assert _key_rows(resumed) == _key_rows(reference)  # exactly the rows, no duplicates, none missing
    methods = resumed[resumed.method == "alphanet"]
    assert methods.trial_id.nunique() == 6 and len(methods) == 12
    assert (resumed.status == "ok").all()


def test_killed_train_worker_is_retried_and_the_sweep_finishes(ray_cluster, tmp_path, capsys):
    from ray.util.state import list_actors

    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    argv = ["alphanet_k", f"features={feats}", f"storage_uri={store}", "search.sampler=grid",
            "space.k.high=2", "space.distance=euclidean", "repeats=2", "method.epochs=1500",
            "runner.head_placement=ray_train", "runner.max_failures=2"]

    import threading

    killed: list[int] = []
    # This cluster's address: without it the state API refuses when another Ray runs here.
    address = ray_cluster.get_runtime_context().gcs_address

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            alive = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker"),
                                                          ("state", "=", "ALIVE")])
            if alive and alive[0].pid:
                time.sleep(1.5)  # mid-trial
                os.kill(alive[0].pid, signal.SIGKILL)
                killed.append(alive[0].pid)
                return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    rc = sweep_main(argv)
    killer.join()
    out = capsys.readouterr().out
    assert killed, "no Ray Train worker was seen"
    assert rc == 0, out[-3000:]
    df = read_rows(out.strip().splitlines()[-1].split(" ", 1)[1]).rows
    methods = df[df.method == "alphanet"]
    assert len(methods) == 2 and sorted(methods.seed) == [0, 1]
    assert (df.status == "ok").all()


def test_a_failing_configuration_is_recorded_the_others_kept_then_resumed(ray_cluster, tmp_path, capsys):
    """Neighbor silencing swept over two neighbour maps, one of which does not exist yet:
    that trial fails deterministically (after its retries) and leaves status=error rows;
    the other trial's rows are intact. Once the file exists, a resume runs only the failed
    configuration, and its error rows give way to its results."""
    import json

    feats = write_feature_dir(tmp_path / "feats", aux=True)
    good, late = tmp_path / "good.json", tmp_path / "late.json"
    good.write_text(json.dumps({"class_8": ["tiger"], "class_7": ["fox"]}))
    store = tmp_path / "store"
    argv = ["ns_lambda", f"features={feats}", f"storage_uri={store}", "repeats=2",
            "head.epochs=3", "space.lambda_s=0.1", "runner.max_failures=1",
            f"+space.neighbor_map={{type: categorical, choices: [{good}, {late}]}}"]
    assert sweep_main(argv) == 0
    out = capsys.readouterr().out
    uri = out.strip().splitlines()[-1].split(" ", 1)[1]
    df = read_rows(uri).rows
    configs = df[df.role == "configuration"]
    errors, ok = configs[configs.status == "error"], configs[configs.status == "ok"]
    assert len(errors) == 2 and errors.error.str.contains("late.json does not exist").all()
    assert len(ok) == 2 and sorted(ok.seed) == [0, 1]
    sweep_dir = store / "sweeps" / df.sweep_id.iloc[0]
    ok_file = next((sweep_dir / "results").glob("trial-*.parquet"))
    kept = ok_file.read_bytes()

    late.write_text(json.dumps({"class_8": ["pony"]}))
    assert sweep_main(["ns_lambda", f"storage_uri={store}", f"resume={sweep_dir.name}"]) == 0
    capsys.readouterr()
    after = read_rows(uri).rows
    configs = after[after.role == "configuration"]
    assert (configs.status == "ok").all() and len(configs) == 4  # error rows replaced
    assert ok_file.read_bytes() == kept  # the finished trial was not rerun
    assert len(list((sweep_dir / "results").glob("trial-*.parquet"))) == 2


def test_resume_guards(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    base = ["alphanet_k", f"features={feats}", f"storage_uri={store}", "repeats=1",
            "method.epochs=5", "num_samples=2", "search.sampler=random"]
    assert sweep_main(base) == 0
    sweep_id = capsys.readouterr().out.strip().splitlines()[-1].split("/sweeps/")[1].split("/")[0]

    def one_line(argv):
        rc = sweep_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        return err[0]

    assert "is a alphanet_k sweep, not alphanet_rho" in one_line(
        ["alphanet_rho", f"storage_uri={store}", f"resume={sweep_id}"])
    assert "repeats=3 differs from the sweep's repeats=1" in one_line(
        ["alphanet_k", f"storage_uri={store}", f"resume={sweep_id}", "repeats=3"])
    from explore.results.layout import SweepLayout
    from explore.sweep.study import SweepLock

    held = SweepLock(SweepLayout(str(store), sweep_id))
    held.acquire()
    try:
        assert f"sweep {sweep_id} is held by pid {os.getpid()}" in one_line(
            ["alphanet_k", f"storage_uri={store}", f"resume={sweep_id}"])
    finally:
        held.release()
    # raising num_samples extends the sweep: two more configurations run
    assert sweep_main(["alphanet_k", f"storage_uri={store}", f"resume={sweep_id}", "num_samples=4"]) == 0
    out = capsys.readouterr().out
    df = read_rows(out.strip().splitlines()[-1].split(" ", 1)[1]).rows
    assert df[df.role == "configuration"].trial_id.nunique() == 4
