"""Shared fixtures: an isolated environment, a live local server, and strict SDK clients."""

from __future__ import annotations

import os
import tempfile

os.environ["FTPIPE_ENV_FILE"] = os.devnull  # a developer's .env must never reach a test
# The fast stand-in engine for the pipeline tests, from the start (module-scoped fixtures run
# before the autouse one below); the real engine's tests ask for it themselves.
os.environ["FTPIPE_LOCAL_ENGINE"] = "stand-in"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry from test servers
# A Prefect home of the session's own: a local Prefect server that a test makes ftpipe start
# never touches the developer's ~/.prefect, and is stopped when the session ends.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="ftpipe-tests-prefect-")

import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from ftpipe.local_api.server import RunningServer, start_in_thread
from ftpipe.settings import FaultSettings, LocalApiSettings
from ftpipe.training import protocol
from ftpipe.training.spec import TrainingSpec

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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist's `--dist loadgroup` a module's tests stay on one worker, so its
    module-scoped servers start once; modules that share a costly session fixture name one
    group (`pytest.mark.xdist_group`) and go together."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the session's long-lived local Prefect server, if a test made ftpipe start one."""
    from ftpipe.flows.prefect_api import stop_server

    stop_server(Path(os.environ["PREFECT_HOME"]))


def _loopback(host: object) -> bool:
    if host in (None, "localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to this machine only: any other address is refused before a packet leaves."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: object) -> None:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple)
        if inet and not _loopback(address[0]):
            raise ConnectionRefusedError(f"tests may only reach loopback, not {address[0]}")

    def connect(sock: socket.socket, address: object) -> None:
        check(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if not _loopback(host):
            raise socket.gaierror(f"tests may only resolve loopback names, not {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


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
    # The fast stand-in engine unless a test asks for the real one (engine="real").
    monkeypatch.setenv("FTPIPE_LOCAL_ENGINE", "stand-in")
    return home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama folder (tests/tiny_model.py), built once per session."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


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


def require_system(available: bool, what: str) -> None:
    """A test that needs a system program skips without it, except where `.ci/run` installed the
    programs (FTPIPE_REQUIRE_SYSTEM_TESTS=1): there a missing program is a failure."""
    if available:
        return
    if os.environ.get("FTPIPE_REQUIRE_SYSTEM_TESTS") == "1":
        pytest.fail(f"{what} is required here (FTPIPE_REQUIRE_SYSTEM_TESTS=1) but missing")
    pytest.skip(f"{what} is not installed (the Debian package that .ci/run installs)")


@pytest.fixture(scope="session")
def smollm2_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One training worker run on the embedded model, which converts it on first use: the
    models folder it filled, the job folder and the worker's output. Shared by every test that
    needs the converted SmolLM2, so the session converts it once."""
    root = tmp_path_factory.mktemp("smollm2")
    models = root / "models"
    example = {
        "messages": [
            {"role": "user", "content": "Classify: I loved it."},
            {"role": "assistant", "content": "positive"},
        ]
    }
    (root / "train.jsonl").write_text(json.dumps(example) + "\n")
    job_dir = root / "job"
    job_dir.mkdir()
    spec = TrainingSpec(
        job_id="ftjob-smollm2",
        base_model="smollm2-135m-instruct",
        models_dir=models,
        training_file=root / "train.jsonl",
        n_epochs=1,
        batch_size=1,
        max_seq_length=128,
        device="cpu",
    )
    (job_dir / protocol.SPEC).write_text(spec.to_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ftpipe.training.worker", str(job_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    return models, job_dir, done.stdout[-3000:] + done.stderr[-3000:]


def converted_smollm2(smollm2_run: tuple[Path, Path, str], models_dir: Path) -> None:
    """Put the session's converted SmolLM2 where a server with this models folder finds it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "smollm2-135m-instruct").symlink_to(smollm2_run[0] / "smollm2-135m-instruct")
