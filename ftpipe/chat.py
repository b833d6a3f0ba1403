"""Ask a chat model: retried by ftpipe's one policy (`ftpipe.retry`), an optional sentiment label
on the reply, and the exchange saved to a dialogue log for later fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.completion_usage import CompletionUsage

from ftpipe import retry
from ftpipe.dialogue_log import DialogueLog
from ftpipe.sentiment import Sentiment

Message = dict[str, Any]
T = TypeVar("T")

SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class Reply:
    """What a caller needs from a completion, without the SDK's types."""

    text: str
    model: str
    sentiment: Sentiment | None
    usage: dict[str, int] | None
    finish_reason: str | None


def build_messages(text: str | list[Message], system_instruction: str | None) -> list[Message]:
    """The request's messages: a string becomes one user message, sent exactly as written, and a
    (non-empty) system instruction goes first."""
    if isinstance(text, str):
        messages: list[Message] = [{"role": "user", "content": text}]
    else:
        messages = [dict(message) for message in text]
    if system_instruction:
        messages.insert(0, {"role": "system", "content": system_instruction})
    return messages


def ask(
    client: openai.OpenAI,
    text_or_messages: str | list[Message],
    *,
    model: str,
    system_instruction: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    attempts: int = 3,
    sentiment: Callable[[str], Sentiment] | None = None,
    log: DialogueLog | None = None,
) -> Reply:
    """One completion, tried up to `attempts` times on transient errors (the last error
    propagates); the reply is labelled by `sentiment` and saved to `log` when given."""
    policy = retry.retrying(attempts, what="chat")  # checks `attempts` before any request
    messages = build_messages(text_or_messages, system_instruction)
    once = retry.no_sdk_retries(client)

    def create() -> ChatCompletion:
        return once.chat.completions.create(
            model=model,
            messages=cast(list[ChatCompletionMessageParam], messages),
            temperature=_given(temperature),
            max_completion_tokens=_given(max_tokens),
        )

    reply = _reply(policy(create), sentiment)
    if log is not None:
        _record(log, messages, reply)
    return reply


def _given(value: T | None) -> T | openai.Omit:
    """Leave a parameter out of the request when the caller did not set it."""
    return openai.omit if value is None else value


def _reply(completion: ChatCompletion, sentiment: Callable[[str], Sentiment] | None) -> Reply:
    """The first choice as a `Reply`, labelled on its text."""
    if not completion.choices:
        raise ValueError(f"the completion from {completion.model} holds no choices")
    choice = completion.choices[0]
    text = choice.message.content or ""
    return Reply(
        text=text,
        model=completion.model,
        sentiment=sentiment(text) if sentiment is not None else None,
        usage=_usage(completion.usage),
        finish_reason=choice.finish_reason,
    )


def _usage(usage: CompletionUsage | None) -> dict[str, int] | None:
    """The token counts that price a call."""
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _record(log: DialogueLog, messages: list[Message], reply: Reply) -> None:
    """Save the exchange; it opens a conversation when the request carried no earlier reply."""
    log.record_exchange(
        system=_latest_text(messages, SYSTEM_ROLES),
        user=_latest_text(messages, ("user",)) or "",
        assistant=reply.text,
        sentiment=reply.sentiment,
        model=reply.model,
        new_conversation=not any(message.get("role") == "assistant" for message in messages),
    )


def _latest_text(messages: list[Message], roles: tuple[str, ...]) -> str | None:
    """The text of the last message with one of `roles`, or None when there is none."""
    found = next((m for m in reversed(messages) if m.get("role") in roles), None)
    return None if found is None else _text(found.get("content"))


def _text(content: object) -> str:
    """A message's text, whether a plain string or a list of typed parts (images left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""
