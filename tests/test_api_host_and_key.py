"""The local server answers loopback names only, and the in-process one demands its own key."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ftpipe.client import LOCAL_PLACEHOLDER_KEY, make_client
from ftpipe.local_api import server as local_server
from ftpipe.local_api.server import RunningServer, discovery_path, local_endpoint, start_in_thread
from ftpipe.settings import LocalApiSettings, get_settings
from tests import openapi
from tests.conftest import StartServer, strict_client, write_jsonl

AUTH = {"Authorization": "Bearer test-key"}
SECRET_LINE = "the-secret-training-line"


@pytest.fixture(autouse=True)
def stop_in_process_servers() -> Iterator[None]:
    """Servers that make_client starts in this process are stopped after each test."""
    before = {id(running) for running in local_server._running.values()}
    yield
    for running in list(local_server._running.values()):
        if id(running) not in before:
            running.stop()


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The body's `error`, after checking the body against the spec's ErrorResponse."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    openapi.validate("ErrorResponse", body)
    return body["error"]


def uploaded_file(server: RunningServer, tmp_path: Path) -> str:
    lines = [{"messages": [{"role": "user", "content": SECRET_LINE}]}]
    path = write_jsonl(tmp_path / "secret.jsonl", lines)
    return strict_client(server.base_url).files.create(file=path.open("rb"), purpose="batch").id


# --- Host header ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8765",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "[::2]",
        "10.0.0.1",
        "localhost:http",
        "[::1",
        ".localhost",
        "",
    ],
)
def test_foreign_host_is_refused_in_the_envelope(server: RunningServer, host: str) -> None:
    response = httpx.get(f"{server.base_url}/models", headers={**AUTH, "Host": host}, timeout=10)
    assert response.status_code == 400
    error = envelope(response)
    assert error["code"] == "invalid_host"
    assert error["type"] == "invalid_request_error"
    assert repr(host) in error["message"] and "DNS rebinding" in error["message"]
    assert "gpt-4o-mini" not in response.text


def test_foreign_host_touches_nothing(server: RunningServer, tmp_path: Path) -> None:
    file_id = uploaded_file(server, tmp_path)
    evil = {**AUTH, "Host": f"evil.example:{server.url.rsplit(':', 1)[1]}"}
    with httpx.Client(base_url=server.url, headers=evil, timeout=10) as http:
        answers = [
            http.get("/v1/files"),
            http.get(f"/v1/files/{file_id}/content"),
            http.delete(f"/v1/files/{file_id}"),
            http.post("/_ftpipe/faults", json={"rate_500": 1.0}),
            http.get("/_ftpipe/health"),
        ]
    for response in answers:
        assert response.status_code == 400
        assert envelope(response)["code"] == "invalid_host"
        assert file_id not in response.text and SECRET_LINE not in response.text
        assert str(server.root) not in response.text
    client = strict_client(server.base_url)
    assert SECRET_LINE in client.files.content(file_id).text  # not deleted
    assert httpx.get(f"{server.url}/_ftpipe/faults", headers=AUTH, timeout=10).json()[
        "rate_500"
    ] == (0.0)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8765",
        "LocalHost:1",
        "localhost.",
        "app.localhost:99",
        "127.0.0.1",
        "127.1.2.3:80",
        "[::1]",
        "[::1]:8765",
        "::1",
    ],
)
def test_loopback_names_are_accepted(server: RunningServer, host: str) -> None:
    response = httpx.get(f"{server.base_url}/models", headers={**AUTH, "Host": host}, timeout=10)
    assert response.status_code == 200
    openapi.validate("ListModelsResponse", response.json())


def test_http_1_0_without_host_is_accepted(server: RunningServer) -> None:
    """Browsers always send Host; a local program without one could reach the socket anyway."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.0\r\nAuthorization: Bearer test-key\r\n\r\n")
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"200"
    openapi.validate("ListModelsResponse", json.loads(body))


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_ipv4_loopback_url_works_through_the_sdk(server: RunningServer, name: str) -> None:
    base_url = server.base_url.replace("127.0.0.1", name)
    assert strict_client(base_url).models.list().data


def test_ipv6_loopback_url_works_through_the_sdk(tmp_path: Path) -> None:
    if not ipv6_loopback_available():
        pytest.skip("this machine has no IPv6 loopback")
    running = start_in_thread(tmp_path / "v6", host="::1", local=LocalApiSettings())
    try:
        assert running.url.startswith("http://[::1]:")
        assert strict_client(running.base_url).models.list().data
    finally:
        running.stop()


# --- the in-process server's key --------------------------------------------------------------


def test_in_process_server_demands_its_own_key(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    assert client.models.list().data
    key = client.api_key
    assert key not in (LOCAL_PLACEHOLDER_KEY, "test-key") and len(key) >= 32
    for wrong in (LOCAL_PLACEHOLDER_KEY, "test-key", key[:-1]):
        with pytest.raises(openai.AuthenticationError) as excinfo:
            strict_client(str(client.base_url), api_key=wrong).models.list()
        body = excinfo.value.response.json()
        openapi.validate("ErrorResponse", body)
        assert body["error"]["code"] == "invalid_api_key"
    response = httpx.get(f"{client.base_url}models", timeout=10)
    assert response.status_code == 401 and envelope(response)["code"] is None
    assert make_client().api_key == key  # one key for the life of the server
    out, err = capfd.readouterr()
    assert key not in caplog.text and key not in out + err
    assert key not in repr(local_endpoint(get_settings()))
    assert key not in repr(local_server._running[get_settings().state_dir("local_api")])


def test_each_in_process_server_draws_a_new_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = make_client().api_key
    monkeypatch.setenv("FTPIPE_HOME", str(tmp_path / "other-home"))
    second = make_client()
    assert second.api_key != first
    assert second.models.list().data


def test_configured_local_key_is_used_by_the_in_process_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_API_KEY", "configured-local-secret")
    client = make_client()
    assert client.api_key == "configured-local-secret"
    assert client.models.list().data
    with pytest.raises(openai.AuthenticationError):
        strict_client(str(client.base_url), api_key="test-key").models.list()


def test_announced_foreground_server_keeps_accepting_any_key(start_server: StartServer) -> None:
    """`ftpipe local-api` demands no key unless FTPIPE_LOCAL_API_KEY; the factory reaches it."""
    root = get_settings().state_dir("local_api")
    foreground = start_server(root)
    discovery_path(root).write_text(json.dumps({"url": foreground.url, "root": str(root)}))
    client = make_client()
    assert str(client.base_url).startswith(foreground.url)
    assert client.api_key == LOCAL_PLACEHOLDER_KEY
    assert client.models.list().data
    assert strict_client(foreground.base_url, api_key="anything").models.list().data


def test_an_announcement_left_by_a_killed_server_is_removed_quietly(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`kill -9` of `ftpipe local-api` leaves server.json behind; the next command removes it
    (its process is gone) and starts its own server without a warning."""
    root = get_settings().state_dir("local_api")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    marker = discovery_path(root)
    marker.write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": int(ended.stdout), "root": str(root)})
    )
    with caplog.at_level(logging.INFO, logger="ftpipe"):
        client = make_client()
    assert not str(client.base_url).startswith("http://127.0.0.1:9/")
    assert not marker.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("has ended" in r.getMessage() for r in caplog.records)
