"""Reaching Ray: connect to the cluster ``RAY_ADDRESS`` names (a Ray job sets it), or start
a local one of our own, keeping Ray's start-up chatter out of the terminal unless asked."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

from explore.config import ConfigError

__all__ = ["check_ray_address", "init_ray"]

log = logging.getLogger("explore")

CONNECT_TIMEOUT_S = 5.0
"""How long a ``RAY_ADDRESS`` host may take to accept a connection before the sweep ends
with one line (``ray.init`` itself would retry for minutes)."""


def init_ray(verbose: bool = False) -> None:
    """Connect to ``RAY_ADDRESS`` when it is set; otherwise start a local cluster, whatever
    address file an earlier ``ray start`` left behind. Workers' logs reach the terminal only
    with ``verbose`` (progress comes through explore's own channels)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    with _start_up_chatter_kept(verbose):
        if address:
            check_ray_address(address)
            log.info("ray: connecting to the running cluster at %s", address)
            ray.init(address=address, log_to_driver=verbose)
        else:
            log.info("ray: starting a local cluster")
            # trial_driver: the resource Train-in-Tune trial drivers hold instead of a CPU.
            context = ray.init(address="local", resources={"trial_driver": 2},
                               log_to_driver=verbose)
            if context.dashboard_url:
                log.info("ray: dashboard at http://%s", context.dashboard_url)


def check_ray_address(address: str) -> None:
    """A ``host:port`` address must accept a TCP connection within seconds: a dead
    cluster's address otherwise hangs ``ray.init`` for minutes."""
    if "://" in address or address == "auto" or ":" not in address:
        return  # ray:// clients and "auto" are resolved by Ray itself
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc}); start "
                          "it (ray start --head) or unset RAY_ADDRESS to run on a local "
                          "cluster") from None


@contextlib.contextmanager
def _start_up_chatter_kept(verbose: bool) -> Iterator[None]:
    """Ray's core writes start-up notes straight to file descriptor 2 (e.g. that it could
    not reach 8.8.8.8 to find its own address); without ``verbose`` they are kept back and
    shown only when the start fails."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                kept.seek(0)
                sys.stderr.write(kept.read().decode(errors="replace"))
                sys.stderr.flush()
