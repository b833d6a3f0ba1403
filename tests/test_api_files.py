"""`/v1/files` of the local server through the strict official SDK, checked against the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import StartServer, qa_examples, strict_client, write_jsonl
from tests.openapi import error_of, parsed, parsed_list

MIB = 1024 * 1024


def training_file(tmp_path: Path, name: str = "train.jsonl", count: int = 10) -> Path:
    return write_jsonl(tmp_path / name, qa_examples(count))


def upload(client: openai.OpenAI, path: Path, purpose: str = "fine-tune") -> Any:
    return parsed("OpenAIFile", client.files.with_raw_response.create(file=path, purpose=purpose))


PURPOSE_FILES = {
    "fine-tune": ("train.jsonl", b'{"messages": []}\n'),
    "batch": (
        "requests.jsonl",
        json.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions"}).encode()
        + b"\n",
    ),
    "vision": ("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    "assistants": ("notes.txt", "Notes, with non-ASCII text: caf\u00e9 \u2603\n".encode()),
}


@pytest.mark.parametrize("purpose", list(PURPOSE_FILES))
def test_create_each_purpose(client: openai.OpenAI, tmp_path: Path, purpose: str) -> None:
    filename, content = PURPOSE_FILES[purpose]
    path = tmp_path / filename
    path.write_bytes(content)
    created = upload(client, path, purpose)
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.purpose == purpose
    assert created.filename == filename
    assert created.bytes == len(content)
    assert created.status == "processed"
    assert created.created_at > 0

    fetched = parsed("OpenAIFile", client.files.with_raw_response.retrieve(created.id))
    assert fetched.model_dump() == created.model_dump()


def test_create_from_bytes_tuple(client: openai.OpenAI) -> None:
    content = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    created = parsed(
        "OpenAIFile",
        client.files.with_raw_response.create(
            file=("memory.jsonl", content, "application/jsonl"), purpose="fine-tune"
        ),
    )
    assert created.filename == "memory.jsonl"
    assert created.bytes == len(content)
    assert client.files.content(created.id).read() == content


@pytest.mark.parametrize("filename", ["train.txt", "train.json", "train.csv"])
def test_fine_tune_needs_jsonl(client: openai.OpenAI, tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    path.write_text('{"messages": []}\n')
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=path, purpose="fine-tune")
    error = error_of(excinfo)
    assert error["param"] == "file"
    assert ".jsonl" in error["message"]
    assert filename in error["message"]
    assert client.files.list().data == []


def test_unknown_purpose(client: openai.OpenAI, tmp_path: Path) -> None:
    path = training_file(tmp_path)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=path, purpose="nonsense")  # type: ignore[arg-type]
    error = error_of(excinfo)
    assert error["param"] == "purpose"
    assert "nonsense" in error["message"]


def test_list_purpose_filter_and_order(client: openai.OpenAI, tmp_path: Path) -> None:
    tune = [upload(client, training_file(tmp_path, f"t{i}.jsonl")) for i in range(3)]
    notes = tmp_path / "notes.txt"
    notes.write_text("notes")
    other = upload(client, notes, "assistants")

    everything = parsed_list("ListFilesResponse", client.files.with_raw_response.list())
    assert [f.id for f in everything.data] == [other.id] + [f.id for f in reversed(tune)]
    assert everything.has_more is False
    body = everything.model_dump()
    assert body["first_id"] == other.id
    assert body["last_id"] == tune[0].id

    only_tune = parsed_list(
        "ListFilesResponse", client.files.with_raw_response.list(purpose="fine-tune")
    )
    assert [f.id for f in only_tune.data] == [f.id for f in reversed(tune)]
    assert all(f.purpose == "fine-tune" for f in only_tune.data)

    ascending = parsed_list(
        "ListFilesResponse",
        client.files.with_raw_response.list(purpose="fine-tune", order="asc"),
    )
    assert [f.id for f in ascending.data] == [f.id for f in tune]

    none = parsed_list("ListFilesResponse", client.files.with_raw_response.list(purpose="batch"))
    assert none.data == []
    assert none.has_more is False


def test_list_pagination(client: openai.OpenAI, tmp_path: Path) -> None:
    created = [upload(client, training_file(tmp_path, f"p{i}.jsonl")) for i in range(5)]
    oldest_first = [f.id for f in created]

    first = parsed_list(
        "ListFilesResponse", client.files.with_raw_response.list(limit=2, order="asc")
    )
    assert [f.id for f in first.data] == oldest_first[:2]
    assert first.has_more is True
    second = parsed_list(
        "ListFilesResponse",
        client.files.with_raw_response.list(limit=2, order="asc", after=first.data[-1].id),
    )
    assert [f.id for f in second.data] == oldest_first[2:4]
    assert second.has_more is True
    third = parsed_list(
        "ListFilesResponse",
        client.files.with_raw_response.list(limit=2, order="asc", after=second.data[-1].id),
    )
    assert [f.id for f in third.data] == oldest_first[4:]
    assert third.has_more is False

    # the SDK's page objects and auto-pagination walk the same cursor
    page = client.files.list(limit=2, order="asc")
    assert page.has_next_page()
    assert [f.id for f in page.get_next_page().data] == oldest_first[2:4]
    assert [f.id for f in client.files.list(limit=2, order="asc")] == oldest_first
    assert [f.id for f in client.files.list(limit=2)] == list(reversed(oldest_first))
    pages = list(client.files.list(limit=2, order="desc").iter_pages())
    assert [len(p.data) for p in pages] == [2, 2, 1]


@pytest.mark.parametrize("limit", [0, 10_001])
def test_list_limit_out_of_range(client: openai.OpenAI, limit: int) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.list(limit=limit)
    assert error_of(excinfo)["param"] == "limit"


def test_content_round_trip_is_byte_exact(client: openai.OpenAI, tmp_path: Path) -> None:
    # CRLF line ends, non-ASCII text, a BOM-free UTF-8 file and no final newline
    text = "\r\n".join(
        json.dumps(e, ensure_ascii=False) for e in qa_examples(10, system="Caf\u00e9")
    )
    path = tmp_path / "exact.jsonl"
    path.write_bytes(text.encode("utf-8"))
    created = upload(client, path)

    raw = client.files.with_raw_response.content(created.id)
    assert raw.http_response.status_code == 200
    assert raw.parse().read() == path.read_bytes()
    assert client.files.content(created.id).content == path.read_bytes()

    binary = tmp_path / "noise.png"
    binary.write_bytes(bytes(range(256)) * 300)
    image = upload(client, binary, "vision")
    assert client.files.content(image.id).read() == binary.read_bytes()


def test_delete_then_not_found(client: openai.OpenAI, tmp_path: Path) -> None:
    keep = upload(client, training_file(tmp_path, "keep.jsonl"))
    gone = upload(client, training_file(tmp_path, "gone.jsonl"))

    deleted = parsed("DeleteFileResponse", client.files.with_raw_response.delete(gone.id))
    assert deleted.id == gone.id
    assert deleted.deleted is True
    assert deleted.object == "file"

    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as excinfo:
            call(gone.id)
        assert gone.id in error_of(excinfo)["message"]
    assert [f.id for f in client.files.list()] == [keep.id]
    assert client.files.retrieve(keep.id).id == keep.id


def test_unknown_file_id(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.files.retrieve("file-doesnotexist")
    assert excinfo.value.status_code == 404
    error = error_of(excinfo)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "file_id"
    assert "file-doesnotexist" in error["message"]
    assert error["code"] is None
    # the SDK exposes the same envelope
    assert excinfo.value.param == "file_id"
    assert excinfo.value.type == "invalid_request_error"


def test_per_file_limit(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(max_file_bytes=MIB)
    client = strict_client(server.base_url)
    at_limit = tmp_path / "at.jsonl"
    at_limit.write_bytes(b"x" * MIB)
    assert upload(client, at_limit).bytes == MIB

    over = tmp_path / "over.jsonl"
    over.write_bytes(b"x" * (MIB + 1))
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=over, purpose="fine-tune")
    error = error_of(excinfo)
    assert error["code"] == "file_too_large"
    assert error["param"] == "file"
    assert "1 MB" in error["message"]
    assert [f.filename for f in client.files.list()] == ["at.jsonl"]


def test_small_per_file_limit_names_the_limit(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(max_file_bytes=1000)
    client = strict_client(server.base_url)
    over = tmp_path / "over.jsonl"
    over.write_bytes(b"x" * 1500)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=over, purpose="fine-tune")
    error = error_of(excinfo)
    assert error["code"] == "file_too_large"
    assert "1000 bytes" in error["message"]


def test_too_large_error_states_the_real_size(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(max_file_bytes=MIB)
    client = strict_client(server.base_url)
    over = tmp_path / "over.jsonl"
    over.write_bytes(b"x" * (3 * MIB))
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=over, purpose="fine-tune")
    message = error_of(excinfo)["message"]
    assert f"{2 * MIB} bytes" not in message  # not the file's size: only what was read so far
