"""Who holds a build lock, and whether that process still runs.

A lock body names its owner's host and pid, and what makes that pid mean one process:
the kernel boot and the pid namespace. Only when all of these match the reader's own can
it tell a dead owner from a live one; otherwise it cannot, and the heartbeat decides.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Owner", "owner_is_gone"]


@functools.cache
def _pid_scope() -> str:
    """Where a pid names one process: this kernel boot and this pid namespace (Linux);
    empty parts elsewhere, leaving the host name alone to decide."""
    parts = []
    for path, read in (
        ("/proc/sys/kernel/random/boot_id", lambda p: Path(p).read_text()),
        ("/proc/self/ns/pid", os.readlink),
    ):
        try:
            parts.append(str(read(path)).strip())
        except OSError:
            parts.append("")
    return "/".join(parts)


@dataclass(frozen=True)
class Owner:
    """Who holds a lock; ``nonce`` tells two attempts of one process apart."""

    host: str
    pid: int
    scope: str
    nonce: str

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _pid_scope(), uuid.uuid4().hex[:8])

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}:{self.nonce}"

    def body(self, created: float) -> bytes:
        return json.dumps(
            {
                "owner": self.label,
                "host": self.host,
                "pid": self.pid,
                "pid_scope": self.scope,
                "created": created,
                "heartbeat": time.time(),
            }
        ).encode()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def owner_is_gone(info: dict[str, Any]) -> bool:
    """True when the lock body ``info`` names a process of this host and pid namespace
    that no longer runs. False whenever that cannot be told (another host, old body)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if info.get("host") != socket.gethostname() or info.get("pid_scope") != _pid_scope():
        return False
    return not _pid_alive(pid)
