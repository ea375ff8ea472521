"""A sweep stopped by SIGTERM (a pod evicted, ``kill``) or Ctrl-C stops as Tune stops:
finished trials' rows are kept, the summary says the sweep is incomplete, the exit status
is not 0, and ``resume=`` finishes it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from explore.results.reader import read_rows
from explore.sweep.__main__ import main as sweep_main
from tests.support.synthetic import write_feature_dir

pytestmark = pytest.mark.ray

GRID = ["search.sampler=grid", "space.k.low=2", "space.k.high=6", "space.distance=euclidean",
        "repeats=1", "method.epochs=300", "search.max_concurrent_trials=1"]


def test_sigterm_stops_the_sweep_resumably(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats", classifier=True)
    store = tmp_path / "store"
    ray_tmp = Path(tempfile.mkdtemp(prefix="ert", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "explore.sweep", "alphanet_k", f"features={feats}",
                             f"storage_uri={store}", *GRID], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 300
        while not list(store.glob("sweeps/*/results/trial-*.parquet")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no trial finished in 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 130, (out + err)[-3000:]
    assert "INCOMPLETE" in out and "interrupted" in err and "resume=" in err
    (sweep_dir,) = store.glob("sweeps/*")
    kept = read_rows([str(sweep_dir / "results")]).rows
    finished = kept[(kept.role == "configuration") & (kept.status == "ok")].trial_id.nunique()
    assert 1 <= finished < 5
    assert sweep_main(["alphanet_k", f"storage_uri={store}", f"resume={sweep_dir.name}"]) == 0
    rows = read_rows([str(sweep_dir / "results")]).rows
    done = rows[(rows.role == "configuration") & (rows.status == "ok")]
    assert sorted(done.k.tolist()) == [2, 3, 4, 5, 6]  # each configuration once
    capsys.readouterr()
