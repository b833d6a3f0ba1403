"""The FastAPI application of the local OpenAI-compatible server.

Routes live under `/v1` with OpenAI's paths; `/_ftpipe/...` holds the server's own health and
fault-injection controls. Every answer, errors included, is in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ftpipe.local_api import errors
from ftpipe.local_api.engines import choose_engine
from ftpipe.local_api.routes import assistants, chat, files, fine_tuning, models, uploads
from ftpipe.local_api.store import Store
from ftpipe.settings import FaultSettings, LocalApiSettings

Handler = Callable[[Request], Awaitable[Response]]

OPEN_PATHS = ("/_ftpipe/health", "/_ftpipe/docs", "/openapi.json")
log = logging.getLogger("ftpipe.local_api")

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def host_name(header: str) -> str | None:
    """The name in a `Host` header, without port or IPv6 brackets; None when it is malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        well_formed = bracket and (not rest or (rest[:1] == ":" and rest[1:].isdigit()))
        return name if well_formed else None
    if value.count(":") > 1:
        return value  # a bare IPv6 address such as ::1
    name, colon, port = value.partition(":")
    return None if colon and not port.isdigit() else name


def is_loopback_name(name: str) -> bool:
    """localhost, *.localhost (RFC 6761 keeps both on this machine) or a loopback address."""
    name = name.removesuffix(".")
    if name == "localhost" or (name.endswith(".localhost") and len(name) > len(".localhost")):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_error(request: Request) -> errors.ApiError | None:
    """Refuse requests addressed to any other name: a page using DNS rebinding sends its own.

    A request without `Host` (HTTP/1.0) is let through: browsers always send one, and any local
    program can reach a loopback socket anyway, so refusing it would protect nothing.
    """
    hosts = request.headers.getlist("host")
    if not hosts:
        return None
    name = host_name(hosts[0]) if len(hosts) == 1 else None
    if name is not None and is_loopback_name(name):
        return None
    shown = (hosts[0] if len(hosts) == 1 else ", ".join(hosts))[:100]
    return errors.ApiError(
        400,
        f"Invalid Host header {shown!r}: the local server only answers requests addressed to "
        "a loopback name (localhost, 127.0.0.1 or [::1]), so that web pages cannot reach it "
        "through DNS rebinding.",
        code="invalid_host",
    )


