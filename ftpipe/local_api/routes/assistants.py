"""`/v1/assistants` and `/v1/threads`: enough of the Assistants API for the original module."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ftpipe import catalog
from ftpipe.local_api.errors import ApiError, not_found
from ftpipe.local_api.routes.common import check_limit, list_body, ordered, store_of
from ftpipe.local_api.store import Row, Transaction, new_id, now, paginate

router = APIRouter()


class AssistantFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=512)
    instructions: str | None = Field(None, max_length=256_000)
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    response_format: Any = None
    tool_resources: dict[str, Any] | None = None
    reasoning_effort: str | None = None


class CreateAssistant(AssistantFields):
    model: str


class CreateThread(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    tool_resources: dict[str, Any] | None = None


def _get(tx: Transaction, kind: str, object_id: str, param: str) -> Row:
    row = tx.get(kind, object_id)
    if row is None:
        raise not_found(kind, object_id, param)
    return row


def _check_model(tx: Transaction, model: str) -> None:
    if tx.get("model", model) is None and (
        catalog.openai_model(model) is None or model.startswith("ft:")
    ):
        raise ApiError(
            400,
            f"The requested model '{model}' does not exist.",
            param="model",
            code="model_not_found",
        )


@router.post("/assistants")
def create_assistant(body: CreateAssistant, request: Request) -> dict[str, Any]:
    assistant = {
        "id": new_id("asst_"),
        "object": "assistant",
        "created_at": now(),
        "name": body.name,
        "description": body.description,
        "model": body.model,
        "instructions": body.instructions,
        "tools": body.tools or [],
        "metadata": body.metadata or {},
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "tool_resources": body.tool_resources or {},
        "response_format": body.response_format or "auto",
    }
    with store_of(request).transaction() as tx:
        _check_model(tx, body.model)
        tx.insert("assistant", assistant)
    return assistant


@router.get("/assistants")
def list_assistants(
    request: Request,
    limit: Annotated[int, Query()] = 20,
    order: str = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    check_limit(limit)
    with store_of(request).reader() as tx:
        rows = ordered(tx.all("assistant"), order)
    return list_body(paginate(rows, after=after, before=before, limit=limit), with_ids=True)


@router.get("/assistants/{assistant_id}")
def retrieve_assistant(assistant_id: str, request: Request) -> dict[str, Any]:
    with store_of(request).reader() as tx:
        return _get(tx, "assistant", assistant_id, "assistant_id").body


@router.post("/assistants/{assistant_id}")
def modify_assistant(assistant_id: str, body: AssistantFields, request: Request) -> dict[str, Any]:
    with store_of(request).transaction() as tx:
        row = _get(tx, "assistant", assistant_id, "assistant_id")
        if body.model is not None:
            _check_model(tx, body.model)
        row.body.update(body.model_dump(exclude_unset=True, exclude={"reasoning_effort"}))
        tx.update(row)
    return row.body


@router.delete("/assistants/{assistant_id}")
def delete_assistant(assistant_id: str, request: Request) -> dict[str, Any]:
    with store_of(request).transaction() as tx:
        _get(tx, "assistant", assistant_id, "assistant_id")
        tx.delete(assistant_id)
    return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}


@router.post("/threads")
def create_thread(request: Request, body: CreateThread | None = None) -> dict[str, Any]:
    body = body or CreateThread()
    thread = {
        "id": new_id("thread_"),
        "object": "thread",
        "created_at": now(),
        "metadata": body.metadata or {},
        "tool_resources": body.tool_resources or {},
    }
    with store_of(request).transaction() as tx:
        tx.insert("thread", thread, internal={"messages": body.messages or []})
    return thread


@router.get("/threads/{thread_id}")
def retrieve_thread(thread_id: str, request: Request) -> dict[str, Any]:
    with store_of(request).reader() as tx:
        return _get(tx, "thread", thread_id, "thread_id").body


@router.delete("/threads/{thread_id}")
def delete_thread(thread_id: str, request: Request) -> dict[str, Any]:
    with store_of(request).transaction() as tx:
        _get(tx, "thread", thread_id, "thread_id")
        tx.delete(thread_id)
    return {"id": thread_id, "object": "thread.deleted", "deleted": True}
