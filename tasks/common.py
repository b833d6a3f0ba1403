"""What every ftpipe task shares: which failures Prefect retries, and bounded fan-out.

API calls are retried in the core by the one policy (`ftpipe.retry`); a Prefect retry on top
would multiply its tries (3 task runs x 5 tries of one chat message). Prefect retries a task
only for infrastructure failures the core does not retry: the machine's own I/O or database.
"""

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
from sqlalchemy.exc import OperationalError

from ftpipe.errors import InputError
from ftpipe.retry import HTTPStatusError

# Errors about a path the user gave: another try meets the same path.
PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
# Failures the core already retried (API answers, the network to the endpoint) or that no retry
# can fix (bad input).
NOT_INFRASTRUCTURE = (openai.APIError, httpx.HTTPError, HTTPStatusError, InputError, *PATH_ERRORS)


def is_infrastructure_failure(error: BaseException) -> bool:
    """An I/O or database failure of the machine running the task (a full or vanished disk, a
    database restarting), which a later try of the whole task may get past."""
    if isinstance(error, NOT_INFRASTRUCTURE):
        return False
    return isinstance(error, OSError | OperationalError)


def retry_infrastructure(task: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
    """Prefect's retry condition: retry only infrastructure failures, never API or input ones."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_infrastructure_failure(error)


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
