"""`/v1/assistants` and `/v1/threads`: enough of the Assistants API for the original module."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field, StrictStr

from ftpipe import catalog
from ftpipe.local_api.errors import ApiError, not_found
from ftpipe.local_api.routes.common import (
    StrictJsonRoute,
    check_limit,
    list_body,
    ordered,
    store_of,
)
from ftpipe.local_api.routes.shapes import (
    Closed,
    FunctionTool,
    Metadata,
    Number,
    ReasoningEffort,
    ResponseFormat,
)
from ftpipe.local_api.store import Row, Transaction, new_id, now, paginate

router = APIRouter(route_class=StrictJsonRoute)

# What an assistant shows for a field sent as null (or not at all): the object has no nulls there.
SHOWN_DEFAULTS: dict[str, Any] = {
    "tools": [],
    "metadata": {},
    "tool_resources": {},
    "response_format": "auto",
    "top_p": 1.0,
    "temperature": 1.0,
}


class CodeInterpreterTool(Closed):
    type: Literal["code_interpreter"]


class FileSearchTool(Closed):
    type: Literal["file_search"]
    file_search: dict[str, Any] | None = None


AssistantTool = Annotated[
    CodeInterpreterTool | FileSearchTool | FunctionTool, Field(discriminator="type")
]


class CodeInterpreterResources(Closed):
    file_ids: Annotated[list[StrictStr], Field(max_length=20)] | None = None


class FileSearchResources(Closed):
    vector_store_ids: Annotated[list[StrictStr], Field(max_length=1)] | None = None
    vector_stores: Annotated[list[dict[str, Any]], Field(max_length=1)] | None = None


class ToolResources(Closed):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


class AssistantFields(Closed):
    model: StrictStr | None = None
    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=512)] | None = None
    instructions: Annotated[StrictStr, Field(max_length=256_000)] | None = None
    tools: Annotated[list[AssistantTool], Field(max_length=128)] | None = None
    metadata: Metadata | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    response_format: Literal["auto"] | ResponseFormat | None = None
    tool_resources: ToolResources | None = None
    reasoning_effort: ReasoningEffort | None = None

    def shown(self) -> dict[str, Any]:
        """The fields that were sent, as the assistant object shows them."""
        sent = self.model_dump(exclude_unset=True, by_alias=True, exclude={"reasoning_effort"})
        return {
            key: SHOWN_DEFAULTS[key] if value is None and key in SHOWN_DEFAULTS else value
            for key, value in sent.items()
        }


class CreateAssistant(AssistantFields):
    model: StrictStr


class ThreadMessage(Closed):
    role: Literal["user", "assistant"]
    content: StrictStr | Annotated[list[dict[str, Any]], Field(min_length=1)]
    attachments: list[dict[str, Any]] | None = None
    metadata: Metadata | None = None


class CreateThread(Closed):
    messages: list[ThreadMessage] | None = None
    metadata: Metadata | None = None
    tool_resources: ToolResources | None = None


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
    empty = {"name": None, "description": None, "instructions": None}
    assistant = {
        "id": new_id("asst_"),
        "object": "assistant",
        "created_at": now(),
        **empty,
        **SHOWN_DEFAULTS,
        **body.shown(),
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
        row.body.update(body.shown())
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
        "tool_resources": _dumped(body.tool_resources),
    }
    messages = [message.model_dump(exclude_unset=True) for message in body.messages or []]
    with store_of(request).transaction() as tx:
        tx.insert("thread", thread, internal={"messages": messages})
    return thread


def _dumped(resources: ToolResources | None) -> dict[str, Any]:
    return resources.model_dump(exclude_unset=True) if resources else {}


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
