"""Shared fixtures: an isolated environment, a live local server, and strict SDK clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from ftpipe.local_api.server import RunningServer, start_in_thread
from ftpipe.settings import FaultSettings, LocalApiSettings

DATA = Path(__file__).parent / "data"
SAMPLES = Path(__file__).parent.parent / "data" / "samples"
ISOLATED_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "FTPIPE_BACKEND",
    "FTPIPE_LOCAL_API_KEY",
    "FTPIPE_LOCAL_JOB_SPEED",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test ever sees a real key or endpoint; state goes to a fresh FTPIPE_HOME."""
    for name in ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("FTPIPE_FAULT_"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "ftpipe-home"
    monkeypatch.setenv("FTPIPE_HOME", str(home))
    return home


StartServer = Callable[..., RunningServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start local servers on free loopback ports; all are stopped after the test."""
    started: list[RunningServer] = []

    def start(
        root: Path | None = None, *, faults: FaultSettings | None = None, **local: object
    ) -> RunningServer:
        running = start_in_thread(
            root or tmp_path / "server-state",
            local=LocalApiSettings(**local),
            faults=faults or FaultSettings(),
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def server(start_server: StartServer) -> RunningServer:
    return start_server()


def strict_client(base_url: str, **kwargs: object) -> openai.OpenAI:
    """The official SDK, validating every response against its own types."""
    options: dict = {"api_key": "test-key", "max_retries": 0, **kwargs}
    return openai.OpenAI(base_url=base_url, _strict_response_validation=True, **options)


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return strict_client(server.base_url)


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
    return path


def qa_examples(count: int, *, system: str | None = None) -> list[dict]:
    """`count` distinct question/answer examples in chat format."""
    examples = []
    for index in range(count):
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages += [
            {"role": "user", "content": f"What is the code word number {index}?"},
            {"role": "assistant", "content": f"The code word number {index} is word-{index}."},
        ]
        examples.append({"messages": messages})
    return examples
