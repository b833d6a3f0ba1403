"""The one retry policy of ftpipe: which failures are transient, how long to wait, how often.

The rules follow the `openai` SDK's own (`openai._base_client`): connection errors and
timeouts, 408, 409, 429 and 5xx are retried, `x-should-retry` is obeyed, `retry-after-ms` wins
over `retry-after` (seconds or an HTTP date) up to two minutes (beyond it, no retry), else
jittered exponential backoff from 0.5 s to 8 s. Unlike the SDK, `insufficient_quota` is never
retried: waiting does not add credit. Calls made under this policy use `max_retries=0`
(`no_sdk_retries`), so the SDK's retries never multiply ours.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

logger = logging.getLogger("ftpipe")

T = TypeVar("T")

DEFAULT_ATTEMPTS = 3
INITIAL_BACKOFF_S = 0.5  # the SDK's INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, MAX_RETRY_AFTER_DELAY
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 120.0
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx
NOT_RETRIED_CODE = "insufficient_quota"


class HTTPStatusError(RuntimeError):
    """A non-2xx answer met outside the SDK (raw HTTP), judged by the same rules as the SDK's."""

    def __init__(self, message: str, status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}


def is_transient(error: BaseException) -> bool:
    """Whether trying the same call again may succeed: network trouble, or a retryable status
    that is neither `insufficient_quota`, nor refused by `x-should-retry`, nor asked to wait
    longer than two minutes."""
    if isinstance(error, openai.APIConnectionError | httpx.TransportError):  # timeouts included
        return True
    if isinstance(error, openai.APIStatusError):
        if NOT_RETRIED_CODE in (error.code, error.type):
            return False
        return _status_transient(error.status_code, error.response.headers)
    if isinstance(error, HTTPStatusError):
        return _status_transient(error.status, error.headers)
    return False


def _status_transient(status: int, headers: Mapping[str, str]) -> bool:
    """The SDK's `_should_retry` for one answer's status and headers."""
    wait = retry_after(headers)
    if wait is not None and wait > MAX_RETRY_AFTER_S:
        return False
    hint = headers.get("x-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    return status in RETRIED_STATUSES or status >= 500


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


def _headers(error: BaseException) -> Mapping[str, str]:
    if isinstance(error, openai.APIStatusError):
        return error.response.headers
    if isinstance(error, HTTPStatusError):
        return error.headers
    return {}


def delay(error: BaseException, attempt: int) -> float:
    """Seconds to wait after the `attempt`-th failure: the server's own wait when it gave a
    usable one, else exponential backoff capped at 8 s with up to 25% jitter."""
    wait = retry_after(_headers(error))
    if wait is not None and 0 < wait <= MAX_RETRY_AFTER_S:
        return wait
    base = min(INITIAL_BACKOFF_S * 2.0 ** min(attempt - 1, 30), MAX_BACKOFF_S)
    return base * (1 - 0.25 * random.random())


def _wait(state: RetryCallState) -> float:
    """tenacity's wait strategy: `delay` of the failure just met."""
    error = state.outcome.exception() if state.outcome else None
    return delay(error, state.attempt_number) if error else 0.0


def _logger_of(what: str, attempts: int) -> Callable[[RetryCallState], None]:
    """A `before_sleep` hook that says what failed, how long we wait and which try comes next."""

    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        prefix = f"{what}: " if what else ""
        logger.info(
            "%s%s; retrying in %.2f s (attempt %d of %d)",
            prefix,
            error,
            wait,
            state.attempt_number + 1,
            attempts,
        )

    return log


def retrying(
    attempts: int = DEFAULT_ATTEMPTS,
    *,
    what: str = "",
    sleep: Callable[[float], None] = time.sleep,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> Retrying:
    """A tenacity `Retrying` with ftpipe's policy: at most `attempts` calls in all, transient
    failures only, each retry logged; the last error propagates unchanged."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=_wait,
        retry=retry_if_exception(retry_on),
        before_sleep=_logger_of(what, attempts),
        sleep=sleep,
        reraise=True,
    )


def call(
    function: Callable[[], T],
    attempts: int = DEFAULT_ATTEMPTS,
    *,
    what: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`function()` under the policy: retried on transient failures, `attempts` tries at most."""
    return retrying(attempts, what=what, sleep=sleep)(function)


def attempts_for(client: openai.OpenAI, at_least: int = DEFAULT_ATTEMPTS) -> int:
    """Tries for a call made with `client`: its `max_retries` (FTPIPE_MAX_RETRIES) become ours,
    plus the first try, and never fewer than `at_least`."""
    return max(at_least, client.max_retries + 1)


def no_sdk_retries(client: openai.OpenAI) -> openai.OpenAI:
    """The same client with the SDK's own retries off, for calls this policy retries."""
    return client.with_options(max_retries=0)
