"""Chat completions from real local models, in OpenAI's shapes (whole and streamed).

The blocking worker calls run in FastAPI's threadpool (the route is a plain `def`, stream chunks
are pulled in worker threads), so the event loop never waits on a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ftpipe.inference.client import Delta, Done, InferenceError, InferenceWorker
from ftpipe.local_api.errors import error_body
from ftpipe.local_api.inference import api_error, worker_for
from ftpipe.local_api.local_models import LocalModel, resolve
from ftpipe.local_api.store import new_id, now

FINGERPRINT = "fp_ftpipe_local"


def _options(body: Any, default_max_tokens: int) -> tuple[dict[str, Any], bool]:
    """The worker's sampling options, and whether the completion limit was left implicit."""
    limit = body.max_completion_tokens or body.max_tokens
    options = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "max_tokens": limit or default_max_tokens,
        "n": body.n,
        "seed": body.seed,
        "stop": body.stop,
    }
    return options, limit is None


def _fitted(error: InferenceError, options: dict[str, Any], implicit: bool) -> dict | None:
    """With no limit asked for, a prompt that fits but leaves less room than the default limit
    gets the room there is instead of an error; None when the error stands."""
    prompt, context = error.prompt_tokens, error.context_length
    if error.code != "context_length_exceeded" or not implicit or prompt is None or not context:
        return None
    if prompt >= context:
        return None
    return {**options, "max_tokens": context - prompt}


def _usage(done: Done) -> dict[str, Any]:
    assert done.usage is not None
    return {
        **done.usage.model_dump(),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _setup(body: Any, request: Request) -> tuple[LocalModel, InferenceWorker, dict, bool]:
    local = request.app.state.local
    model = resolve(body.model, local, request.app.state.store)
    options, implicit = _options(body, local.default_max_tokens)
    return model, worker_for(request.app), options, implicit


def complete(body: Any, request: Request) -> dict[str, Any]:
    """A whole `chat.completion` from the model that `body.model` names."""
    model, worker, options, implicit = _setup(body, request)

    def ask(chosen: dict[str, Any]) -> Done:
        return worker.chat(
            body.messages,
            model_path=model.model_path,
            adapter_path=model.adapter_path,
            **chosen,
        )

    try:
        try:
            done = ask(options)
        except InferenceError as error:
            fitted = _fitted(error, options, implicit)
            if fitted is None:
                raise
            done = ask(fitted)
    except InferenceError as error:
        raise api_error(error, body.model) from None
    return {
        "id": new_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": now(),
        "model": body.model,
        "choices": [
            {
                "index": choice.index,
                "message": {
                    "role": "assistant",
                    "content": choice.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": _finish(choice.finish_reason),
            }
            for choice in done.choices
        ],
        "usage": _usage(done),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that closes its source however it ends (finished, failed, or the
    client gone), so an abandoned generation is cancelled and the worker freed at once."""

    def __init__(self, content: Iterator[str], close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)


def stream(body: Any, request: Request) -> StreamingResponse:
    """`chat.completion.chunk` events; errors before the first token are plain HTTP errors."""
    model, worker, options, implicit = _setup(body, request)

    def open_stream(chosen: dict[str, Any]) -> tuple[Iterator[Delta | Done], Delta | Done]:
        items = worker.stream(
            body.messages,
            model_path=model.model_path,
            adapter_path=model.adapter_path,
            **chosen,
        )
        try:
            return items, next(items)
        except BaseException:
            items.close()
            raise

    try:
        try:
            items, first = open_stream(options)
        except InferenceError as error:
            fitted = _fitted(error, options, implicit)
            if fitted is None:
                raise
            items, first = open_stream(fitted)
    except InferenceError as error:
        raise api_error(error, body.model) from None
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    events = _events(body, items, first, include_usage)

    def close() -> None:
        events.close()
        items.close()

    return ClosingStreamingResponse(events, close, media_type="text/event-stream")


def _events(
    body: Any, items: Iterator[Delta | Done], first: Delta | Done, include_usage: bool
) -> Iterator[str]:
    head: dict[str, Any] = {
        "id": new_id("chatcmpl-", 29),
        "object": "chat.completion.chunk",
        "created": now(),
        "model": body.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        head["usage"] = None

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    for index in range(body.n):
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
    item: Delta | Done | None = first
    try:
        while isinstance(item, Delta):
            if item.text:
                yield chunk(item.index, {"content": item.text})
            item = next(items, None)
    except InferenceError as error:
        failure = api_error(error, body.model)
        detail = error_body(failure.status, failure.message, failure.param, failure.code)
        yield f"data: {json.dumps(detail)}\n\n"
        return
    if item is None:
        return
    for choice in item.choices:
        yield chunk(choice.index, {}, _finish(choice.finish_reason))
    if include_usage:
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(item)})}\n\n"
    yield "data: [DONE]\n\n"
