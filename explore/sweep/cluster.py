"""Reaching Ray: connect to the cluster ``RAY_ADDRESS`` names (a Ray job sets it), with its
auth token when one is at hand, or start a local one of our own, keeping Ray's start-up
chatter out of the terminal unless asked."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import NoReturn

from explore.config import ConfigError

__all__ = ["check_ray_address", "check_ray_auth", "exit_process", "init_ray"]

log = logging.getLogger("explore")

CONNECT_TIMEOUT_S = 5.0
"""How long a ``RAY_ADDRESS`` host may take to accept a connection before the sweep ends
with one line (``ray.init`` itself would retry for minutes)."""


def init_ray(verbose: bool = False, dashboard: bool = True) -> None:
    """Connect to ``RAY_ADDRESS`` when it is set; otherwise start a local cluster, whatever
    address file an earlier ``ray start`` left behind, with Ray's dashboard unless
    ``dashboard=False`` (a sweep on warm workers needs none: it is 9 processes and ~2 s of
    a 2-core machine's start-up; Train's placement-group cleaner and the state API need
    it). Workers' logs reach the terminal only with ``verbose`` (progress comes through
    explore's own channels)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    with _start_up_chatter_kept(verbose):
        if address:
            check_ray_address(address)
            check_ray_auth(address)
            log.info("ray: connecting to the running cluster at %s", address)
            ray.init(address=address, log_to_driver=verbose)
        else:
            log.info("ray: starting a local cluster")
            # trial_driver: the resource Train-in-Tune trial drivers hold instead of a CPU.
            context = ray.init(address="local", resources={"trial_driver": 2},
                               include_dashboard=dashboard,
                               log_to_driver=verbose)
            if context.dashboard_url:
                log.info("ray: dashboard at http://%s", context.dashboard_url)


def exit_process(code: int) -> NoReturn:
    """End a command now: output flushed, logging shut down, Ray shut down (our own
    cluster stops; a running one is left), then ``os._exit`` — the interpreter's own
    teardown of torch's and Ray's extension modules costs about a second of every sweep,
    and nothing of explore's is left to it (results, journals, locks are written and
    closed by then)."""
    import logging as logging_module

    sys.stdout.flush()
    sys.stderr.flush()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    logging_module.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_ray_address(address: str) -> None:
    """A ``host:port`` address must accept a TCP connection within seconds: a dead
    cluster's address otherwise hangs ``ray.init`` for minutes."""
    if not _is_host_port(address):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc}); start "
                          "it (ray start --head) or unset RAY_ADDRESS to run on a local "
                          "cluster") from None


def check_ray_auth(address: str) -> None:
    """Use the auth token the way Ray's CLI does, then check the cluster at ``address``
    (``host:port``) takes this process's credentials. With ``RAY_AUTH_MODE`` unset and a
    token available, token mode is switched on for this process and its children
    (``ray.init`` does so only for ``address="auto"``). A cluster that refuses us ends the
    sweep with one line in milliseconds; ``ray.init`` would retry for ~20 s and then raise a
    chained traceback."""
    if not _is_host_port(address):
        return
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray._raylet import (  # type: ignore[attr-defined] # compiled, not in _raylet.pyi
        AuthenticationTokenLoader,
        GcsClient,
    )
    from ray.exceptions import AuthenticationError

    if "RAY_AUTH_MODE" not in os.environ:
        if maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
            log.info("ray: found an auth token; connecting with RAY_AUTH_MODE=token")
    try:
        # Asks the GCS for the cluster id: a few ms on a live cluster (a failure too).
        GcsClient(address=address)
    except AuthenticationError:
        has_token = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
        raise ConfigError(_auth_advice(address, os.environ.get("RAY_AUTH_MODE"),
                                       has_token)) from None
    except Exception:  # not about auth: ray.init retries and says why (a port that is no
        # GCS costs this probe ~40 s first: Ray's connect timeout)
        log.debug("ray: probing %s failed", address, exc_info=True)


def _auth_advice(address: str, mode: str | None, has_token: bool) -> str:
    where = "~/.ray/auth_token (or set RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN)"
    if mode is not None and mode.lower() != "token":
        return (f"RAY_ADDRESS={address}: the cluster requires token authentication and "
                f"RAY_AUTH_MODE={mode}: set RAY_AUTH_MODE=token, with the cluster's token in "
                f"{where}")
    if has_token:
        return (f"RAY_ADDRESS={address}: the cluster refused the auth token given: copy the "
                f"cluster's token to {where} and set RAY_AUTH_MODE=token")
    return (f"RAY_ADDRESS={address}: the cluster requires token authentication and no token "
            f"was found: copy the cluster's token to {where} and set RAY_AUTH_MODE=token")


def _is_host_port(address: str) -> bool:
    """ray:// clients and "auto" are resolved by Ray itself."""
    return "://" not in address and address != "auto" and ":" in address


@contextlib.contextmanager
def _start_up_chatter_kept(verbose: bool) -> Iterator[None]:
    """Ray's core writes start-up notes straight to file descriptor 2 (e.g. that it could
    not reach 8.8.8.8 to find its own address); without ``verbose`` they are kept back and
    shown only when the start fails, unless with a ``ConfigError``, whose one line says
    it all."""
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
        except ConfigError:
            failed = False
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                kept.seek(0)
                sys.stderr.write(kept.read().decode(errors="replace"))
                sys.stderr.flush()
