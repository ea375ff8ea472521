"""Build-once locks: at most one process builds a cache entry, the others wait for it.

The lock is one small object next to the entry, created exclusively (``O_CREAT|O_EXCL``
locally; ``PUT`` with ``If-None-Match: *`` on S3) and rewritten by a heartbeat while its
owner builds. Its body names the owner (``_owner``). A waiter breaks a lock

* at once when the owner ran on this host, in this pid namespace, and is gone (killed,
  crashed): nothing can ever release it;
* when its content has not changed for ``stale_after_s`` on the waiter's own clock, or
  its last heartbeat is that old: an owner elsewhere stopped (died or lost the network).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from explore.store._io import Storage
from explore.store._owner import Owner, owner_is_gone
from explore.store.errors import LockTimeoutError
from explore.store.uri import redact

__all__ = ["BuildLock", "HeldLock", "LocalLock", "LockHeldError", "LockPolicy", "S3Lock", "take_exclusive"]

log = logging.getLogger(__name__)

WAIT_LOG_EVERY_S = 30.0
"""A waiter says what it waits for when it starts waiting, then at most this often."""


@dataclass(frozen=True)
class LockPolicy:
    heartbeat_s: float
    """How often the owner rewrites its lock."""
    stale_after_s: float
    """A lock unchanged (or not heartbeaten) for this long is broken."""
    poll_s: float
    """How often a waiter looks at the lock (one small GET on S3)."""
    wait_timeout_s: float
    """How long a waiter waits in all before ``LockTimeoutError``."""


def _parse(body: bytes) -> dict[str, Any]:
    try:
        info = json.loads(body)
    except ValueError:  # being written right now, or garbage
        return {}
    return info if isinstance(info, dict) else {}


# --------------------------------------------------------------------------- lock objects


class Lock(Protocol):
    """An exclusive lock object; ``token`` identifies one version of its content."""

    def try_acquire(self, body: bytes) -> str | None: ...
    def peek(self) -> tuple[str, dict[str, Any]] | None: ...
    def refresh(self, token: str, body: bytes) -> str | None: ...
    def break_stale(self, token: str) -> bool: ...
    def release(self, token: str) -> None: ...


class LocalLock:
    """``O_CREAT|O_EXCL`` file; token = sha256 of its content."""

    def __init__(self, path: str) -> None:
        self.path = path

    def try_acquire(self, body: bytes) -> str | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return hashlib.sha256(body).hexdigest()

    def _read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def peek(self) -> tuple[str, dict[str, Any]] | None:
        body = self._read(self.path)
        return None if body is None else (hashlib.sha256(body).hexdigest(), _parse(body))

    def refresh(self, token: str, body: bytes) -> str | None:
        current = self.peek()
        if current is None or current[0] != token:
            return None
        tmp = f"{self.path}.hb-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, self.path)
        return hashlib.sha256(body).hexdigest()

    def break_stale(self, token: str) -> bool:
        # Rename first (atomic, only one breaker wins), then check we took the stale
        # version and not a lock someone created meanwhile; if not, put it back.
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        body = self._read(aside) or b""
        if hashlib.sha256(body).hexdigest() != token:
            try:
                os.link(aside, self.path)  # fails if yet another lock exists: then theirs wins
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def release(self, token: str) -> None:
        current = self.peek()
        if current is not None and current[0] == token:
            os.unlink(self.path)


class S3Lock:
    """Conditional PUT (``If-None-Match: *``); token = ETag; deletes are ``If-Match``."""

    _LOST = ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict")

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def try_acquire(self, body: bytes) -> str | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*"
            )
        except ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise
        return str(out["ETag"])

    def peek(self) -> tuple[str, dict[str, Any]] | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return str(out["ETag"]), _parse(out["Body"].read())

    def refresh(self, token: str, body: bytes) -> str | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=token)
        except ClientError as exc:
            if self._code(exc) in self._LOST:
                return None
            raise
        return str(out["ETag"])

    def _delete(self, token: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except ClientError as exc:
            if self._code(exc) in self._LOST:
                return False
            raise
        return True

    def break_stale(self, token: str) -> bool:
        return self._delete(token)

    def release(self, token: str) -> None:
        self._delete(token)


# --------------------------------------------------------------------------- build lock


class HeldLock:
    """A taken build lock, rewritten every ``heartbeat_s`` until ``release`` so that
    waiters tell a live builder from a dead one."""

    def __init__(self, build_lock: BuildLock, token: str, owner: Owner, created: float) -> None:
        self._build_lock, self.token, self.owner, self.created = build_lock, token, owner, created
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(build_lock.policy.heartbeat_s,),
            daemon=True,
            name="explore-store-lock-heartbeat",
        )
        self._thread.start()

    def _run(self, every_s: float) -> None:
        lock = self._build_lock.lock
        while not self._stop.wait(every_s):
            try:
                token = lock.refresh(self.token, self.owner.body(self.created))
            except Exception as exc:  # noqa: BLE001 - any storage error is transient here: next beat
                log.warning("feature-store lock heartbeat failed: %s", redact(str(exc)))
                continue
            if token is None:
                log.warning(
                    "feature-store lock %s was taken from this builder (judged stale)",
                    self.owner.label,
                )
                return
            self.token = token

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        b = self._build_lock
        with b.storage.errors("releasing the build lock", b.path):
            b.lock.release(self.token)


class BuildLock:
    """The build lock at ``path`` (a file next to the entry ``what`` names in messages)."""

    def __init__(self, storage: Storage, path: str, policy: LockPolicy, what: str) -> None:
        self.storage, self.path, self.policy, self.what = storage, path, policy, what
        self.lock: Lock
        if storage.is_s3:
            bucket, _, obj = path.partition("/")
            self.lock = S3Lock(storage.s3_client(), bucket, obj)
        else:
            storage.mkdir(posixpath.dirname(path))
            self.lock = LocalLock(path)

    def try_take(self) -> HeldLock | None:
        """The lock, now held by this process, or None when someone else holds it."""
        owner, created = Owner.current(), time.time()
        with self.storage.errors("taking the build lock", self.path):
            token = self.lock.try_acquire(owner.body(created))
        return None if token is None else HeldLock(self, token, owner, created)

    def _is_stale(self, info: dict[str, Any], unchanged_for_s: float) -> bool:
        # Unchanged content for the whole timeout on our own clock is immune to clock skew;
        # an old wall-clock heartbeat catches a lock left behind long ago at first sight.
        beat = info.get("heartbeat")
        old = isinstance(beat, (int, float)) and time.time() - beat > self.policy.stale_after_s
        return unchanged_for_s > self.policy.stale_after_s or old

    @staticmethod
    def _holder(info: dict[str, Any]) -> str:
        if "pid" in info and "host" in info:
            return f"pid {info['pid']} on {info['host']}"
        return str(info.get("owner", "an unknown owner"))

    def wait(self, deadline: float) -> None:
        """Return once the lock is gone: released, or broken here (see the module docstring).

        One small GET per poll: on a shared S3 endpoint waiters must not slow the builder.
        """
        seen: tuple[str, float] | None = None  # (lock token, monotonic time first seen)
        next_report = 0.0
        while True:
            with self.storage.errors("reading the build lock", self.path):
                state = self.lock.peek()
            if state is None:
                return
            token, info = state
            now = time.monotonic()
            if seen is None or seen[0] != token:
                seen = (token, now)
            if owner_is_gone(info):
                reason = f"its owner, {self._holder(info)}, is no longer running"
            elif self._is_stale(info, now - seen[1]):
                reason = f"its owner, {self._holder(info)}, stopped refreshing it"
            else:
                reason = ""
            if reason:
                with self.storage.errors("breaking a stale build lock", self.path):
                    broken = self.lock.break_stale(token)
                if broken:
                    log.warning("broke the build lock of %s: %s", self.what, reason)
                return
            if now > deadline:
                raise LockTimeoutError(
                    f"waited {self.policy.wait_timeout_s:.0f}s for {self._holder(info)} to "
                    f"build {self.what}; delete its {posixpath.basename(self.path)} if no "
                    "build is running"
                )
            if now >= next_report:
                created = info.get("created")
                age = (
                    f"{time.time() - created:.0f}s"
                    if isinstance(created, (int, float))
                    else "an unknown time"
                )
                log.info(
                    "waiting for %s: %s has been building it for %s", self.what,
                    self._holder(info), age,
                )
                next_report = now + WAIT_LOG_EVERY_S
            time.sleep(self.policy.poll_s)


class LockHeldError(RuntimeError):
    """Another live process holds an exclusive lock; the message names it."""


def take_exclusive(root_uri: str, relative_path: str, what: str,
                   policy: LockPolicy | None = None, *, force: bool = False) -> HeldLock:
    """Hold the lock ``relative_path`` under ``root_uri`` (local or S3) for ``what``, with a
    heartbeat, or raise :class:`LockHeldError` naming its live holder.

    The heartbeat makes the lock a lease: its owner renews it every ``heartbeat_s``, and a
    lock not renewed for ``stale_after_s`` (on the wall clock of its body, wherever the
    owner ran: another host, a container, a previous boot) is broken, as is one whose owner
    is a dead process of this host. ``force`` breaks a lock whatever its state (the user
    said its owner is gone)."""
    policy = policy or LockPolicy(heartbeat_s=10.0, stale_after_s=120.0, poll_s=0.5,
                                  wait_timeout_s=0.0)
    storage = Storage(root_uri, check=False)
    lock = BuildLock(storage, storage.path(relative_path), policy, what)
    for _ in range(2):  # a second try after breaking a dead owner's lock
        held = lock.try_take()
        if held is not None:
            return held
        with storage.errors("reading the lock", lock.path):
            state = lock.lock.peek()
        if state is None:
            continue
        token, info = state
        beat = info.get("heartbeat")
        age = time.time() - beat if isinstance(beat, (int, float)) else None
        if force:
            reason = "forced by the user"
        elif owner_is_gone(info):
            reason = "is no longer running"
        elif age is not None and age > policy.stale_after_s:
            reason = f"stopped renewing it {age:.0f}s ago"
        else:
            created = info.get("created")
            since = (f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(created))}"
                     if isinstance(created, (int, float)) else "")
            renewed = f", renewed {age:.0f}s ago" if age is not None else ""
            raise LockHeldError(f"{what} is held by {BuildLock._holder(info)}{since}{renewed}")
        with storage.errors("breaking a stale lock", lock.path):
            lock.lock.break_stale(token)
        log.warning("broke the lock of %s: its owner, %s, %s", what, BuildLock._holder(info),
                    reason)
    raise LockHeldError(f"{what} is held by another process")
