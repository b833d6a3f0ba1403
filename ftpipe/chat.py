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
from ftpipe.errors import InputError
from ftpipe.sentiment import Sentiment

Message = dict[str, Any]
T = TypeVar("T")

SYSTEM_ROLES = ("system", "developer")
SOURCE = "ask"  # how InputErrors of a request name it


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
    propagates); the reply is labelled by `sentiment` and saved to `log` when given.
    An empty question or `attempts` below 1 is an InputError before any request."""
    check_request(text_or_messages, attempts)
    policy = retry.retrying(attempts, what="chat")
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


def check_request(text_or_messages: object, attempts: object) -> None:
    """Refuse what cannot be asked before a client is even made: a reply to an empty question
    would be logged as a training example without a user message."""
    check_attempts(attempts)
    check_question(text_or_messages)


def check_attempts(attempts: object) -> None:
    """At least one try: zero would send nothing and answer nothing."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InputError(SOURCE, f"attempts must be at least 1, got {attempts!r}")


def check_question(text_or_messages: object) -> None:
    """The question (a string, or the last user message of a list) must hold text or an image;
    whitespace alone is empty."""
    if isinstance(text_or_messages, str):
        content: object = text_or_messages
    elif isinstance(text_or_messages, list):
        content = _question_content(text_or_messages)
    else:
        kind = type(text_or_messages).__name__
        raise InputError(SOURCE, f"the question must be text or a list of messages, got {kind}")
    if not _has_content(content):
        raise InputError(SOURCE, "the question is empty; there is nothing to answer or to log")


def _question_content(messages: list[Any]) -> object:
    """The content of the last user message, None when there is none."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1].get("content") if users else None


def _has_content(content: object) -> bool:
    """Text other than whitespace, or a part that is not text (an image)."""
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list):
        return any(_part_has_content(part) for part in content)
    return False


def _part_has_content(part: object) -> bool:
    """A typed content part: text counts when it is not blank, any other type counts."""
    if not isinstance(part, dict):
        return False
    if part.get("type", "text") == "text":
        text = part.get("text")
        return isinstance(text, str) and bool(text.strip())
    return True


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
