"""`/v1/chat/completions`: real local models (`real_chat`) or the stand-in engine's replies,
with image input and exact usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftpipe import catalog, tokens
from ftpipe.local_api import engine, real_chat
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.local_models import is_real_row, other_engine, real_engine_enabled
from ftpipe.local_api.routes.common import store_of
from ftpipe.local_api.routes.models import model_not_found
from ftpipe.local_api.store import new_id, now

router = APIRouter()

ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=128)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError(
                "array too long. Expected an array with maximum length 4, but got an array with "
                f"length {len(value)} instead."
            )
        return value


def _image_parts(messages: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    yield f"messages.[{i}].content.[{j}].image_url", part


def _bad_content(i: int, problem: str, param: str = "content") -> ApiError:
    return ApiError(
        400,
        f"Invalid 'messages[{i}].{param}': {problem}",
        param=f"messages.[{i}].{param}",
        code="invalid_value",
    )


def _check_content(i: int, message: dict[str, Any]) -> None:
    """Content is a string or a list of text/image parts; only tool-calling replies may omit it."""
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant" and (
            message.get("tool_calls") or message.get("function_call")
        ):
            return
        raise _bad_content(i, "expected a string or a list of content parts, got nothing.")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad_content(i, f"expected a string or a list, got {type(content).__name__}.")
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url" and isinstance((part.get("image_url") or {}).get("url"), str):
            continue
        raise _bad_content(
            i,
            "each part needs type 'text' with a string 'text', or type 'image_url' with "
            "an 'image_url.url'.",
            f"content.[{j}]",
        )


def _check_messages(messages: list[dict[str, Any]]) -> int:
    """Reject malformed messages and unreadable images; return the images' prompt tokens."""
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise ApiError(
                400,
                f"Invalid value: '{message.get('role')}'. Supported values are: "
                + ", ".join(f"'{role}'" for role in ROLES)
                + ".",
                param=f"messages.[{i}].role",
                code="invalid_value",
            )
        _check_content(i, message)
    image_tokens = 0
    for param, part in _image_parts(messages):
        image = part.get("image_url") or {}
        try:
            _, data = engine.decode_data_url(str(image.get("url", "")))
            width, height = engine.image_size(data)
        except ValueError as error:
            raise ApiError(400, str(error), param=param, code="invalid_image_url") from error
        image_tokens += engine.image_tokens(width, height, image.get("detail", "auto"))
    return image_tokens


def _text_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with image parts removed, for token counting of the text."""
    result = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        result.append({**message, "content": content if content is not None else ""})
    return result


def _trained(request: Request, job_id: str) -> engine.TrainedReplies:
    """The fine-tuned model's engine, built once per model and kept in memory."""
    cache: dict[str, engine.TrainedReplies] = request.app.state.engines
    if job_id not in cache:
        with store_of(request).model_data_path(job_id).open("rb") as lines:
            try:
                cache[job_id] = engine.TrainedReplies.from_jsonl(lines)
            except ValueError as error:
                raise ApiError(
                    400,
                    f"The local stand-in cannot answer for this model: {error}",
                    param="model",
                    code="model_not_supported",
                ) from error
    return cache[job_id]


def _reply(request: Request, model: str, messages: list[dict[str, Any]]) -> tuple[str, str]:
    """The reply text and the model name the response reports."""
    with store_of(request).reader() as tx:
        row = tx.get("model", model)
    if row is not None:
        if is_real_row(row):
            raise other_engine(model, real=False)
        return _trained(request, row.internal["job"]).reply(messages), model
    info = catalog.openai_model(model)
    if info is None or model.startswith("ft:"):
        raise model_not_found(model)
    return engine.base_reply(model, messages), info.snapshot


def _completion(body: ChatRequest, request: Request) -> dict[str, Any]:
    image_tokens = _check_messages(body.messages)
    text, model = _reply(request, body.model, body.messages)
    finish = "stop"
    limit = body.max_completion_tokens or body.max_tokens
    if limit is not None and tokens.count_tokens(text, model) > limit:
        text, finish = tokens.truncate_to_tokens(text, limit, model), "length"
    prompt = tokens.count_message_tokens(_text_only(body.messages), model) + image_tokens
    completion = tokens.count_tokens(text, model)
    return {
        "id": new_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
            for index in range(body.n)
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion * body.n,
            "total_tokens": prompt + completion * body.n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_ftpipe_local",
    }


def _stream(result: dict[str, Any], include_usage: bool) -> Iterator[str]:
    """The same completion as server-sent chunks, the way `stream=True` receives them."""
    head = {key: result[key] for key in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    for choice in result["choices"]:
        delta = {"role": "assistant", "content": choice["message"]["content"]}
        chunk = {"index": choice["index"], "delta": delta, "logprobs": None, "finish_reason": None}
        yield f"data: {json.dumps({**head, 'choices': [chunk]})}\n\n"
        done = {**chunk, "delta": {}, "finish_reason": choice["finish_reason"]}
        yield f"data: {json.dumps({**head, 'choices': [done]})}\n\n"
    if include_usage:
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': result['usage']})}\n\n"
    yield "data: [DONE]\n\n"


@router.post("/chat/completions", response_model=None)
def create_completion(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
    if real_engine_enabled(request.app.state.local):
        _check_messages(body.messages)
        if body.stream:
            return real_chat.stream(body, request)
        return real_chat.complete(body, request)
    result = _completion(body, request)
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_stream(result, include_usage), media_type="text/event-stream")
    return result
