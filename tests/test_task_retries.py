"""Which failures tasks retry, and how polling treats a job the endpoint forgot."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from ftpipe.finetune.poll import refresh
from ftpipe.local_api.server import RunningServer
from ftpipe.registry import JobRecord, Registry
from ftpipe.tasks.common import is_transient
from tests.conftest import strict_client

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


def test_rate_limits_and_server_errors_are_retried() -> None:
    assert is_transient(status_error(openai.RateLimitError, 429))
    assert is_transient(status_error(openai.InternalServerError, 500))
    assert is_transient(openai.APIConnectionError(request=REQUEST))


def test_no_quota_refusals_and_bad_requests_are_not_retried() -> None:
    assert not is_transient(status_error(openai.RateLimitError, 429, "insufficient_quota"))
    assert not is_transient(status_error(openai.PermissionDeniedError, 403))
    assert not is_transient(status_error(openai.BadRequestError, 400))
    too_long = status_error(openai.RateLimitError, 429, headers={"retry-after": "600"})
    assert not is_transient(too_long)
    assert not is_transient(ValueError("bad data"))


def test_a_job_the_endpoint_forgot_is_marked_failed(server: RunningServer, tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    registry.record(JobRecord("ftjob-gone", "running", "gpt-4o-mini-2024-07-18", endpoint="e"))
    record = refresh(strict_client(server.base_url), registry, "ftjob-gone", "e")
    assert record.status == "failed"
    assert "no longer knows" in (record.error or "")
    assert registry.active(endpoint="e") == []
