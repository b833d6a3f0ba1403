"""`/v1/files`: multipart upload, listing, retrieval, content download and deletion."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from ftpipe.local_api.errors import ApiError, not_found
from ftpipe.local_api.routes.common import (
    StrictJsonRoute,
    check_limit,
    list_body,
    ordered,
    store_of,
)
from ftpipe.local_api.store import Row, Store, Transaction, new_id, now, paginate

router = APIRouter(route_class=StrictJsonRoute)

# The purposes a File object may report (the spec's OpenAIFile enum), minus the output ones.
PURPOSES = ("fine-tune", "batch", "vision", "assistants", "user_data")
COPY_CHUNK = 1024 * 1024


def _human(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def too_large(size: int, limit: int, what: str = "File") -> ApiError:
    return ApiError(
        400,
        f"{what} is too large: {size} bytes ({_human(size)}), over the limit of {limit} bytes "
        f"({_human(limit)}).",
        param="file",
        code="file_too_large",
    )


def check_purpose(purpose: str, filename: str, param: str = "purpose") -> None:
    """Purposes OpenAI accepts, and the `.jsonl` rule of fine-tuning files."""
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"'{purpose}' is not one of {list(PURPOSES)} - '{param}'",
            param=param,
            code="invalid_value",
        )
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise ApiError(
            400,
            f"Invalid file format for Fine-Tuning API: '{filename}'. Must be .jsonl",
            param="file",
            code="invalid_file_format",
        )


def copy_limited(source: BinaryIO, target: Path, limit: int, what: str = "File") -> int:
    """Copy a stream to disk, stopping with a clear error once it passes `limit` bytes."""
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            if written > limit:
                break
            out.write(chunk)
    if written > limit:
        target.unlink(missing_ok=True)
        while chunk := source.read(COPY_CHUNK):  # count the rest so the error states the size
            written += len(chunk)
        raise too_large(written, limit, what)
    return written


def file_body(file_id: str, filename: str, purpose: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": now(),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def get_file(tx: Transaction, file_id: str) -> Row:
    row = tx.get("file", file_id)
    if row is None:
        raise not_found("File", file_id, "file_id")
    return row


def add_file(store: Store, file_id: str, filename: str, purpose: str, size: int) -> dict[str, Any]:
    """Record a file whose bytes already sit at `store.file_path(file_id)`."""
    with store.transaction() as tx:
        return tx.insert("file", file_body(file_id, filename, purpose, size)).body


@router.post("/files")
def create_file(
    request: Request,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
) -> dict[str, Any]:
    store = store_of(request)
    limit = request.app.state.local.max_file_bytes
    filename = Path(file.filename or "upload").name
    check_purpose(purpose, filename)
    file_id = new_id("file-")
    size = copy_limited(file.file, store.file_path(file_id), limit)
    return add_file(store, file_id, filename, purpose, size)


@router.get("/files")
def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query()] = 10_000,
    order: str = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    check_limit(limit, maximum=10_000)
    with store_of(request).reader() as tx:
        rows = ordered(tx.all("file"), order)
    if purpose:
        rows = [row for row in rows if row.body["purpose"] == purpose]
    return list_body(paginate(rows, after=after, limit=limit), with_ids=True)


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, request: Request) -> dict[str, Any]:
    with store_of(request).reader() as tx:
        return get_file(tx, file_id).body


@router.get("/files/{file_id}/content")
def file_content(file_id: str, request: Request) -> FileResponse:
    store = store_of(request)
    with store.reader() as tx:
        row = get_file(tx, file_id)
    return FileResponse(
        store.file_path(file_id),
        media_type="application/octet-stream",
        filename=row.body["filename"],
    )


@router.delete("/files/{file_id}")
def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    store = store_of(request)
    with store.transaction() as tx:
        get_file(tx, file_id)
        tx.delete(file_id)
    store.file_path(file_id).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}


def copy_parts(parts: list[Path], target: Path) -> None:
    """Concatenate upload parts in order into one file."""
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, out, COPY_CHUNK)
