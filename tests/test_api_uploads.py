"""`/v1/uploads` (multi-part uploads) of the local server through the strict official SDK."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import openapi
from tests.conftest import StartServer, qa_examples, strict_client, write_jsonl
from tests.openapi import error_of, parsed

PART_LIMIT = 600


@pytest.fixture
def client(start_server: StartServer) -> openai.OpenAI:
    """A server whose parts may hold at most PART_LIMIT bytes, so big files need several."""
    return strict_client(start_server(max_part_bytes=PART_LIMIT).base_url)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "train.jsonl", qa_examples(20, system="Answer briefly."))
    assert path.stat().st_size > 4 * PART_LIMIT
    return path


def create(client: openai.OpenAI, size: int, filename: str = "train.jsonl") -> Any:
    upload = parsed(
        "Upload",
        client.uploads.with_raw_response.create(
            bytes=size, filename=filename, mime_type="application/jsonl", purpose="fine-tune"
        ),
    )
    assert upload.status == "pending"
    assert upload.file is None
    assert upload.bytes == size
    assert upload.id.startswith("upload_")
    assert upload.expires_at > upload.created_at
    return upload


def add_part(client: openai.OpenAI, upload_id: str, data: bytes) -> Any:
    part = parsed("UploadPart", client.uploads.parts.with_raw_response.create(upload_id, data=data))
    assert part.upload_id == upload_id
    assert part.object == "upload.part"
    return part


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_upload_file_chunked(client: openai.OpenAI, data_file: Path) -> None:
    upload = client.uploads.upload_file_chunked(
        file=data_file, mime_type="application/jsonl", purpose="fine-tune", part_size=500
    )
    original = data_file.read_bytes()
    assert upload.status == "completed"
    assert upload.filename == "train.jsonl"
    assert upload.bytes == len(original)
    assert upload.file is not None
    assert upload.file.bytes == len(original)
    assert upload.file.purpose == "fine-tune"
    assert upload.file.filename == "train.jsonl"

    file = parsed("OpenAIFile", client.files.with_raw_response.retrieve(upload.file.id))
    assert file.id == upload.file.id
    assert client.files.content(file.id).read() == original
    # a single part would have been refused: the file really went up in several
    with pytest.raises(openai.BadRequestError):
        client.uploads.upload_file_chunked(
            file=data_file, mime_type="application/jsonl", purpose="fine-tune"
        )


def test_upload_file_chunked_with_md5_from_bytes(client: openai.OpenAI, data_file: Path) -> None:
    original = data_file.read_bytes()
    upload = client.uploads.upload_file_chunked(
        file=original,
        filename="memory.jsonl",
        bytes=len(original),
        mime_type="application/jsonl",
        purpose="fine-tune",
        part_size=PART_LIMIT,
        md5=hashlib.md5(original).hexdigest(),
    )
    assert upload.status == "completed"
    assert upload.file is not None
    assert upload.file.filename == "memory.jsonl"
    assert client.files.content(upload.file.id).read() == original


def test_manual_flow_assembles_parts_in_part_ids_order(
    client: openai.OpenAI, data_file: Path
) -> None:
    original = data_file.read_bytes()
    upload = create(client, len(original))
    pieces = chunks(original, 500)
    # parts may arrive in any order (they may be sent in parallel); part_ids gives the order
    parts = {i: add_part(client, upload.id, pieces[i]) for i in reversed(range(len(pieces)))}
    ordered = [parts[i].id for i in range(len(pieces))]

    done = parsed(
        "Upload",
        client.uploads.with_raw_response.complete(
            upload.id, part_ids=ordered, md5=hashlib.md5(original).hexdigest()
        ),
    )
    assert done.status == "completed"
    assert done.id == upload.id
    assert done.file is not None
    openapi.validate("OpenAIFile", done.file.model_dump(exclude_none=True))
    assert done.file.bytes == len(original)
    assert client.files.content(done.file.id).read() == original
    assert done.file.id in [f.id for f in client.files.list(purpose="fine-tune")]

    # a completed upload takes no more parts and cannot be completed or cancelled again
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload.id, data=b"more")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload.id, part_ids=ordered)
    with pytest.raises(openai.BadRequestError):
        client.uploads.cancel(upload.id)


def test_wrong_byte_count(client: openai.OpenAI, data_file: Path) -> None:
    original = data_file.read_bytes()
    upload = create(client, len(original))
    pieces = chunks(original, 500)
    parts = [add_part(client, upload.id, piece) for piece in pieces[:-1]]

    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.complete(upload.id, part_ids=[p.id for p in parts])
    error = error_of(excinfo)
    assert error["code"] == "upload_size_mismatch"
    assert str(len(original)) in error["message"]
    assert str(len(original) - len(pieces[-1])) in error["message"]

    # the upload is still pending: the missing part can be added and the upload completed
    parts.append(add_part(client, upload.id, pieces[-1]))
    done = client.uploads.complete(upload.id, part_ids=[p.id for p in parts])
    assert done.status == "completed"
    assert done.file is not None
    assert client.files.content(done.file.id).read() == original


def test_too_many_bytes(client: openai.OpenAI) -> None:
    upload = create(client, 10)
    part = add_part(client, upload.id, b"x" * 11)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.complete(upload.id, part_ids=[part.id])
    assert error_of(excinfo)["code"] == "upload_size_mismatch"


def test_part_over_the_part_limit(client: openai.OpenAI) -> None:
    upload = create(client, PART_LIMIT + 1)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.parts.create(upload.id, data=b"x" * (PART_LIMIT + 1))
    error = error_of(excinfo)
    assert error["code"] == "file_too_large"
    # a part of exactly the limit is fine
    part = add_part(client, upload.id, b"x" * PART_LIMIT)
    last = add_part(client, upload.id, b"y")
    done = client.uploads.complete(upload.id, part_ids=[part.id, last.id])
    assert done.status == "completed"


def test_part_of_another_upload_is_refused(client: openai.OpenAI) -> None:
    first = create(client, 4)
    second = create(client, 4)
    foreign = add_part(client, first.id, b"abcd")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.complete(second.id, part_ids=[foreign.id])
    assert error_of(excinfo)["param"] == "part_ids"


def test_cancel_then_add_part(client: openai.OpenAI) -> None:
    upload = create(client, 8)
    part = add_part(client, upload.id, b"abcd")
    cancelled = parsed("Upload", client.uploads.with_raw_response.cancel(upload.id))
    assert cancelled.status == "cancelled"
    assert cancelled.id == upload.id
    assert cancelled.file is None

    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.parts.create(upload.id, data=b"efgh")
    error = error_of(excinfo)
    assert error["param"] == "upload_id"
    assert "cancelled" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload.id, part_ids=[part.id])
    with pytest.raises(openai.BadRequestError):
        client.uploads.cancel(upload.id)
    assert client.files.list().data == []


def test_md5_mismatch(client: openai.OpenAI) -> None:
    data = b'{"messages": []}\n' * 10
    upload = create(client, len(data))
    part = add_part(client, upload.id, data)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.complete(
            upload.id, part_ids=[part.id], md5=hashlib.md5(b"other").hexdigest()
        )
    error = error_of(excinfo)
    assert error["param"] == "md5"
    assert client.files.list().data == []

    # the right checksum (any case) still completes the pending upload
    done = client.uploads.complete(
        upload.id, part_ids=[part.id], md5=hashlib.md5(data).hexdigest().upper()
    )
    assert done.status == "completed"
    assert done.file is not None
    assert client.files.content(done.file.id).read() == data


def test_fine_tune_upload_needs_jsonl(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.uploads.create(
            bytes=10, filename="train.txt", mime_type="text/plain", purpose="fine-tune"
        )
    assert ".jsonl" in error_of(excinfo)["message"]


def test_unknown_upload(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.uploads.parts.create("upload_doesnotexist", data=b"x")
    error = error_of(excinfo)
    assert "upload_doesnotexist" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.uploads.complete("upload_doesnotexist", part_ids=[])
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_doesnotexist")
