"""The one retry policy (`ftpipe.retry`): what is transient, how long it waits, how often it tries.

The classification is checked on real error objects; the counting and waiting on real calls.
"""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import openai
import pytest

from ftpipe import retry
from ftpipe.vision import EndpointError

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def status_error(
    kind: type[openai.APIStatusError],
    status: int,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    body = {"message": "x", "type": "requests", "param": None, "code": code}
    response = httpx.Response(status, request=REQUEST, headers=headers, json={"error": body})
    return kind("x", response=response, body=body)


def test_network_trouble_is_transient_from_the_sdk_and_from_httpx() -> None:
    assert retry.is_transient(openai.APIConnectionError(request=REQUEST))
    assert retry.is_transient(openai.APITimeoutError(request=REQUEST))
    assert retry.is_transient(httpx.ConnectError("refused", request=REQUEST))
    assert retry.is_transient(httpx.ReadTimeout("slow", request=REQUEST))


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_the_sdks_statuses_are_transient(status: int) -> None:
    assert retry.is_transient(status_error(openai.APIStatusError, status))
    assert retry.is_transient(EndpointError("http://h/v1", status, "busy"))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_transient(status: int) -> None:
    assert not retry.is_transient(status_error(openai.APIStatusError, status))
    assert not retry.is_transient(EndpointError("http://h/v1", status, "bad"))


def test_no_quota_is_never_retried_though_the_sdk_would() -> None:
    assert not retry.is_transient(status_error(openai.RateLimitError, 429, "insufficient_quota"))


def test_the_server_decides_with_x_should_retry() -> None:
    forbidden = {"x-should-retry": "false"}
    assert not retry.is_transient(status_error(openai.InternalServerError, 503, headers=forbidden))
    assert not retry.is_transient(EndpointError("http://h/v1", 503, "busy", forbidden))
    asked = {"x-should-retry": "true"}
    assert retry.is_transient(status_error(openai.BadRequestError, 400, headers=asked))


def test_a_wait_beyond_two_minutes_is_not_retried() -> None:
    too_long = {"retry-after": "600"}
    assert not retry.is_transient(status_error(openai.RateLimitError, 429, headers=too_long))
    assert not retry.is_transient(EndpointError("http://h/v1", 429, "slow", too_long))


def test_other_errors_are_not_transient() -> None:
    assert not retry.is_transient(ValueError("bad data"))
    assert not retry.is_transient(OSError("disk full"))


def test_an_endpoint_error_keeps_its_headers_through_pickling() -> None:
    error = EndpointError("http://h/v1", 429, "slow", httpx.Headers({"Retry-After": "600"}))
    again = pickle.loads(pickle.dumps(error))
    assert (again.status, again.headers, str(again)) == (429, {"retry-after": "600"}, str(error))
    assert not again.transient


def test_retry_after_reads_milliseconds_seconds_and_dates() -> None:
    assert retry.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry.retry_after({"retry-after": "1.5"}) == 1.5
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = retry.retry_after({"retry-after": soon})
    assert wait is not None and 25 < wait <= 30
    assert retry.retry_after({"retry-after": "soon"}) is None
    assert retry.retry_after({}) is None


def test_the_servers_wait_wins_else_capped_jittered_backoff() -> None:
    limited = status_error(openai.RateLimitError, 429, headers={"retry-after-ms": "1500"})
    assert retry.delay(limited, 1) == 1.5
    assert retry.delay(EndpointError("http://h/v1", 503, "x", {"retry-after": "2"}), 4) == 2.0
    plain = status_error(openai.InternalServerError, 500)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (40, 8.0)]:
        waits = {retry.delay(plain, attempt) for _ in range(50)}
        assert all(0.75 * ceiling <= wait <= ceiling for wait in waits)


class Flaky:
    """Fails with `errors` in turn, then answers "done"; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_transient_failures_are_retried_with_the_servers_wait_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits: list[float] = []
    limited = status_error(openai.RateLimitError, 429, headers={"retry-after-ms": "20"})
    flaky = Flaky(limited, openai.APIConnectionError(request=REQUEST))
    with caplog.at_level(logging.INFO, logger="ftpipe"):
        assert retry.call(flaky, 3, what="testing", sleep=waits.append) == "done"
    assert flaky.calls == 3
    assert waits[0] == 0.02 and 0.75 <= waits[1] <= 1.0
    logged = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(logged) == 2
    assert logged[0].startswith("testing: ") and "(attempt 2 of 3)" in logged[0]


def test_attempts_are_a_ceiling_and_the_last_error_propagates() -> None:
    errors = [status_error(openai.InternalServerError, 500) for _ in range(5)]
    flaky = Flaky(*errors)
    with pytest.raises(openai.InternalServerError) as caught:
        retry.call(flaky, 3, sleep=lambda _: None)
    assert flaky.calls == 3
    assert caught.value is errors[2]


def test_errors_that_are_not_transient_are_raised_at_once() -> None:
    flaky = Flaky(status_error(openai.RateLimitError, 429, "insufficient_quota"))
    with pytest.raises(openai.RateLimitError):
        retry.call(flaky, 5, sleep=lambda _: None)
    assert flaky.calls == 1


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        retry.retrying(0)


def test_a_clients_max_retries_become_the_policys_tries() -> None:
    client = openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=6)
    assert retry.attempts_for(client) == 7
    assert retry.attempts_for(client, at_least=10) == 10
    assert retry.no_sdk_retries(client).max_retries == 0
