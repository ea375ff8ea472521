"""The live view: optuna-dashboard (the ``dashboard`` extra) on a finished sweep's Optuna
journal, on 127.0.0.1, shows every trial's per-split metrics (the study's user
attributes). The sweep's own terminal output is checked on the way: plain progress
lines, and none of Tune's banners or hints."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from explore.results.reader import read_rows
from explore.sweep.__main__ import main as sweep_main
from tests.support.synthetic import write_feature_dir

pytestmark = pytest.mark.ray

DASHBOARD = Path(sys.executable).parent / "optuna-dashboard"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1 only
        return bytes(response.read())


def test_dashboard_shows_a_finished_sweeps_per_split_metrics(ray_cluster, tmp_path, capsys):
    feats = write_feature_dir(tmp_path / "feats")
    store = tmp_path / "store"
    assert sweep_main(["alphanet_k", f"features={feats}", f"storage_uri={store}", "num_samples=3",
                       "repeats=2", "method.epochs=6"]) == 0
    out = capsys.readouterr().out

    # Progress as plain lines (not a terminal); Tune's, Ray's and Optuna's chatter stays out.
    # One line per finished trial, at most one a second in plain output (a new best and the
    # last trial always): a trial that ends within a second of another may go unprinted.
    lines = re.findall(r"^\[(\d)/3\] \w+=", out, re.M)
    assert lines[0] == "1" and lines[-1] == "3" and lines == sorted(set(lines)), lines
    assert re.search(r"^sweep: 3/3 trial \(100%\)  0 running · best val_acc_overall 0\.\d{4} "
                     r"\(distance=\w+, k=\d\)  \[", out, re.M), out
    assert re.search(r"^features: import: \d+ samples  \[", out, re.M), out
    for noise in ("Configuration for experiment", "View detailed results", "tensorboard",
                  "A new study created", "Started a local Ray instance"):
        assert noise not in out, noise

    uri = out.strip().splitlines()[-1].removeprefix("results: ")
    rows = read_rows(uri).rows
    configurations = rows[rows.role == "configuration"]
    journal = Path(uri).parent / "optuna.journal"
    assert journal.is_file()

    port = _free_port()
    with open(tmp_path / "dashboard.log", "wb") as log:
        proc = subprocess.Popen([str(DASHBOARD), str(journal), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "dashboard.log").read_text()) from None
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == [Path(uri).parent.name]
        study = json.loads(_get(f"{base}/api/studies/{studies[0]['study_id']}"))
        # (a configuration proposed twice is closed as a failed "explore_repeat" trial)
        complete = [t for t in study["trials"] if t["state"] == "Complete"]
        assert len(complete) == 3
        for trial in complete:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            seeds = configurations[configurations.trial_id == attrs["trial_id"]]
            assert len(seeds) == 2
            # the trial's validation and test means over its seeds, per split
            for metric in ("val_acc_few", "val_acc_many", "acc_few", "acc_overall"):
                assert float(attrs[metric]) == pytest.approx(seeds[metric].mean(), abs=1e-9)
            assert trial["values"][0] == pytest.approx(seeds["val_acc_overall"].mean(), abs=1e-9)
        assert b"<html" in _get(f"{base}/dashboard/").lower()  # the page itself is served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
