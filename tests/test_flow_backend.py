"""A flow run's first step: the backend it uses, logged where the Prefect UI shows it, with the
core's own log lines in the run's logs too."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from prefect.testing.utilities import prefect_test_harness
from prefect.variables import Variable

from ftpipe.errors import InputError
from ftpipe.tasks import backend
from ftpipe.tasks.backend import BACKEND_VARIABLE, flow_backend


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@flow
def uses_the_backend(model: str) -> str:
    with flow_backend(model) as settings:
        logging.getLogger("ftpipe").info("a line from the core")
        return settings.resolved_backend


def run_logs(state: object) -> list[str]:
    APILogHandler().flush()  # logs go to the API in batches
    run_id = state.state_details.flow_run_id  # type: ignore[attr-defined]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def test_the_run_logs_its_endpoint_model_and_the_cores_lines() -> None:
    state = uses_the_backend("gpt-4o-mini", return_state=True)
    assert state.result() == "local"
    messages = run_logs(state)
    assert any(
        m.startswith("Endpoint: the embedded local server") and "model: gpt-4o-mini" in m
        for m in messages
    ), messages
    assert "a line from the core" in messages


def test_a_deployed_run_without_a_backend_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backend, "is_deployed_run", lambda: True)
    state = uses_the_backend("gpt-4o-mini", return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InputError)
    assert str(error).startswith("FTPIPE_BACKEND: this deployed run names no backend")


def test_the_prefect_variable_names_the_backend_of_deployed_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backend, "is_deployed_run", lambda: True)
    Variable.set(BACKEND_VARIABLE, "local", overwrite=True)
    try:
        state = uses_the_backend("gpt-4o-mini", return_state=True)
    finally:
        Variable.unset(BACKEND_VARIABLE)
    assert state.result() == "local"
    assert any("from the Prefect variable" in m for m in run_logs(state))


def test_an_unknown_backend_in_the_variable_is_one_clear_line() -> None:
    Variable.set(BACKEND_VARIABLE, "bedrock", overwrite=True)
    try:
        state = uses_the_backend("gpt-4o-mini", return_state=True)
    finally:
        Variable.unset(BACKEND_VARIABLE)
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InputError)
    assert "expected one of auto, local, openai, azure" in str(error)
