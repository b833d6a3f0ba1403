"""`/v1/uploads`: the multi-part upload flow that `uploads.upload_file_chunked` drives."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from pydantic import BaseModel, Field

from ftpipe.local_api.errors import ApiError, not_found
from ftpipe.local_api.routes.common import store_of
from ftpipe.local_api.routes.files import (
    add_file,
    check_purpose,
    copy_limited,
    copy_parts,
    too_large,
)
from ftpipe.local_api.store import Row, Transaction, new_id, now

router = APIRouter()

UPLOAD_LIFETIME_S = 3600


class CreateUpload(BaseModel):
    filename: str
    purpose: str
    bytes: int = Field(ge=0)
    mime_type: str


class CompleteUpload(BaseModel):
    part_ids: list[str]
    md5: str | None = None


def _get_upload(tx: Transaction, upload_id: str) -> Row:
    row = tx.get("upload", upload_id)
    if row is None:
        raise not_found("upload", upload_id, "upload_id")
    if row.body["status"] == "pending" and time.time() > row.body["expires_at"]:
        row.body["status"] = "expired"
        tx.update(row)
    return row


def _require_pending(row: Row) -> None:
    if row.body["status"] != "pending":
        raise ApiError(
            400,
            f"Upload {row.id} is {row.body['status']}; parts can only be added to, and "
            "completion or cancellation asked of, a pending upload.",
            param="upload_id",
            code="upload_not_pending",
        )


@router.post("/uploads")
def create_upload(body: CreateUpload, request: Request) -> dict[str, Any]:
    check_purpose(body.purpose, body.filename)
    limit = request.app.state.local.max_upload_bytes
    if body.bytes > limit:
        raise too_large(body.bytes, limit, "Upload")
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
    with store.transaction() as tx:
        _require_pending(_get_upload(tx, upload_id))
    part_id = new_id("part_")
    limit = request.app.state.local.max_part_bytes
    copy_limited(data.file, store.part_path(part_id), limit, "Upload part")
    part = {"id": part_id, "object": "upload.part", "created_at": now(), "upload_id": upload_id}
    with store.transaction() as tx:
        tx.insert("upload_part", part, parent=upload_id)
    return part


@router.post("/uploads/{upload_id}/complete")
def complete_upload(upload_id: str, body: CompleteUpload, request: Request) -> dict[str, Any]:
    store = store_of(request)
    with store.transaction() as tx:
        row = _get_upload(tx, upload_id)
        _require_pending(row)
        known = {part.id for part in tx.all("upload_part", parent=upload_id)}
    unknown = [part_id for part_id in body.part_ids if part_id not in known]
    if unknown:
        raise ApiError(
            400, f"Part {unknown[0]} does not belong to upload {upload_id}.", param="part_ids"
        )
    paths = [store.part_path(part_id) for part_id in body.part_ids]
    received = sum(path.stat().st_size for path in paths)
    if received != row.body["bytes"]:
        raise ApiError(
            400,
            f"The upload declared {row.body['bytes']} bytes but its parts hold {received}.",
            param="part_ids",
            code="upload_size_mismatch",
        )
    file_id = new_id("file-")
    target = store.file_path(file_id)
    copy_parts(paths, target)
    if body.md5 and _md5(target) != body.md5.lower():
        target.unlink(missing_ok=True)
        raise ApiError(400, "The md5 of the assembled file does not match 'md5'.", param="md5")
    file = add_file(store, file_id, row.body["filename"], row.body["purpose"], received)
    with store.transaction() as tx:
        row = _get_upload(tx, upload_id)
        row.body.update(status="completed", file=file)
        tx.update(row)
    for path in paths:
        path.unlink(missing_ok=True)
    return row.body


@router.post("/uploads/{upload_id}/cancel")
def cancel_upload(upload_id: str, request: Request) -> dict[str, Any]:
    store = store_of(request)
    with store.transaction() as tx:
        row = _get_upload(tx, upload_id)
        _require_pending(row)
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
