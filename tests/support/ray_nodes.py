"""Separate Ray nodes for tests: ``ray start --block`` processes with their own ports and
temp dirs, so they run beside the session's cluster (tests/conftest.py) and can be killed
by the process group the test started. Callers must be inside the loopback namespace."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BIN = Path(sys.executable).parent
_AGENT_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port",
                "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayNode:
    proc: subprocess.Popen
    temp_dir: str
    log_path: Path
    log: IO[bytes]
    gcs_address: str
    """host:port of the cluster's GCS (what ``ray start --address`` and RAY_ADDRESS take)."""
    dashboard: str | None = None
    """http://host:port of the head's dashboard (``ray job submit --address``); None on a
    worker node."""

    def kill(self) -> None:
        """SIGKILL to every process of the node (raylet, its workers, agents): a lost node."""
        with contextlib.suppress(ProcessLookupError):  # `ray start` exited: e.g. it failed
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in _pids_naming(self.temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to `ray start --block` alone (it then stops its node's processes, ~5 s;
        SIGTERM to the whole group makes the processes race and can take a minute);
        whatever is still up after ``grace`` seconds is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        for pid in _pids_naming(self.temp_dir):  # and any process that left the group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _pids_naming(temp_dir: str) -> list[int]:
    """Processes whose command line names ``temp_dir``: the node's own Ray processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def start_node(log_path: Path, *, address: str | None = None, num_cpus: int = 1,
               num_gpus: int = 0, resources: dict[str, float] | None = None,
               env: dict[str, str] | None = None, timeout: float = 90.0) -> RayNode:
    """A head (``address`` None) or a worker node joining ``address``; returns once it
    serves (head: its dashboard answers; worker: the cluster lists it alive)."""
    temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: socket paths fit 107 bytes
    ports = {name: free_port() for name in _AGENT_PORTS}
    cmd = [str(BIN / "ray"), "start", "--block", f"--num-cpus={num_cpus}",
           f"--num-gpus={num_gpus}", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           "--object-store-memory=200000000", "--resources", json.dumps(resources or {}),
           *[f"--{name}={port}" for name, port in ports.items()]]
    dashboard = None
    if address is None:
        gcs, dash = free_port(), free_port()
        address = f"127.0.0.1:{gcs}"
        dashboard = f"http://127.0.0.1:{dash}"
        cmd += ["--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}"]
    else:
        cmd += [f"--address={address}"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    node = RayNode(proc, temp_dir, log_path, log, address, dashboard)
    deadline = time.monotonic() + timeout
    while not _serving(node, resources or {}):
        if proc.poll() is not None or time.monotonic() > deadline:
            node.kill()
            node.log.close()
            raise RuntimeError(f"ray start failed: {node.log_tail()}")
        time.sleep(0.5)
    return node


def _serving(node: RayNode, resources: dict[str, float]) -> bool:
    if node.dashboard is not None:
        host, port = node.dashboard.removeprefix("http://").split(":")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return True
        except OSError:
            return False
    names = set(resources)
    return any(n["Alive"] and names <= set(n["Resources"]) for n in cluster_nodes(node.gcs_address))


def cluster_nodes(gcs_address: str) -> list[dict[str, Any]]:
    """``ray.nodes()`` of the cluster at ``gcs_address``, from a separate driver process
    (this test process may already hold the session's cluster)."""
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(json.dumps(ray.nodes()))" % gcs_address)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return []
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def end_detached_workers(ray: Any, timeout: float = 60.0) -> None:
    """End every detached trial worker (explore/sweep/workers.py) of the connected cluster,
    waiting for busy ones to finish their trial: a test leaves no worker holding CPUs."""
    from explore.sweep.workers import NAMESPACE, release_idle_workers

    deadline = time.monotonic() + timeout
    while any(a.get("namespace") == NAMESPACE
              for a in ray.util.list_named_actors(all_namespaces=True)):
        if time.monotonic() > deadline:
            raise TimeoutError("detached trial workers did not end")
        release_idle_workers()
        time.sleep(0.5)
