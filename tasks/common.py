"""What every ftpipe task shares: which failures are worth a retry, and bounded fan-out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import openai
from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from ftpipe.chat import retry_delay
from ftpipe.vision import EndpointError


def is_transient(error: BaseException) -> bool:
    """Network trouble, 429 and 5xx by the SDK's own rules (so never `insufficient_quota` nor a
    server saying not to); a refusal, bad data or any other 4xx would fail the same way."""
    if isinstance(error, openai.APIError):
        return retry_delay(error, 1) is not None
    return isinstance(error, httpx.TransportError) or (
        isinstance(error, EndpointError) and error.transient
    )


def retry_transient(task: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
    """Prefect's retry condition: retry only when the failure is transient."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def run_bounded(
    task: Task[Any, Any], parameters: Sequence[dict[str, Any]], concurrency: int
) -> list[tuple[bool, Any]]:
    """Run `task` once per parameter set, at most `concurrency` at a time, in input order:
    (True, result) for a finished run, (False, the error or state message) for a failed one."""
    with ThreadPoolTaskRunner(max_workers=concurrency) as runner:
        futures = [runner.submit(task, params) for params in parameters]
        return [outcome(future) for future in futures]


def outcome(future: PrefectFuture[Any]) -> tuple[bool, Any]:
    future.wait()
    state = future.state
    if state.is_completed():
        return True, state.result()
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        return False, error
    return False, state.message or f"task ended {state.name}"