def _presented_key(request: Request) -> str | None:
    """The bearer key, or Azure's `api-key` header, that a client sent."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None


def _auth_error(request: Request, expected: str | None) -> errors.ApiError | None:
    key = _presented_key(request)
    if key is None:
        return errors.ApiError(401, MISSING_KEY)
    if expected is not None and not secrets.compare_digest(key, expected):
        return errors.ApiError(
            401, "Incorrect API key provided for the local server.", code="invalid_api_key"
        )
    return None


def _injected_fault(faults: FaultSettings, dice: random.Random) -> errors.ApiError | None:
    roll = dice.random()
    if roll < faults.rate_429:
        return errors.ApiError(
            429,
            "Rate limit reached (injected by the local server's fault settings).",
            code="rate_limit_exceeded",
            headers={
                "retry-after": f"{faults.retry_after_s:g}",
                "retry-after-ms": str(int(faults.retry_after_s * 1000)),
                "x-ratelimit-remaining-requests": "0",
            },
        )
    if roll < faults.rate_429 + faults.rate_500:
        return errors.ApiError(
            500,
            "The server had an error (injected by the local server's fault settings).",
            code="server_error",
        )
    return None


def create_app(
    root: Path,
    local: LocalApiSettings | None = None,
    faults: FaultSettings | None = None,
) -> FastAPI:
    """Build the app over a state folder; settings default to the environment's."""
    app = FastAPI(title="ftpipe local OpenAI-compatible API", docs_url="/_ftpipe/docs")
    app.state.store = Store(root)
    app.state.local = local or LocalApiSettings()
    app.state.faults = faults or FaultSettings()
    app.state.dice = random.Random(app.state.faults.seed)
    app.state.engines = {}
    app.state.engine = choose_engine(app.state.local)
    # Callables run (last first) by `shutdown_app`: the training supervisor's stop, and whatever
    # else the real engine starts (e.g. an inference worker kept in app.state).
    app.state.shutdown_hooks = []
    app.state.supervisor = None
    if app.state.engine == "real":
        from ftpipe.local_api.training_supervisor import TrainingSupervisor

        app.state.supervisor = TrainingSupervisor(app.state.store, app.state.local)
        app.state.supervisor.start()
        app.state.shutdown_hooks.append(app.state.supervisor.stop)

    app.add_exception_handler(errors.ApiError, errors.handle_api_error)
    app.add_exception_handler(RequestValidationError, errors.handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.handle_http_error)
    app.add_exception_handler(Exception, errors.handle_unexpected)

    @app.middleware("http")
    async def guard(request: Request, call_next: Handler) -> Response:
        """Host check, auth, injected faults (before the request, or after it as a lost answer),
        and a clean 500 for anything unexpected."""
        wrong_host = _host_error(request)
        if wrong_host:
            return errors.error_response(wrong_host)
        path = request.url.path
        if path.startswith(OPEN_PATHS):
            return await call_next(request)
        expected = app.state.local.api_key
        denied = _auth_error(request, expected.get_secret_value() if expected else None)
        if denied:
            return errors.error_response(denied)
        faults: FaultSettings = app.state.faults
        if path.startswith("/v1/"):
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000)
            fault = _injected_fault(faults, app.state.dice)
            if fault:
                return errors.error_response(fault)
        try:
            response = await call_next(request)
        except Exception as error:  # answered here so the connection stays usable
            log.exception("local server error on %s %s", request.method, path)
            return errors.error_response(errors.server_error(error))
        lost = faults.rate_500_after and app.state.dice.random() < faults.rate_500_after
        if path.startswith("/v1/") and lost:
            return errors.error_response(
                errors.ApiError(
                    500,
                    "The server had an error after carrying out the request (injected by the "
                    "local server's fault settings).",
                    code="server_error",
                )
            )
        return response

    for router in (models, files, uploads, fine_tuning, chat, assistants):
        app.include_router(router.router, prefix="/v1")

    @app.get("/_ftpipe/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "root": str(root), "pid": os.getpid()}

    @app.get("/_ftpipe/faults")
    def get_faults() -> dict[str, Any]:
        return app.state.faults.model_dump()

    @app.post("/_ftpipe/faults")
    def set_faults(body: dict[str, Any]) -> dict[str, Any]:
        """Change fault injection at run time (tests and benchmarks of retry paths)."""
        unknown = sorted(set(body) - set(FaultSettings.model_fields))
        if unknown:
            raise errors.ApiError(
                400,
                f"Unknown fault setting '{unknown[0]}'; "
                f"known: {', '.join(sorted(FaultSettings.model_fields))}",
                param=unknown[0],
                code="invalid_value",
            )
        try:
            faults = FaultSettings.model_validate({**app.state.faults.model_dump(), **body})
        except ValidationError as error:
            first = error.errors()[0]
            param = ".".join(str(part) for part in first["loc"])
            raise errors.ApiError(
                400, f"Invalid fault setting '{param}': {first['msg']}", param=param
            ) from error
        app.state.faults = faults
        app.state.dice = random.Random(app.state.faults.seed)
        return app.state.faults.model_dump()

    return app


def shutdown_app(app: FastAPI) -> None:
    """Stop what the app started beside the HTTP server (training workers keep running)."""
    hooks = getattr(app.state, "shutdown_hooks", [])
    while hooks:
        hook = hooks.pop()
        try:
            hook()
        except Exception:
            log.exception("error while shutting the local server down")
