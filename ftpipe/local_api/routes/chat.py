"""`/v1/chat/completions`: real local models (`real_chat`) or the stand-in engine's replies,
with image input and exact usage.

Every parameter of OpenAI's request schema is typed strictly (see `shapes.py`); messages are
walked by `_check_messages`, which names the exact place of a problem the way OpenAI does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from ftpipe import catalog, tokens
from ftpipe.local_api import engine, real_chat
from ftpipe.local_api.errors import ApiError, invalid_type, invalid_value, missing_parameter
from ftpipe.local_api.local_models import is_real_row, other_engine, real_engine_enabled
from ftpipe.local_api.routes.common import StrictJsonRoute, store_of
from ftpipe.local_api.routes.models import model_not_found
from ftpipe.local_api.routes.shapes import (
    Closed,
    FunctionDef,
    FunctionTool,
    Int,
    Metadata,
    Number,
    ReasoningEffort,
    ResponseFormat,
)
from ftpipe.local_api.store import new_id, now

router = APIRouter(route_class=StrictJsonRoute)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url")
DETAILS = ("auto", "low", "high")
CALL_TYPES = ("function", "custom")


@with_config(ConfigDict(extra="forbid"))
class StreamOptions(TypedDict, total=False):
    """A plain dict once validated: `real_chat` reads it with `.get`."""

    include_usage: StrictBool
    include_obfuscation: StrictBool


class CustomTool(Closed):
    type: Literal["custom"]
    custom: dict[str, Any]


class NamedChoice(Closed):
    name: StrictStr


class FunctionChoice(Closed):
    type: Literal["function"]
    function: NamedChoice


class CustomChoice(Closed):
    type: Literal["custom"]
    custom: NamedChoice


class AllowedToolsChoice(Closed):
    type: Literal["allowed_tools"]
    allowed_tools: dict[str, Any]


ToolChoice = Annotated[
    FunctionChoice | CustomChoice | AllowedToolsChoice, Field(discriminator="type")
]


def _keys_are_token_ids(bias: dict[str, int]) -> dict[str, int]:
    """OpenAI's rule for `logit_bias`: keys are token ids written as strings."""
    for key in bias:
        if not key.isdigit():
            raise PydanticCustomError(
                "invalid_value",
                "keys are token ids, non-negative integers written as strings; got '{key}'.",
                {"key": key},
            )
    return bias


def _null_as(default: Any) -> BeforeValidator:
    """`null` for a parameter the spec makes nullable means its default."""
    return BeforeValidator(lambda value: default if value is None else value)


Bias = Annotated[
    dict[str, Annotated[Int, Field(ge=-100, le=100)]], AfterValidator(_keys_are_token_ids)
]
ChatTool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class ChatRequest(BaseModel):
    """CreateChatCompletionRequest; parameters the server does not know pass (a newer SDK's)."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    messages: list[dict[str, Any]] = Field(min_length=1)
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    max_tokens: Annotated[Int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[Int, Field(ge=1)] | None = None
    n: Annotated[Annotated[Int, Field(ge=1, le=128)], _null_as(1)] = 1
    seed: Int | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=4)] | None = None
    stream: Annotated[StrictBool, _null_as(False)] = False
    stream_options: StreamOptions | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: Bias | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[Int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ChatTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: Annotated[list[FunctionDef], Field(min_length=1, max_length=128)] | None = None
    function_call: Literal["none", "auto"] | NamedChoice | None = None
    user: StrictStr | None = None
    safety_identifier: Annotated[StrictStr, Field(max_length=64)] | None = None
    prompt_cache_key: StrictStr | None = None
    metadata: Metadata | None = None
    store: StrictBool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    reasoning_effort: ReasoningEffort | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None


# --- messages --------------------------------------------------------------------------------


def _string(param: str, value: Any, *, required: bool = True) -> None:
    """A 400 unless `value` is a string (or, when optional, absent)."""
    if value is None and required:
        raise missing_parameter(param)
    if value is not None and not isinstance(value, str):
        raise invalid_type(param, "a string", value)


def _object(param: str, value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object; a 400 naming `param` otherwise."""
    if value is None:
        raise missing_parameter(param)
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def _check_function(param: str, value: Any) -> None:
    function = _object(param, value)
    _string(f"{param}.name", function.get("name"))
    _string(f"{param}.arguments", function.get("arguments"))


def _check_call(param: str, value: Any) -> None:
    """One entry of an assistant message's `tool_calls`."""
    call = _object(param, value)
    _string(f"{param}.id", call.get("id"))
    kind = call.get("type")
    _string(f"{param}.type", kind)
    if kind not in CALL_TYPES:
        raise invalid_value(f"{param}.type", kind, CALL_TYPES)
    if kind == "function":
        _check_function(f"{param}.function", call.get("function"))
    else:
        custom = _object(f"{param}.custom", call.get("custom"))
        _string(f"{param}.custom.name", custom.get("name"))
        _string(f"{param}.custom.input", custom.get("input"))


