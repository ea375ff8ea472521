"""Storage URIs: a local path, ``file:///abs/path`` or ``s3://bucket/prefix``, resolved to a
pyarrow filesystem.

A URI is logged, stored in result rows and passed to Ray workers, so it must be safe to
show: S3 endpoint, region and credentials come only from the standard AWS chain, never
from the URI.

* Credentials and region are left to the AWS SDK inside ``pyarrow.fs.S3FileSystem``
  (environment, ``AWS_PROFILE`` / ``~/.aws``), so no secret is ever held by an explore
  object, its repr or its pickle.
* The endpoint is looked up here -- ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``,
  then ``endpoint_url`` of the active profile -- and handed to pyarrow as is
  (``endpoint_override`` takes a full URL, scheme included). pyarrow cannot do this
  lookup for us: the ``S3FileSystem`` constructor ignores these variables, and
  ``FileSystem.from_uri`` reads the environment ones but not the profile, takes no
  timeouts, and asks AWS for the bucket's region over the network when no endpoint is
  set. ``FileSystem.from_uri`` does parse ``file:`` URIs here.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from explore.store.errors import (
    StorageError,
    StoragePermanentError,
    StorageUnreachableError,
    StorageURIError,
)

__all__ = [
    "StorageError",
    "StorageURIError",
    "StorageUnreachableError",
    "check_reachable",
    "describe_failure",
    "endpoint_display",
    "is_s3",
    "join",
    "redact",
    "resolve",
    "s3_endpoint",
]

CONNECT_TIMEOUT_S = 3.0
"""Socket connect timeout for S3: long enough for a real endpoint, short enough to fail fast."""
REQUEST_TIMEOUT_S = 60.0
"""Socket read timeout for S3 requests (idle time, not total transfer time)."""
MAX_ATTEMPTS = 3
"""Attempts per S3 request (AWS standard retry strategy); a refused connection fails in ~2 s."""

SHAPES = "s3://bucket/prefix, file:///abs/path or a local path"
"""The URI shapes ``resolve`` accepts, for error messages."""
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def _secrets() -> list[str]:
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
    return [v for n in names if len(v := os.environ.get(n, "")) >= 4]


def redact(text: str) -> str:
    """``text`` with any AWS credential value from the environment replaced by ``***``."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def _profile_config() -> dict[str, Any]:
    """The active profile's section of ~/.aws/config (empty when botocore finds none)."""
    try:
        import botocore.session

        return dict(botocore.session.Session().get_scoped_config())
    except Exception:  # noqa: BLE001 - a broken ~/.aws must not hide the real error later
        return {}


