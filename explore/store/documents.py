"""Small documents at a URI (a sweep's config, a finished seed's record): whole reads and
single-step writes of bytes or JSON, on local disk or S3, with one-line errors.

Everything outside ``explore/store`` that reads or writes a JSON file at a URI goes
through here, so storage failures are described one way (:func:`describe_failure`) and a
corrupt document is named by its URI.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow.fs as pafs

from explore.store.errors import StorageError
from explore.store.uri import describe_failure, resolve

__all__ = ["DocumentExistsError", "read_bytes", "read_json", "write_bytes", "write_json"]


class DocumentExistsError(StorageError):
    """An exclusive write found the document already there."""


def read_bytes(uri: str, what: str) -> bytes:
    """The whole document; ``FileNotFoundError`` when it is not there."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_file(path) as f:
            return bytes(f.read_buffer(f.size()).to_pybytes())
    except FileNotFoundError:
        raise
    except OSError as exc:
        if "does not exist" in str(exc) or "NoSuchKey" in str(exc):
            raise FileNotFoundError(uri) from None
        raise describe_failure(exc, uri, what) from None


def read_json(uri: str, what: str) -> Any:
    """The parsed document; ``FileNotFoundError`` when it is not there, a ``StorageError``
    naming ``uri`` when it is not JSON."""
    data = read_bytes(uri, what)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{uri} is corrupt ({what}): not JSON ({exc}); restore or remove "
                           "it") from None


def write_bytes(uri: str, data: bytes, what: str, *, exclusive: bool = False) -> None:
    """Write ``data`` in one step: readers see the old document or the whole new one
    (a temp file renamed locally, one PUT on S3). ``exclusive``: fail with
    :class:`DocumentExistsError` when the document exists (locally an ``O_EXCL``
    create, so two writers cannot both win; on S3 a check before the PUT)."""
    fs, path = resolve(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            if exclusive:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    raise DocumentExistsError(f"{uri} exists already ({what})") from None
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return
        if exclusive and fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise DocumentExistsError(f"{uri} exists already ({what})")
        with fs.open_output_stream(path) as out:
            out.write(data)
    except StorageError:
        raise
    except OSError as exc:
        raise describe_failure(exc, uri, what) from None


def write_json(uri: str, doc: Any, what: str, *, exclusive: bool = False) -> None:
    """``doc`` as indented, key-sorted JSON (values JSON lacks are written as strings)."""
    write_bytes(uri, json.dumps(doc, indent=2, sort_keys=True, default=str).encode(), what,
                exclusive=exclusive)
