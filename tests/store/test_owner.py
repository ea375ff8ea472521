"""Lock owners: a dead process is recognised only when its pid means the same process
here (same host, kernel boot and pid namespace)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

from explore.store import FeatureSet, FeatureSplit, FeatureStore
from explore.store._owner import owner_is_gone


def _mine() -> FeatureSet:
    s = FeatureSplit(np.zeros((2, 3), np.float32), np.array([0, 1]))
    return FeatureSet({"train": s, "val": s, "test": s}, ("x", "y"))


def test_owner_is_gone_only_for_a_dead_process_of_this_host(tmp_path):
    store = FeatureStore(str(tmp_path), lock_heartbeat_s=0.2)
    seen = []

    def build() -> FeatureSet:
        seen.append(json.loads((tmp_path / "features" / "k" / ".lock").read_text()))
        return _mine()

    store.get_or_build("k", build)
    mine = seen[0]
    assert (mine["host"], mine["pid"]) == (socket.gethostname(), os.getpid())
    assert not owner_is_gone(mine)  # this very process: alive

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = {**mine, "pid": int(done.stdout)}
    assert owner_is_gone(dead)
    assert not owner_is_gone({**dead, "host": "another-host"})  # cannot tell: staleness decides
    assert not owner_is_gone({**dead, "pid_scope": "another-boot/pid:[1]"})
    assert not owner_is_gone({"owner": "old-format:1:abc", "heartbeat": 0})
    assert not owner_is_gone({**dead, "pid": 0}) and not owner_is_gone({**dead, "pid": True})
