"""Raw reads and writes under a store root on ``pyarrow.fs`` (local disk or S3), every
failure turned into a one-line, redacted ``StorageError`` that names the object's URI."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from explore.store.uri import check_reachable, describe_failure, join, resolve, s3_endpoint

__all__ = ["Storage", "sha256_hex"]

try:  # boto3 errors from the S3 lock are storage errors too
    from botocore.exceptions import BotoCoreError, ClientError

    _BACKEND_ERRORS: tuple[type[BaseException], ...] = (
        OSError,
        pa.ArrowException,
        BotoCoreError,
        ClientError,
    )
except ImportError:  # pragma: no cover - boto3 is a dependency, but local stores do not need it
    _BACKEND_ERRORS = (OSError, pa.ArrowException)


def sha256_hex(data: Any) -> str:
    """sha256 of a bytes-like object (``bytes``, ``pa.Buffer``) without copying it."""
    return hashlib.sha256(memoryview(data)).hexdigest()


class Storage:
    """The store root ``uri``: its filesystem, its path in there, and raw object I/O.

    Paths passed in are filesystem paths under ``root``; messages show them as URIs.
    """

    def __init__(self, uri: str, *, check: bool) -> None:
        self.uri = uri
        self.fs, self.root = resolve(uri)
        self._s3_client: Any = None
        if check:
            check_reachable(self.fs, self.root, uri)

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def path(self, *parts: str) -> str:
        """Filesystem path of ``parts`` under the root."""
        return "/".join((self.root, *parts))

    def uri_of(self, path: str) -> str:
        return join(self.uri, path[len(self.root) :]) if path.startswith(self.root) else path

    @contextmanager
    def errors(self, what: str, path: str) -> Iterator[None]:
        """Turn a backend failure while doing ``what`` on ``path`` into a ``StorageError``;
        ``FileNotFoundError`` passes through for the caller to handle."""
        try:
            yield
        except _BACKEND_ERRORS as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise describe_failure(exc, self.uri_of(path), what) from None

    def mkdir(self, path: str) -> None:
        if not self.is_s3:  # S3 has no directories; creating markers would only add objects
            with self.errors("creating a directory", path):
                self.fs.create_dir(path, recursive=True)

    def exists(self, path: str) -> bool:
        with self.errors("checking an object", path):
            return self.fs.get_file_info(path).type == pafs.FileType.File

    def read_bytes(self, path: str) -> pa.Buffer:
        """The whole object: memory-mapped locally (no copy; the checksum is then the only
        pass over the bytes, and arrays are views of the page cache), one sized read on S3
        (unsized stream reads are ~100x slower there). Objects are never rewritten in
        place (an entry is deleted before it is written again), so a mapping never sees its
        file change."""
        with self.errors("reading", path):
            if isinstance(self.fs, pafs.LocalFileSystem):
                return pa.memory_map(path, "r").read_buffer()
            with self.fs.open_input_file(path) as f:
                return f.read_buffer(f.size())

    def write_bytes(self, path: str, data: Any, *, atomic: bool) -> None:
        """Write ``data``; with ``atomic`` a reader sees the old object or the whole new one.

        Local: temp file + rename. S3: a single object upload is already all-or-nothing.
        """
        with self.errors("writing", path):
            if atomic and not self.is_s3:
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                with self.fs.open_output_stream(tmp) as f:
                    f.write(data)
                self.fs.move(tmp, path)
            else:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)

    def delete(self, path: str) -> None:
        """Delete one object; a missing one is fine."""
        with self.errors("deleting", path):
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass

    def list_files(self, path: str) -> list[pafs.FileInfo]:
        """Every object under ``path``, recursively (none when it does not exist)."""
        with self.errors("listing", path):
            return [
                i
                for i in self.fs.get_file_info(
                    pafs.FileSelector(path, allow_not_found=True, recursive=True)
                )
                if i.type == pafs.FileType.File
            ]

    def list_dirs(self, path: str) -> list[str]:
        """Paths of the directories right under ``path`` (none when it does not exist)."""
        with self.errors("listing", path):
            return [
                i.path
                for i in self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                if i.type == pafs.FileType.Directory
            ]

    def s3_client(self) -> Any:
        """boto3 S3 client for what pyarrow.fs cannot do (conditional PUT/DELETE for the
        build lock), pointed where this store's filesystem points: same endpoint, and the
        region the AWS SDK resolved for it."""
        if self._s3_client is None:
            import boto3
            from botocore.config import Config

            region = self.fs.region if isinstance(self.fs, pafs.S3FileSystem) else None
            endpoint = s3_endpoint()
            if endpoint and "://" not in endpoint:  # pyarrow's default scheme; boto3 needs one
                endpoint = "https://" + endpoint
            self._s3_client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=region or None,
                config=Config(
                    connect_timeout=3,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        return self._s3_client
