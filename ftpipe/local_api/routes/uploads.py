"""`/v1/uploads`: the multi-part upload flow that `uploads.upload_file_chunked` drives."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Request, UploadFile
from pydantic import Field, StrictStr

from ftpipe.local_api.errors import ApiError, not_found
from ftpipe.local_api.routes.common import StrictJsonRoute, store_of
from ftpipe.local_api.routes.files import (
    add_file,
    check_purpose,
    copy_limited,
    copy_parts,
    too_large,
)
from ftpipe.local_api.routes.shapes import Closed, Int
from ftpipe.local_api.store import Row, Store, Transaction, new_id, now

router = APIRouter(route_class=StrictJsonRoute)

UPLOAD_LIFETIME_S = 3600


class FileExpiration(Closed):
    """Accepted and checked as OpenAI does; the local server keeps files until deleted."""

    anchor: Literal["created_at"]
    seconds: Annotated[Int, Field(ge=3600, le=2_592_000)]


class CreateUpload(Closed):
    filename: StrictStr
    purpose: StrictStr
    bytes: Annotated[Int, Field(ge=0)]
    mime_type: StrictStr
    expires_after: FileExpiration | None = None


class CompleteUpload(Closed):
    part_ids: list[StrictStr]
    md5: StrictStr | None = None


def _get_upload(tx: Transaction, upload_id: str) -> Row:
    row = tx.get("upload", upload_id)
    if row is None:
        raise not_found("upload", upload_id, "upload_id")
    return row


def _expire(store: Store, upload_id: str) -> None:
    """Mark a pending upload past its hour as expired, in a transaction of its own."""
    with store.transaction() as tx:
        row = tx.get("upload", upload_id)
        if row and row.body["status"] == "pending" and time.time() > row.body["expires_at"]:
            row.body["status"] = "expired"
            tx.update(row)


def _pending(tx: Transaction, upload_id: str) -> Row:
    row = _get_upload(tx, upload_id)
    if row.body["status"] != "pending":
        raise ApiError(
            400,
            f"Upload {row.id} is {row.body['status']}; parts can only be added to, and "
            "completion or cancellation asked of, a pending upload.",
            param="upload_id",
            code="upload_not_pending",
        )
    return row


@router.post("/uploads")
def create_upload(body: CreateUpload, request: Request) -> dict[str, Any]:
    check_purpose(body.purpose, body.filename)
    if "/" not in body.mime_type:
        raise ApiError(400, f"Invalid mime_type {body.mime_type!r}.", param="mime_type")
    limit = request.app.state.local.max_upload_bytes
    if body.bytes > limit:
        error = too_large(body.bytes, limit, "Upload")
        error.param = "bytes"
        raise error
    created = now()
    upload = {
        "id": new_id("upload_"),
        "object": "upload",
        "bytes": body.bytes,
        "created_at": created,
        "filename": Path(body.filename).name,
        "purpose": body.purpose,
        "status": "pending",
        "expires_at": created + UPLOAD_LIFETIME_S,
        "file": None,
    }
    with store_of(request).transaction() as tx:
        tx.insert("upload", upload, internal={"mime_type": body.mime_type})
    return upload


@router.post("/uploads/{upload_id}/parts")
def add_part(
    upload_id: str, request: Request, data: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    store = store_of(request)
    _expire(store, upload_id)
    with store.transaction() as tx:
        _pending(tx, upload_id)
    part_id = new_id("part_")
    limit = request.app.state.local.max_part_bytes
    copy_limited(data.file, store.part_path(part_id), limit, "Upload part")
    part = {"id": part_id, "object": "upload.part", "created_at": now(), "upload_id": upload_id}
    with store.transaction() as tx:
        tx.insert("upload_part", part, parent=upload_id)
    return part


def _parts_of(store: Store, tx: Transaction, row: Row, part_ids: list[str]) -> list[Path]:
    """The parts to assemble, in order; every id must belong to the upload, once."""
    known = {part.id for part in tx.all("upload_part", parent=row.id)}
    for part_id in part_ids:
        if part_id not in known:
            raise ApiError(
                400, f"Part {part_id} does not belong to upload {row.id}.", param="part_ids"
            )
    if len(set(part_ids)) != len(part_ids):
        raise ApiError(400, "part_ids lists the same part more than once.", param="part_ids")
    paths = [store.part_path(part_id) for part_id in part_ids]
    received = sum(path.stat().st_size for path in paths)
    if received != row.body["bytes"]:
        raise ApiError(
            400,
            f"The upload declared {row.body['bytes']} bytes but its parts hold {received}.",
            param="part_ids",
            code="upload_size_mismatch",
        )
    return paths


@router.post("/uploads/{upload_id}/complete")
def complete_upload(upload_id: str, body: CompleteUpload, request: Request) -> dict[str, Any]:
    store = store_of(request)
    _expire(store, upload_id)
    with store.transaction() as tx:  # claim the upload, so a racing completion is refused
        row = _pending(tx, upload_id)
        paths = _parts_of(store, tx, row, body.part_ids)
        row.body["status"] = "completed"
        tx.update(row)
    file_id = new_id("file-")
    target = store.file_path(file_id)
    copy_parts(paths, target)
    if body.md5 and _md5(target) != body.md5.lower():
        target.unlink(missing_ok=True)
        with store.transaction() as tx:
            row.body["status"] = "pending"
            tx.update(row)
        raise ApiError(400, "The md5 of the assembled file does not match 'md5'.", param="md5")
    file = add_file(
        store, file_id, row.body["filename"], row.body["purpose"], target.stat().st_size
    )
    with store.transaction() as tx:
        row.body["file"] = file
        tx.update(row)
    for path in paths:
        path.unlink(missing_ok=True)
    return row.body


@router.post("/uploads/{upload_id}/cancel")
def cancel_upload(upload_id: str, request: Request) -> dict[str, Any]:
    store = store_of(request)
    _expire(store, upload_id)
    with store.transaction() as tx:
        row = _pending(tx, upload_id)
        row.body["status"] = "cancelled"
        tx.update(row)
        parts = [store.part_path(part.id) for part in tx.all("upload_part", parent=upload_id)]
    for path in parts:
        path.unlink(missing_ok=True)
    return row.body


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
