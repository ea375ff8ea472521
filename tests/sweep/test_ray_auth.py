"""Connecting to a ``ray start --head`` cluster through ``RAY_ADDRESS`` with token auth:
the driver picks up the token as Ray's CLI does, and without one it ends in one line
within seconds. Drivers run in subprocesses with their own HOME (where Ray looks for
``~/.ray/auth_token``) and environment: ``ray.init`` state is per process, and this one
may hold the session's cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ray_nodes import BIN, start_node
from tests.support.synthetic import write_feature_dir

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parent.parent.parent
# init_ray as a sweep calls it, with explore's log lines on stdout; then a call that needs
# the cluster.
CONNECT = ("import logging, os, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
           "from explore.sweep.cluster import init_ray; init_ray(); import ray; "
           "print('cpus', ray.cluster_resources()['CPU']); "
           "print('child mode', os.environ.get('RAY_AUTH_MODE'))")
# init_ray alone, its ConfigError printed as the CLI does.
CONNECT_ERROR = ("from explore.config import ConfigError; from explore.sweep.cluster import init_ray\n"
                 "try:\n    init_ray()\nexcept ConfigError as exc:\n    print('error:', exc)")


def _home(path: Path, token: bool) -> Path:
    """A HOME for a Ray process, with a freshly generated ``~/.ray/auth_token`` or none."""
    path.mkdir()
    if token:
        env = _env(path)
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True,
                       capture_output=True, timeout=60)
        assert (path / ".ray" / "auth_token").is_file()
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    """This test process's environment without any auth settings (conftest sets
    RAY_AUTH_MODE=disabled for the session's cluster), with ``home`` and ``extra``."""
    auth = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    return {k: v for k, v in os.environ.items() if k not in auth} | {"HOME": str(home), **extra}


def _drive(code: str, home: Path, address: str, timeout: float = 120,
           **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=_env(home, RAY_ADDRESS=address, **extra),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def auth_head(tmp_path_factory):
    """A head that requires token auth; yields it and the token it takes."""
    from tests.conftest import _require_loopback

    _require_loopback()
    root = tmp_path_factory.mktemp("auth-head")
    home = _home(root / "home", token=True)
    node = start_node(root / "head.log", num_cpus=1,
                      env={"HOME": str(home), "RAY_AUTH_MODE": "token"})
    try:
        yield node, (home / ".ray" / "auth_token").read_text().strip()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def open_head(tmp_path_factory):
    """A head without auth (RAY_AUTH_MODE=disabled), as a cluster from before Ray 2.60 or
    one that opted out."""
    from tests.conftest import _require_loopback

    _require_loopback()
    root = tmp_path_factory.mktemp("open-head")
    node = start_node(root / "head.log", num_cpus=1,
                      env={"HOME": str(_home(root / "home", token=False)),
                           "RAY_AUTH_MODE": "disabled"})
    try:
        yield node
    finally:
        node.stop()


def test_the_token_in_home_is_picked_up_without_ray_auth_mode(auth_head, tmp_path):
    node, token = auth_head
    home = _home(tmp_path / "client", token=False)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(token)  # the cluster's token, copied over
    done = _drive(CONNECT, home, node.gcs_address)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "cpus 1.0" in done.stdout
    assert "found an auth token; connecting with RAY_AUTH_MODE=token" in done.stdout
    assert "child mode token" in done.stdout  # what Tune's workers and children inherit
    assert token not in out


def test_no_token_is_one_line_within_seconds(auth_head, tmp_path):
    node, _ = auth_head
    feats = write_feature_dir(tmp_path / "feats")
    home = _home(tmp_path / "client", token=False)
    phase_log = tmp_path / "phases.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "explore.sweep", "alphanet_k", f"features={feats}",
         f"storage_uri={tmp_path / 'store'}"],
        env=_env(home, RAY_ADDRESS=node.gcs_address, EXPLORE_PHASE_LOG=str(phase_log)),
        capture_output=True, text=True, timeout=120, cwd=REPO)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert len(err) == 1 and err[0].startswith(f"error: RAY_ADDRESS={node.gcs_address}: "), err
    assert "requires token authentication and no token was found" in err[0]
    assert "~/.ray/auth_token" in err[0] and "RAY_AUTH_MODE=token" in err[0]
    assert "InvalidAuthToken" not in done.stdout + done.stderr
    # From the parsed config to the end (imports left out: seconds on a busy machine);
    # Ray's own connect retries for ~21 s.
    at = {p["phase"]: p["at"] for p in map(json.loads, phase_log.read_text().splitlines())}
    assert "ray" not in at and at["summary"] - at["config"] < 5, at


@pytest.mark.parametrize(("setting", "says"), [
    ({"RAY_AUTH_TOKEN": "not-the-cluster-token"}, "the cluster refused the auth token given"),
    ({"RAY_AUTH_MODE": "disabled"}, "requires token authentication and RAY_AUTH_MODE=disabled: "
                                    "set RAY_AUTH_MODE=token"),
], ids=["wrong-token", "auth-disabled"])
def test_a_refused_client_is_told_what_to_set(auth_head, tmp_path, setting, says):
    node, _ = auth_head
    home = _home(tmp_path / "client", token=False)
    done = _drive(CONNECT_ERROR, home, node.gcs_address, **setting)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.startswith(f"error: RAY_ADDRESS={node.gcs_address}: "), done.stdout
    assert says in done.stdout
    assert "InvalidAuthToken" not in done.stdout + done.stderr


def test_a_token_at_hand_does_not_break_a_cluster_without_auth(open_head, tmp_path):
    home = _home(tmp_path / "client", token=True)
    done = _drive(CONNECT, home, open_head.gcs_address)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "found an auth token; connecting with RAY_AUTH_MODE=token" in done.stdout
    assert "cpus 1.0" in done.stdout

