"""Which endpoint a flow run talks to: decided once, at the run's first step, and logged where the
Prefect UI shows it.

Interactive commands (CLI, facade, demo) may fall back to the embedded local server by
themselves; a deployed run must name its backend (FTPIPE_BACKEND, a key or endpoint in its
environment, the Prefect variable `ftpipe_backend`, or a key in a Secret block), or it fails here
with one line saying what to set. Keys read from Secret blocks are passed to this run's settings
only, never written into the environment.

Example:
    >>> from prefect import flow
    >>> @flow
    ... def my_flow(model: str = "gpt-4o-mini") -> None:
    ...     with flow_backend(model):
    ...         ...  # make_client() here talks to the chosen endpoint
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, get_args

from prefect import get_run_logger
from prefect.blocks.system import Secret
from prefect.runtime import deployment
from prefect.variables import Variable
from pydantic import SecretStr

from ftpipe.client import describe_backend
from ftpipe.errors import InputError
from ftpipe.settings import Backend, Settings, get_settings, overridden
from ftpipe.tasks.logs import send_ftpipe_logs_to_runs

BACKEND_VARIABLE = "ftpipe_backend"  # a Prefect variable: local, openai or azure
# Settings field -> the Secret block that may hold it (README: "Secrets").
SECRET_BLOCKS = {
    "openai_api_key": "ftpipe-openai-api-key",
    "azure_openai_api_key": "ftpipe-azure-openai-api-key",
}
UNNAMED = (
    "this deployed run names no backend, and only interactive commands may pick the embedded "
    "local server by themselves: set FTPIPE_BACKEND=local|openai|azure (or OPENAI_API_KEY, "
    "OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT) in the worker's environment or the deployment's "
    f"job variables, or create the Prefect variable {BACKEND_VARIABLE!r}"
)


def is_deployed_run() -> bool:
    """Whether this flow run was started from a deployment (a schedule, the UI, a worker)."""
    return deployment.id is not None


@contextmanager
def flow_backend(model: str | None = None) -> Iterator[Settings]:
    """The run's settings, with its backend and keys resolved, for the body of a flow."""
    send_ftpipe_logs_to_runs()
    settings = get_settings()
    logger = get_run_logger()
    overrides: dict[str, Any] = {}
    if settings.backend == "auto" and not settings.explicit_backend:
        named = _backend_variable()
        if named:
            overrides["backend"] = named
            logger.info("Backend %r from the Prefect variable %r", named, BACKEND_VARIABLE)
    for field, block in SECRET_BLOCKS.items():
        if getattr(settings, field) is None:
            value = _secret(block)
            if value:
                overrides[field] = SecretStr(value)
                logger.info("%s taken from the Secret block %r", field.upper(), block)
    with overridden(**overrides):
        settings = get_settings()
        if is_deployed_run() and not settings.explicit_backend:
            raise InputError("FTPIPE_BACKEND", UNNAMED)
        logger.info(
            "Endpoint: %s%s",
            describe_backend(settings),
            f"; model: {model}" if model else "",
        )
        yield settings


def run_model(model: str | None, settings: Settings) -> str:
    """The model a run uses: the one it was given, or its backend's default (said in the log)."""
    if model is None:
        model = settings.default_model
        get_run_logger().info("Model: %s (the backend's default)", model)
    return model


def _backend_variable() -> str | None:
    """The Prefect variable naming the backend, checked against the known names."""
    value = Variable.get(BACKEND_VARIABLE, default=None)
    if value in (None, ""):
        return None
    if value not in get_args(Backend):
        raise InputError(
            f"Prefect variable {BACKEND_VARIABLE}={value!r}",
            f"expected one of {', '.join(get_args(Backend))}",
        )
    return str(value)


def _secret(block: str) -> str | None:
    """A Secret block's value, or None when no block of that name is saved."""
    try:
        value = Secret.load(block).get()
    except ValueError:
        return None
    return str(value) if value else None