def _check_calls(at: str, message: dict[str, Any]) -> None:
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise invalid_type(f"{at}.tool_calls", "an array", calls)
        for j, call in enumerate(calls):
            _check_call(f"{at}.tool_calls.[{j}]", call)
    if message.get("function_call") is not None:
        _check_function(f"{at}.function_call", message["function_call"])


def _check_image(param: str, part: dict[str, Any]) -> None:
    image = _object(f"{param}.image_url", part.get("image_url"))
    _string(f"{param}.image_url.url", image.get("url"))
    detail = image.get("detail")
    _string(f"{param}.image_url.detail", detail, required=False)
    if detail is not None and detail not in DETAILS:
        raise invalid_value(f"{param}.image_url.detail", detail, DETAILS)


def _check_part(param: str, value: Any) -> None:
    """A content part: a text part with a string, or an image part with a URL and detail."""
    part = _object(param, value)
    kind = part.get("type")
    _string(f"{param}.type", kind)
    if kind not in PART_TYPES:
        raise invalid_value(f"{param}.type", kind, PART_TYPES)
    if kind == "text" and not isinstance(part.get("text"), str):
        raise ApiError(
            400,
            f"Invalid '{param}': a part of type 'text' needs a string 'text'.",
            param=param,
            code="invalid_value",
        )
    if kind == "image_url":
        _check_image(param, part)


def _check_content(at: str, message: dict[str, Any]) -> None:
    """Content is a string or a list of text/image parts; only tool-calling replies may omit it."""
    content = message.get("content")
    if content is None:
        calls = message.get("tool_calls") or message.get("function_call")
        if message.get("role") == "assistant" and calls:
            return
        raise missing_parameter(f"{at}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(f"{at}.content", "a string or an array", content)
    if not content:
        raise ApiError(
            400,
            f"Invalid '{at}.content': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=f"{at}.content",
            code="empty_array",
        )
    for j, part in enumerate(content):
        _check_part(f"{at}.content.[{j}]", part)


def _check_message(i: int, message: dict[str, Any]) -> None:
    """One message's role, strings, tool calls and content, each checked for its JSON type."""
    at = f"messages.[{i}]"
    role = message.get("role")
    _string(f"{at}.role", role)
    if role not in ROLES:
        raise invalid_value(f"{at}.role", role, ROLES)
    for key in ("name", "tool_call_id", "refusal"):
        _string(f"{at}.{key}", message.get(key), required=False)
    _check_calls(at, message)
    _check_content(at, message)


def _image_parts(messages: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") == "image_url":
                    yield f"messages.[{i}].content.[{j}].image_url", part["image_url"]


def _check_messages(messages: list[dict[str, Any]]) -> int:
    """Reject malformed messages and unreadable images; return the images' prompt tokens."""
    for i, message in enumerate(messages):
        _check_message(i, message)
    image_tokens = 0
    for param, image in _image_parts(messages):
        try:
            _, data = engine.decode_data_url(image["url"])
            width, height = engine.image_size(data)
            image_tokens += engine.image_tokens(width, height, image.get("detail") or "auto")
        except ValueError as error:
            raise ApiError(400, str(error), param=param, code="invalid_image_url") from error
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


Answer = Callable[[list[dict[str, Any]]], str]


def _base_answer(model: str) -> Answer:
    """The base model's echo; an image only its description finds unreadable is still a 400."""

    def answer(messages: list[dict[str, Any]]) -> str:
        try:
            return engine.base_reply(model, messages)
        except ValueError as error:
            raise ApiError(400, str(error), param="messages", code="invalid_image_url") from error

    return answer


def _responder(request: Request, model: str) -> tuple[Answer, str]:
    """What answers for `model`, and the model name the response reports."""
    with store_of(request).reader() as tx:
        row = tx.get("model", model)
    if row is not None:
        if is_real_row(row):
            raise other_engine(model, real=False)
        return _trained(request, row.internal["job"]).reply, model
    info = catalog.openai_model(model)
    if info is None or model.startswith("ft:"):
        raise model_not_found(model)
    return _base_answer(model), info.snapshot


def _check_context(model: str, prompt: int, limit: int | None) -> None:
    """The real engine's context-length 400, for the catalogue model's context window."""
    info = catalog.openai_model(model)
    window = engine.context_window(info.snapshot if info else model)
    message = engine.context_problem(window, prompt, limit)
    if message:
        raise ApiError(400, message, param="messages", code="context_length_exceeded")


def _completion(body: ChatRequest, request: Request) -> dict[str, Any]:
    image_tokens = _check_messages(body.messages)
    answer, model = _responder(request, body.model)
    limit = body.max_completion_tokens or body.max_tokens
    prompt = tokens.count_message_tokens(_text_only(body.messages), model) + image_tokens
    _check_context(model, prompt, limit)
    text, finish = answer(body.messages), "stop"
    if limit is not None and tokens.count_tokens(text, model) > limit:
        text, finish = tokens.truncate_to_tokens(text, limit, model), "length"
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


def _check_stream_options(body: ChatRequest) -> None:
    """OpenAI's rule: `stream_options` only goes with `stream: true`."""
    if body.stream_options is not None and not body.stream:
        raise ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )


@router.post("/chat/completions", response_model=None)
def create_completion(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
    _check_stream_options(body)
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
