"""Uploading training files: `files.create` up to 512 MB, the Uploads API beyond, never twice.

A file is uploaded under a name that carries its content hash, so a later run finds the copy
already on the endpoint (same name, same size) and reuses it instead of sending it again. The
same look-up comes before every retry (`ftpipe.retry`): an upload whose answer was lost has
stored the file, and sending it again would store a second copy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import openai
from openai.types import FileObject

from ftpipe import retry

PURPOSE = "fine-tune"
MIME_TYPE = "application/jsonl"
UPLOAD_ATTEMPTS = 5


@dataclass(frozen=True)
class Uploaded:
    """A training file on the endpoint, and how it got there."""

    file_id: str
    filename: str
    bytes: int
    how: Literal["reused", "files", "uploads"]


def content_hash(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def remote_name(path: Path, digest: str) -> str:
    """`train-<16 hex>.jsonl`: the hash in the name is what makes reuse possible."""
    return f"{path.stem}-{digest[:16]}{path.suffix or '.jsonl'}"


def find_uploaded(client: openai.OpenAI, filename: str, size: int) -> FileObject | None:
    """An earlier upload with this name and size (the name carries the content hash)."""
    for file in client.files.list(purpose=PURPOSE):
        if file.filename == filename and file.bytes == size and file.status != "error":
            return file
    return None


def upload_training_file(
    client: openai.OpenAI,
    path: Path,
    *,
    direct_max_bytes: int = 512 * 1024**2,
    part_bytes: int = 64 * 1024**2,
    attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Uploaded:
    """Make `path` available as a fine-tune file, uploading it only if it is not there yet;
    `attempts` defaults to the client's `max_retries` + 1, at least UPLOAD_ATTEMPTS."""
    attempts = attempts or retry.attempts_for(client, UPLOAD_ATTEMPTS)
    quiet = retry.no_sdk_retries(client)
    size = path.stat().st_size
    name = remote_name(path, content_hash(path))

    def once() -> Uploaded:
        existing = find_uploaded(quiet, name, size)
        if existing is not None:
            return Uploaded(existing.id, name, size, "reused")
        if size <= direct_max_bytes:
            return _send_whole(quiet, path, name, size)
        return _send_in_parts(quiet, path, name, size, part_bytes)

    return retry.call(once, attempts, what=f"uploading {path}", sleep=sleep)


def _send_whole(client: openai.OpenAI, path: Path, name: str, size: int) -> Uploaded:
    """One `files.create`: the path for files up to the direct limit."""
    with path.open("rb") as handle:
        created = client.files.create(file=(name, handle), purpose=PURPOSE)
    return Uploaded(created.id, name, size, "files")


def _send_in_parts(
    client: openai.OpenAI, path: Path, name: str, size: int, part_bytes: int
) -> Uploaded:
    """The Uploads API in `part_bytes` parts: the only way past `files.create`'s limit."""
    upload = client.uploads.upload_file_chunked(
        file=path,
        filename=name,
        bytes=size,
        mime_type=MIME_TYPE,
        purpose=PURPOSE,
        part_size=part_bytes,
    )
    if upload.file is None:
        raise RuntimeError(f"the upload of {path} completed without a file ({upload.status})")
    return Uploaded(upload.file.id, name, size, "uploads")
