"""`/v1/chat/completions` of the local server's stand-in engine through the strict official SDK,
against the spec (real models: tests/test_local_real_inference.py)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import openai
import pytest
from PIL import Image

from ftpipe.tokens import count_message_tokens, count_tokens
from tests import openapi
from tests.openapi import error_of, parsed

MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"


@pytest.fixture(autouse=True)
def stand_in_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the stand-in engine, whatever is installed."""
    monkeypatch.setenv("FTPIPE_LOCAL_ENGINE", "stand-in")


def complete(client: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    raw = client.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", MODEL),
        messages=messages,  # type: ignore[arg-type]
        **kwargs,
    )
    completion = parsed("CreateChatCompletionResponse", raw)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    return completion


def data_url(image_format: str, size: tuple[int, int], colour: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=image_format)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg"}[image_format]
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def image_message(url: str, detail: str | None = None) -> list[dict[str, Any]]:
    image: dict[str, Any] = {"url": url}
    if detail:
        image["detail"] = detail
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this image."},
                {"type": "image_url", "image_url": image},
            ],
        }
    ]


TEXT_ONLY = [{"role": "user", "content": [{"type": "text", "text": "Describe this image."}]}]


def test_base_model_reply_is_deterministic(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    first = complete(client, messages)
    second = complete(client, messages)
    assert first.model == SNAPSHOT
    assert len(first.choices) == 1
    choice = first.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert "What is the capital of France?" in choice.message.content
    assert choice.message.content == second.choices[0].message.content
    other = complete(client, [{"role": "user", "content": "Something else entirely"}])
    assert other.choices[0].message.content != choice.message.content


def test_n_choices(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    completion = complete(client, messages, n=2)
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.choices[0].message.content == completion.choices[1].message.content
    single = complete(client, messages)
    usage, one = completion.usage, single.usage
    assert usage.prompt_tokens == one.prompt_tokens
    assert usage.completion_tokens == 2 * one.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("limit_name", ["max_tokens", "max_completion_tokens"])
def test_token_limit_gives_length(client: openai.OpenAI, limit_name: str) -> None:
    messages = [{"role": "user", "content": "Tell me a long story about a ferry."}]
    completion = complete(client, messages, **{limit_name: 2})
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content
    assert count_tokens(choice.message.content, SNAPSHOT) <= 2
    assert completion.usage.completion_tokens <= 2
    full = complete(client, messages).choices[0].message.content
    assert full.startswith(choice.message.content)


def test_usage_matches_token_counter(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "How many legs does a spider have?", "name": "alice"},
        {"role": "assistant", "content": "Eight."},
        {"role": "user", "content": "And an ant?"},
    ]
    completion = complete(client, messages)
    usage = completion.usage
    assert usage.prompt_tokens == count_message_tokens(messages, MODEL)
    assert usage.completion_tokens == count_tokens(completion.choices[0].message.content, MODEL)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_png_image_input(client: openai.OpenAI) -> None:
    completion = complete(client, image_message(data_url("PNG", (64, 32), "red")))
    reply = completion.choices[0].message.content
    assert "64x32" in reply
    assert "PNG" in reply
    assert "red" in reply
    text_only = complete(client, TEXT_ONLY)
    # 'auto' detail: 85 base tokens + 170 for the one 512-px tile
    assert completion.usage.prompt_tokens == text_only.usage.prompt_tokens + 85 + 170
    assert text_only.usage.prompt_tokens == count_message_tokens(TEXT_ONLY, MODEL)


def test_jpeg_image_input(client: openai.OpenAI) -> None:
    url = data_url("JPEG", (1024, 1024), "blue")
    completion = complete(client, image_message(url, "high"))
    reply = completion.choices[0].message.content
    assert "1024x1024" in reply
    assert "JPEG" in reply
    assert "blue" in reply
    text_only = complete(client, TEXT_ONLY).usage.prompt_tokens
    # high detail: scaled to 768x768, so 2x2 tiles of 170 tokens plus 85
    assert completion.usage.prompt_tokens == text_only + 85 + 4 * 170
    low = complete(client, image_message(url, "low"))
    assert low.usage.prompt_tokens == text_only + 85


def test_two_images(client: openai.OpenAI) -> None:
    messages = image_message(data_url("PNG", (10, 10), "white"))
    messages[0]["content"].append(
        {"type": "image_url", "image_url": {"url": data_url("JPEG", (20, 10), "black")}}
    )
    reply = complete(client, messages).choices[0].message.content
    assert "10x10" in reply
    assert "20x10" in reply


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/cat.png",
        "https://example.com/cat.png",
        "data:image/png;base64,not-base64!!",
        "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
    ],
)
def test_unusable_image_url(client: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=image_message(url))  # type: ignore[arg-type]
    error = error_of(excinfo)
    assert error["param"] is not None
    assert "image_url" in error["param"]


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    error = error_of(excinfo)
    assert error["code"] == "model_not_found"
    assert "no-such-model" in error["message"]


def test_empty_messages(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=[])
    assert error_of(excinfo)["param"] == "messages"


def test_unknown_role(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[list-item,misc]
        )
    assert "wizard" in error_of(excinfo)["message"]


def test_stream(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Stream this reply, please."}]
    expected = complete(client, messages)

    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == expected.usage.model_dump()

    # each raw event is a spec CreateChatCompletionStreamResponse, ending with [DONE]
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        openapi.validate("CreateChatCompletionStreamResponse", json.loads(event))


def test_stream_without_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, n=2
    )
    chunks = list(stream)
    assert all(chunk.usage is None for chunk in chunks)
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
