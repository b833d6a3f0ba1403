"""Which failures Prefect retries (infrastructure only), and how polling treats a job the endpoint
forgot."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest
from prefect import flow
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy.exc import OperationalError

from ftpipe.errors import InputError
from ftpipe.finetune.poll import refresh
from ftpipe.local_api.server import RunningServer
from ftpipe.registry import JobRecord, Registry
from ftpipe.tasks.chat import answer
from ftpipe.tasks.common import is_infrastructure_failure
from ftpipe.vision import EndpointError
from tests.conftest import strict_client
from tests.test_chat_core import Recorder, error
from tests.test_retry import REQUEST, status_error


def test_api_failures_are_never_retried_by_prefect() -> None:
    """The core retried them already (`ftpipe.retry`): a Prefect retry would multiply the tries."""
    assert not is_infrastructure_failure(status_error(openai.RateLimitError, 429))
    assert not is_infrastructure_failure(status_error(openai.InternalServerError, 500))
    assert not is_infrastructure_failure(openai.APIConnectionError(request=REQUEST))
    assert not is_infrastructure_failure(httpx.ConnectError("refused", request=REQUEST))
    assert not is_infrastructure_failure(EndpointError("http://h/v1", 503, "busy"))
    assert not is_infrastructure_failure(status_error(openai.BadRequestError, 400))


def test_input_errors_are_never_retried() -> None:
    assert not is_infrastructure_failure(ValueError("bad data"))
    assert not is_infrastructure_failure(InputError("data.csv", "has no column 'text'"))
    assert not is_infrastructure_failure(FileNotFoundError("missing.jsonl"))
    assert not is_infrastructure_failure(PermissionError("locked.jsonl"))


def test_infrastructure_failures_are_retried() -> None:
    assert is_infrastructure_failure(OSError(28, "No space left on device"))
    assert is_infrastructure_failure(TimeoutError("disk stalled"))
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    assert is_infrastructure_failure(lost)


def test_one_chat_message_is_tried_at_most_attempts_times_in_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a real Prefect task run: the core's tries, and no Prefect retry on top."""
    failing = error(500, "server_error", {"retry-after-ms": "1"})
    server = Recorder([failing])
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")

    @flow
    def one_message() -> object:
        return answer("Hi", model="gpt-4o-mini", attempts=3, log_dialogue=False)

    try:
        with prefect_test_harness(server_startup_timeout=120):
            state = one_message(return_state=True)
    finally:
        server.shutdown()
        server.server_close()
    assert state.is_failed()
    assert len(server.requests) == 3


def test_a_job_the_endpoint_forgot_is_marked_failed(server: RunningServer, tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    registry.record(JobRecord("ftjob-gone", "running", "gpt-4o-mini-2024-07-18", endpoint="e"))
    record = refresh(strict_client(server.base_url), registry, "ftjob-gone", "e")
    assert record.status == "failed"
    assert "no longer knows" in (record.error or "")
    assert registry.active(endpoint="e") == []
