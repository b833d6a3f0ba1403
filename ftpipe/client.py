"""The one place that builds an `openai.OpenAI` client: real OpenAI, Azure OpenAI, or local.

With no key and no endpoint configured, the embedded local server is started on loopback, so
every command works offline on a fresh machine.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import openai

from ftpipe.errors import InputError
from ftpipe.settings import Settings, get_settings

log = logging.getLogger("ftpipe")

LOCAL_PLACEHOLDER_KEY = "ftpipe-local"  # for endpoints that accept any key (`ftpipe local-api`)


def make_client(
    settings: Settings | None = None, *, max_retries: int | None = None
) -> openai.OpenAI:
    """A client for the configured backend; the SDK's own retries and timeouts apply."""
    settings = settings or get_settings()
    retries = settings.max_retries if max_retries is None else max_retries
    backend = settings.resolved_backend
    if backend == "azure":
        if not settings.azure_openai_endpoint:
            raise InputError("FTPIPE_BACKEND=azure", "needs AZURE_OPENAI_ENDPOINT to be set")
        key = settings.azure_openai_api_key or settings.openai_api_key
        if key is None:
            raise InputError("Azure OpenAI", "needs AZURE_OPENAI_API_KEY (or OPENAI_API_KEY)")
        return _shared(
            "azure",
            api_key=key.get_secret_value() if key else None,
            azure_endpoint=settings.azure_openai_endpoint,
            api_version=settings.azure_openai_api_version,
            max_retries=retries,
            timeout=settings.timeout_s,
        )
    if backend == "openai":
        key = settings.openai_api_key
        if key is None and settings.openai_base_url is None:
            raise InputError(
                "FTPIPE_BACKEND=openai",
                "needs OPENAI_API_KEY (or OPENAI_BASE_URL for another OpenAI-compatible endpoint)",
            )
        return _shared(
            "openai",
            api_key=key.get_secret_value() if key else LOCAL_PLACEHOLDER_KEY,
            base_url=settings.openai_base_url,
            organization=settings.openai_organization,
            max_retries=retries,
            timeout=settings.timeout_s,
        )
    from ftpipe.local_api.server import local_endpoint

    _show_ftpipe_logs()
    local = local_endpoint(settings)  # an in-process server's key is random, per process
    return _shared(
        "openai",
        api_key=local.api_key or LOCAL_PLACEHOLDER_KEY,
        base_url=local.base_url,
        max_retries=retries,
        timeout=settings.timeout_s,
    )


def _shared(kind: str, **options: Any) -> openai.OpenAI:
    """One client per configuration and process: a new one costs ~17 ms of CPU (an SSL context),
    which dominated concurrent chat; SDK clients are safe to share between threads."""
    return _cached(kind, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=32)
def _cached(kind: str, options: tuple[tuple[str, Any], ...]) -> openai.OpenAI:
    factory = openai.AzureOpenAI if kind == "azure" else openai.OpenAI
    return factory(**dict(options))


def _show_ftpipe_logs() -> None:
    """Make sure the one line saying where the local server runs reaches the user's terminal."""
    if not log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def endpoint_id(settings: Settings | None = None) -> str:
    """A stable name for where jobs live: the embedded server's port changes, its state does not."""
    settings = settings or get_settings()
    backend = settings.resolved_backend
    if backend == "azure":
        return f"azure:{settings.azure_openai_endpoint}"
    if backend == "openai":
        return settings.openai_base_url or "https://api.openai.com/v1"
    return f"local:{settings.state_dir('local_api')}"


def describe_backend(settings: Settings | None = None) -> str:
    """One line saying where requests go, without any secret."""
    settings = settings or get_settings()
    backend = settings.resolved_backend
    if backend == "azure":
        return f"Azure OpenAI at {settings.azure_openai_endpoint}"
    if backend == "openai":
        return f"OpenAI-compatible endpoint at {settings.openai_base_url or 'https://api.openai.com/v1'}"
    return f"the embedded local server (state in {settings.state_dir('local_api')})"