def s3_endpoint() -> str | None:
    """The S3 endpoint URL from the AWS chain, or None for AWS's own endpoints.

    Environment first (service-specific before global), then the active profile (its
    ``s3`` sub-section before its top level). Raises ``StorageError`` for a URL that is
    not http(s): pyarrow would take its scheme for a host name.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        profile = _profile_config()
        s3_section = profile.get("s3")
        if isinstance(s3_section, dict):
            endpoint = s3_section.get("endpoint_url")
        endpoint = endpoint or profile.get("endpoint_url")
    if not endpoint:
        return None
    parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise StorageError(
            f"AWS endpoint {endpoint!r} is not an http(s) URL; fix AWS_ENDPOINT_URL(_S3) or "
            "endpoint_url in your AWS profile"
        )
    return str(endpoint)


def endpoint_display(fs: pafs.FileSystem | None = None) -> str:
    """Where S3 requests go, for messages: the endpoint URL, or AWS S3 and its region."""
    try:
        endpoint = s3_endpoint()
    except StorageError:
        endpoint = None
    if endpoint:
        return endpoint
    try:
        region = (fs if isinstance(fs, pafs.S3FileSystem) else pafs.S3FileSystem()).region
    except Exception:  # noqa: BLE001 - only for a message: never hide the error described
        region = ""
    return f"AWS S3 ({region or 'default region'})"


def _s3_filesystem(connect_timeout_s: float, max_attempts: int) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        # A server that stops answering mid-request must fail the request, not hang it.
        "request_timeout": REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
    }
    endpoint = s3_endpoint()
    if endpoint:
        kwargs["endpoint_override"] = endpoint
    return pafs.S3FileSystem(**kwargs)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _shown(uri: str) -> str:
    """``uri`` safe to print: user info (``//key:secret@``) masked, env secrets redacted."""
    return redact(re.sub(r"//[^/@]*@", "//***@", uri))


def _s3_path(uri: str) -> str:
    """``bucket/prefix`` of an ``s3:`` URI, or a one-line ``StorageURIError``."""
    if not uri.startswith("s3://"):
        raise StorageURIError(
            f"storage URI {_shown(uri)!r} is not of the form s3://bucket/prefix"
        )
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        # Do not echo the URI: it may hold a secret.
        raise StorageURIError(
            "storage URI has credentials in it (s3://key:secret@bucket); remove them and use "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile instead"
        )
    if parts.query or parts.fragment:
        raise StorageURIError(
            f"storage URI {uri.split('?')[0]!r} has a query string; S3 options come only from "
            "the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE)"
        )
    bucket = parts.netloc
    if not bucket:
        raise StorageURIError(f"storage URI {uri!r} names no bucket; expected s3://bucket/prefix")
    if not _BUCKET.fullmatch(bucket):
        raise StorageURIError(
            f"storage URI {uri!r}: {bucket!r} is not a valid S3 bucket name "
            "(expected s3://bucket/prefix)"
        )
    prefix = "/".join(p for p in parts.path.split("/") if p)
    return f"{bucket}/{prefix}" if prefix else bucket


def _file_path(uri: str) -> str:
    """The absolute local path of a ``file:`` URI (percent-decoded by pyarrow)."""
    try:
        # pyarrow refuses any host; "localhost" is the same machine by definition
        fs, path = pafs.FileSystem.from_uri(re.sub(r"^file://localhost/", "file:///", uri))
    except (pa.ArrowException, ValueError, OSError):
        fs, path = None, ""
    if not isinstance(fs, pafs.LocalFileSystem) or not path.startswith("/"):
        raise StorageURIError(
            f"storage URI {_shown(uri)!r}: file URIs must be local and absolute (file:///abs/path)"
        )
    return os.path.abspath(path)


def resolve(
    uri: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, max_attempts: int = MAX_ATTEMPTS
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for ``uri``.

    ``uri`` is a local path (relative paths are made absolute now, so that a Ray worker
    with another working directory sees the same place), ``file:///abs/path``, or
    ``s3://bucket/prefix`` (path returned as ``bucket/prefix``, as pyarrow wants it).
    Anything else that starts with a scheme (``s3:bucket``, ``gs://...``) is a
    ``StorageURIError``, never a local directory of that name.

    >>> fs, path = resolve("s3://feat/cache")   # doctest: +SKIP
    >>> path
    'feat/cache'
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StorageURIError(f"storage URI must be a non-empty string ({SHAPES})")
    scheme = _SCHEME.match(uri)
    if scheme is None:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    name = scheme.group(1)
    if name == "s3":
        return _s3_filesystem(connect_timeout_s, max_attempts), _s3_path(uri)
    if name == "file":
        return pafs.LocalFileSystem(), _file_path(uri)
    raise StorageURIError(
        f"storage URI {_shown(uri)!r} has an unsupported scheme {name + ':'!r}; use {SHAPES} "
        f"(write a local path with ':' in its first part as ./{_shown(uri)})"
    )


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with ``/``, keeping the scheme of ``base``."""
    out = base.rstrip("/") or base  # keep a bare "/" root
    for part in parts:
        part = part.strip("/")
        if part:
            out = out + part if out.endswith("/") else f"{out}/{part}"
    return out


def _is_network_error(exc: BaseException) -> bool:
    text = str(exc)
    return any(
        m in text
        for m in (
            "NETWORK_CONNECTION",
            "curlCode",
            "Could not connect",
            "Timeout was reached",
            "Could not resolve",
            "Connect timeout",
            "Connection refused",
        )
    )


def describe_failure(exc: BaseException, uri: str, what: str) -> StorageError:
    """A one-line ``StorageError`` for a failed ``what`` on ``uri``: unreachable endpoints get
    their own class and a hint; the original message is kept, redacted."""
    if isinstance(exc, StorageError):
        return exc
    if is_s3(uri) and _is_network_error(exc):
        return StorageUnreachableError(
            redact(
                f"cannot reach S3 endpoint {endpoint_display()} for {uri} while {what}: "
                "check that the server is up and AWS_ENDPOINT_URL(_S3)/AWS_REGION point at it"
            )
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    kind = StoragePermanentError if _is_permanent(exc) else StorageError
    return kind(redact(f"{what} failed for {uri}: {first_line}"))


_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_PERMANENT_TEXT = ("No space left", "Read-only file system", "Permission denied", "Disk quota")


def _is_permanent(exc: BaseException) -> bool:
    """Disk full, read-only or forbidden: the same call will fail again."""
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return True
    return any(m in str(exc) for m in _PERMANENT_TEXT)


def check_reachable(fs: pafs.FileSystem, path: str, uri: str | None = None) -> None:
    """Fail fast with a one-line error when ``path`` on ``fs`` cannot be used.

    S3: the endpoint must answer and the bucket must exist (``StorageUnreachableError`` /
    ``StorageError``). Local: the path must not be an existing non-directory.
    Takes one request (a HEAD on the bucket), so it is cheap enough for every store opening.
    """
    shown = uri or path
    if isinstance(fs, pafs.S3FileSystem):
        bucket = path.split("/", 1)[0]
        try:
            info = fs.get_file_info(bucket)
        except OSError as exc:
            raise describe_failure(exc, uri or f"s3://{path}", "checking the bucket") from None
        if info.type == pafs.FileType.NotFound:
            raise StorageError(
                redact(
                    f"S3 bucket {bucket!r} of {shown} does not exist at "
                    f"{endpoint_display(fs)}: create it or fix the URI"
                )
            )
        return
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise describe_failure(exc, shown, "checking the path") from None
    if info.type not in (pafs.FileType.Directory, pafs.FileType.NotFound):
        raise StorageError(f"storage path {shown} exists but is not a directory; pick another path")
