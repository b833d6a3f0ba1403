"""Auth, error envelopes and fault injection of the local server, over real HTTP."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import openai
import pytest

from ftpipe.local_api.server import RunningServer
from ftpipe.settings import FaultSettings
from tests import openapi
from tests.conftest import StartServer, strict_client

AUTH = {"Authorization": "Bearer test-key"}


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The body's `error`, after checking the body against the spec's ErrorResponse."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    openapi.validate("ErrorResponse", body)
    return body["error"]


def set_faults(server: RunningServer, **faults: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/_ftpipe/faults", json=faults, headers=AUTH, timeout=10)
    assert response.status_code == 200
    return response.json()


# --- authentication ---------------------------------------------------------------------------


def test_missing_key_is_401(server: RunningServer) -> None:
    response = httpx.get(f"{server.base_url}/models", timeout=10)
    assert response.status_code == 401
    error = envelope(response)
    assert error["type"] == "invalid_request_error"
    assert "API key" in error["message"]
    assert "Authorization" in error["message"]
    assert error["param"] is None


def test_empty_bearer_is_401(server: RunningServer) -> None:
    response = httpx.get(
        f"{server.base_url}/models", headers={"Authorization": "Bearer"}, timeout=10
    )
    assert response.status_code == 401
    envelope(response)


def test_any_key_is_accepted_without_a_configured_key(server: RunningServer) -> None:
    response = httpx.get(
        f"{server.base_url}/models", headers={"Authorization": "Bearer whatever"}, timeout=10
    )
    assert response.status_code == 200
    openapi.validate("ListModelsResponse", response.json())


def test_configured_key(start_server: StartServer) -> None:
    server = start_server(api_key="secret")
    with pytest.raises(openai.AuthenticationError) as excinfo:
        strict_client(server.base_url, api_key="not-the-secret").models.list()
    assert excinfo.value.status_code == 401
    body = excinfo.value.response.json()
    openapi.validate("ErrorResponse", body)
    assert body["error"]["code"] == "invalid_api_key"
    assert "not-the-secret" not in body["error"]["message"]

    response = httpx.get(f"{server.base_url}/models", timeout=10)
    assert response.status_code == 401
    assert envelope(response)["code"] is None

    good = strict_client(server.base_url, api_key="secret")
    raw = good.models.with_raw_response.list()
    openapi.validate("ListModelsResponse", raw.http_response.json())
    assert raw.parse().data


def test_unknown_url_is_404_envelope(server: RunningServer) -> None:
    headers = {"Authorization": "Bearer k"}
    response = httpx.get(f"{server.base_url}/no/such/endpoint", headers=headers, timeout=10)
    assert response.status_code == 404
    error = envelope(response)
    assert error["type"] == "invalid_request_error"
    assert "Invalid URL" in error["message"]

    client = strict_client(server.base_url)
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.get("/no/such/endpoint", cast_to=object)
    assert "Invalid URL" in envelope(excinfo.value.response)["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""], ids=["not-json", "array", "empty"])
def test_unusable_json_body_envelope(server: RunningServer, body: bytes) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
        content=body,
        timeout=10,
    )
    assert response.status_code == 400
    error = envelope(response)
    assert "'None'" not in error["message"]
    assert not (error["param"] or "").isdigit()


# --- fault injection --------------------------------------------------------------------------


def test_always_429_with_retry_after(start_server: StartServer) -> None:
    server = start_server(faults=FaultSettings(rate_429=1.0, retry_after_s=0.01))
    response = httpx.get(
        f"{server.base_url}/models", headers={"Authorization": "Bearer k"}, timeout=10
    )
    assert response.status_code == 429
    assert float(response.headers["retry-after"]) == pytest.approx(0.01)
    assert response.headers["retry-after-ms"] == "10"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    error = envelope(response)
    assert error["code"] == "rate_limit_exceeded"

    with pytest.raises(openai.RateLimitError) as excinfo:
        strict_client(server.base_url).models.list()
    assert excinfo.value.status_code == 429
    # the health endpoint is outside the fault injection
    assert httpx.get(f"{server.url}/_ftpipe/health", timeout=10).json()["status"] == "ok"


def test_sdk_retries_through_injected_429s(start_server: StartServer) -> None:
    server = start_server(faults=FaultSettings(rate_429=0.3, seed=1))
    client = strict_client(server.base_url, max_retries=8)
    for _ in range(30):
        raw = client.models.with_raw_response.list()
        openapi.validate("ListModelsResponse", raw.http_response.json())
        assert raw.parse().data
    # and the same dice did throw some 429s: a client that does not retry sees them
    impatient = strict_client(server.base_url)
    outcomes = []
    for _ in range(30):
        try:
            impatient.models.list()
            outcomes.append("ok")
        except openai.RateLimitError:
            outcomes.append("429")
    assert "429" in outcomes
    assert "ok" in outcomes


def test_always_500(start_server: StartServer) -> None:
    server = start_server(faults=FaultSettings(rate_500=1.0))
    with pytest.raises(openai.InternalServerError) as excinfo:
        strict_client(server.base_url).models.list()
    assert excinfo.value.status_code == 500
    error = envelope(excinfo.value.response)
    assert error["type"] == "server_error"


def test_faults_change_at_run_time(server: RunningServer) -> None:
    client = strict_client(server.base_url)
    assert client.models.list().data
    assert (
        httpx.get(f"{server.url}/_ftpipe/faults", headers=AUTH, timeout=10).json()["rate_500"]
        == 0.0
    )

    assert set_faults(server, rate_500=1.0)["rate_500"] == 1.0
    assert (
        httpx.get(f"{server.url}/_ftpipe/faults", headers=AUTH, timeout=10).json()["rate_500"]
        == 1.0
    )
    with pytest.raises(openai.InternalServerError):
        client.models.list()

    changed = set_faults(server, rate_500=0.0, rate_429=1.0)
    assert changed["rate_429"] == 1.0
    with pytest.raises(openai.RateLimitError):
        client.models.list()

    set_faults(server, rate_429=0.0)
    assert client.models.list().data


def test_latency_keeps_calls_working(server: RunningServer) -> None:
    assert set_faults(server, latency_ms=30)["latency_ms"] == 30
    client = strict_client(server.base_url)
    for _ in range(3):
        raw = client.models.with_raw_response.retrieve("gpt-4o-mini")
        openapi.validate("Model", raw.http_response.json())
        assert raw.parse().id == "gpt-4o-mini"


def test_accepted_connections_disable_nagle(server: RunningServer) -> None:
    with httpx.Client() as http:  # keeps its connection open while the server's side is checked
        assert http.get(f"{server.url}/_ftpipe/health", timeout=10).status_code == 200
        connections = list(server.server.server_state.connections)
        sockets = [c.transport.get_extra_info("socket") for c in connections]  # type: ignore[attr-defined]
        assert sockets
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


def test_health(server: RunningServer) -> None:
    health = httpx.get(f"{server.url}/_ftpipe/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["root"] == str(server.root)


def test_invalid_fault_setting_is_a_client_error(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/_ftpipe/faults", json={"rate_500": 2}, headers=AUTH, timeout=10
    )
    assert response.status_code in (400, 422)
    assert (
        httpx.get(f"{server.url}/_ftpipe/faults", headers=AUTH, timeout=10).json()["rate_500"]
        == 0.0
    )
