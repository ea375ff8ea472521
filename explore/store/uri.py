"""Storage URIs: a local directory or ``s3://bucket/prefix``, resolved to a pyarrow filesystem.

S3 endpoint, region and credentials come only from the standard AWS chain (environment,
``AWS_PROFILE`` / ``~/.aws``), never from the URI: a URI is logged, stored in result rows
and passed to Ray workers, so it must be safe to show. pyarrow's ``S3FileSystem()``
constructor does *not* follow ``AWS_ENDPOINT_URL(_S3)`` by itself (only
``FileSystem.from_uri`` does), so the endpoint is parsed here and passed explicitly;
credentials are left to the AWS SDK's default chain, so no secret is ever held by an
explore object, its repr, or its pickle.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

__all__ = [
    "StorageError",
    "StorageUnreachableError",
    "S3Settings",
    "resolve",
    "join",
    "check_reachable",
    "describe_failure",
    "redact",
    "s3_settings",
    "is_s3",
]

CONNECT_TIMEOUT_S = 3.0
"""Socket connect timeout for S3: long enough for a real endpoint, short enough to fail fast."""
REQUEST_TIMEOUT_S = 60.0
"""Socket read timeout for S3 requests (idle time, not total transfer time)."""
MAX_ATTEMPTS = 3
"""Attempts per S3 request (AWS standard retry strategy); a refused connection fails in ~2 s."""


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to check, never a secret."""


class StorageUnreachableError(StorageError):
    """The storage endpoint could not be reached (connection refused, timeout, DNS)."""


def _secrets() -> list[str]:
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
    return [v for n in names if len(v := os.environ.get(n, "")) >= 4]


def redact(text: str) -> str:
    """``text`` with any AWS credential value from the environment replaced by ``***``."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class S3Settings:
    """Where S3 requests go, as resolved from the AWS chain (no credentials in here)."""

    endpoint_url: str | None
    """Full endpoint URL (``http://127.0.0.1:9000``) or None for AWS's own endpoints."""
    region: str | None

    @property
    def endpoint_display(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region or 'default region'})"


def _profile_config() -> dict[str, Any]:
    """The active profile's section of ~/.aws/config (empty when botocore finds none)."""
    try:
        import botocore.session

        return dict(botocore.session.Session().get_scoped_config())
    except Exception:  # a broken ~/.aws must not hide the real error later
        return {}


def s3_settings() -> S3Settings:
    """Endpoint and region from the AWS chain: env first (service-specific before global),
    then the active profile (its ``s3`` sub-section before its top level)."""
    cfg: dict[str, Any] | None = None

    def profile() -> dict[str, Any]:
        nonlocal cfg
        if cfg is None:
            cfg = _profile_config()
        return cfg

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        s3_section = profile().get("s3")
        if isinstance(s3_section, dict):
            endpoint = s3_section.get("endpoint_url")
        endpoint = endpoint or profile().get("endpoint_url")
    region = (
        os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or profile().get("region")
    )
    return S3Settings(endpoint_url=endpoint or None, region=region or None)


def _s3_filesystem(
    settings: S3Settings, connect_timeout_s: float, max_attempts: int
) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = dict(
        connect_timeout=connect_timeout_s,
        # A server that stops answering mid-request must fail the request, not hang it.
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
    )
    if settings.region:
        kwargs["region"] = settings.region
    if settings.endpoint_url:
        parts = urlsplit(
            settings.endpoint_url
            if "://" in settings.endpoint_url
            else "https://" + settings.endpoint_url
        )
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StorageError(
                f"AWS endpoint {settings.endpoint_url!r} is not an http(s) URL; fix "
                "AWS_ENDPOINT_URL(_S3) or endpoint_url in your AWS profile"
            )
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["scheme"] = parts.scheme
    return pafs.S3FileSystem(**kwargs)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def resolve(
    uri: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, max_attempts: int = MAX_ATTEMPTS
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for ``uri``.

    ``uri`` is a local path (relative paths are made absolute now, so that a Ray worker
    with another working directory sees the same place), ``file:///abs/path``, or
    ``s3://bucket/prefix`` (path returned as ``bucket/prefix``, as pyarrow wants it).

    >>> fs, path = resolve("s3://feat/cache")   # doctest: +SKIP
    >>> path
    'feat/cache'
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(
            "storage URI must be a non-empty string (a local path or s3://bucket/prefix)"
        )
    if uri.startswith("s3://"):
        parts = urlsplit(uri)
        if "@" in parts.netloc:
            # Do not echo the URI: it may hold a secret.
            raise ValueError(
                "storage URI has credentials in it (s3://key:secret@bucket); remove them and use "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile instead"
            )
        if parts.query or parts.fragment:
            raise ValueError(
                f"storage URI {uri.split('?')[0]!r} has a query string; S3 options come only from "
                "the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE)"
            )
        bucket = parts.netloc
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"storage URI {uri!r}: {bucket!r} is not a valid S3 bucket name")
        prefix = "/".join(p for p in parts.path.split("/") if p)
        path = f"{bucket}/{prefix}" if prefix else bucket
        return _s3_filesystem(s3_settings(), connect_timeout_s, max_attempts), path
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"storage URI {uri!r}: file:// URIs must be local (file:///abs/path)")
        return pafs.LocalFileSystem(), os.path.abspath(parts.path)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", uri):
        raise ValueError(
            f"storage URI {uri!r} has an unsupported scheme; use a local path, file:// or s3://"
        )
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


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
        settings = s3_settings()
        return StorageUnreachableError(
            redact(
                f"cannot reach S3 endpoint {settings.endpoint_display} for {uri} while {what}: "
                "check that the server is up and AWS_ENDPOINT_URL(_S3)/AWS_REGION point at it"
            )
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(redact(f"{what} failed for {uri}: {first_line}"))


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
                    f"{s3_settings().endpoint_display}: create it or fix the URI"
                )
            )
        return
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise describe_failure(exc, shown, "checking the path") from None
    if info.type not in (pafs.FileType.Directory, pafs.FileType.NotFound):
        raise StorageError(f"storage path {shown} exists but is not a directory; pick another path")
