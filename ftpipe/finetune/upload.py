"""Uploading training files: `files.create` up to 512 MB, the Uploads API beyond, never twice.

A file is uploaded under a name that carries its content hash, so a later run finds the copy
already on the endpoint (same name, same size) and reuses it instead of sending it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import openai
from openai.types import FileObject

PURPOSE = "fine-tune"
MIME_TYPE = "application/jsonl"


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
) -> Uploaded:
    """Make `path` available as a fine-tune file, uploading it only if it is not there yet."""
    size = path.stat().st_size
    name = remote_name(path, content_hash(path))
    existing = find_uploaded(client, name, size)
    if existing is not None:
        return Uploaded(existing.id, name, size, "reused")
    if size <= direct_max_bytes:
        with path.open("rb") as handle:
            created = client.files.create(file=(name, handle), purpose=PURPOSE)
        return Uploaded(created.id, name, size, "files")
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
