"""Ask a chat model: retries that honour `retry-after`, an optional sentiment label on the reply,
and the exchange saved to a dialogue log for later fine-tuning.

Retries are done here rather than by the SDK because the SDK retries every 429, including
`insufficient_quota` (no credit left), where waiting cannot help; otherwise the rules follow the
SDK's own (`openai._base_client`): the same statuses, `x-should-retry`, `retry-after-ms` before
`retry-after` (seconds or an HTTP date, up to two minutes), else jittered exponential backoff.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.completion_usage import CompletionUsage

from ftpipe.dialogue_log import DialogueLog
from ftpipe.sentiment import Sentiment

logger = logging.getLogger("ftpipe")

Message = dict[str, Any]
T = TypeVar("T")

INITIAL_BACKOFF_S = 0.5  # the SDK's INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, MAX_RETRY_AFTER_DELAY
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 120.0
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx
NOT_RETRIED_CODE = "insufficient_quota"
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
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    messages = build_messages(text_or_messages, system_instruction)
    once = client.with_options(max_retries=0)  # the retries are counted here, see the module doc

    def create() -> ChatCompletion:
        return once.chat.completions.create(
            model=model,
            messages=cast(list[ChatCompletionMessageParam], messages),
            temperature=_given(temperature),
            max_completion_tokens=_given(max_tokens),
        )

    reply = _reply(with_retries(create, attempts), sentiment)
    if log is not None:
        _record(log, messages, reply)
    return reply


def _given(value: T | None) -> T | openai.Omit:
    """Leave a parameter out of the request when the caller did not set it."""
    return openai.omit if value is None else value


def with_retries(call: Callable[[], T], attempts: int) -> T:
    """`call()`, repeated after the wait `retry_delay` gives while attempts remain."""
    for attempt in range(1, attempts):
        try:
            return call()
        except openai.APIError as error:
            delay = retry_delay(error, attempt)
            if delay is None:
                raise
            logger.info(
                "%s; retrying in %.2f s (attempt %d of %d)", error, delay, attempt + 1, attempts
            )
            time.sleep(delay)
    return call()


def retry_delay(error: openai.APIError, attempt: int) -> float | None:
    """Seconds to wait before trying again after `attempt` failed, or None when retrying cannot
    help (client errors, no quota, or a server asking for more than two minutes)."""
    if isinstance(error, openai.APIConnectionError):  # timeouts included
        return _backoff(attempt)
    if not isinstance(error, openai.APIStatusError) or not _retryable(error):
        return None
    wait = retry_after(error.response.headers)
    if wait is None or wait <= 0:
        return _backoff(attempt)
    return wait if wait <= MAX_RETRY_AFTER_S else None


def _retryable(error: openai.APIStatusError) -> bool:
    """Transient statuses, unless the account is out of quota or the server says otherwise."""
    if NOT_RETRIED_CODE in (error.code, error.type):
        return False
    hint = error.response.headers.get("x-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    return error.status_code in RETRIED_STATUSES or error.status_code >= 500


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait in seconds: `retry-after-ms`, else `retry-after` as seconds
    or an HTTP date; None when neither is usable."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return seconds
    return _until_http_date(headers.get("retry-after"))


def _until_http_date(value: str | None) -> float | None:
    """Seconds from now until an HTTP date such as 'Wed, 21 Oct 2015 07:28:00 GMT'."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _backoff(attempt: int) -> float:
    """Exponential wait after the `attempt`-th failure, capped, with up to 25% jitter."""
    base = min(INITIAL_BACKOFF_S * 2.0 ** min(attempt - 1, 30), MAX_BACKOFF_S)
    return base * (1 - 0.25 * random.random())


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
