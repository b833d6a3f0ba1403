"""A real `prefect server start` on loopback and `ftpipe serve` beside it, for deployment tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ftpipe.registry import JobRecord, default_registry
from tests.conftest import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
RETRY_STATUSES = frozenset({429, 502, 503})
RETRIES = 6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(**extra: str) -> dict[str, str]:
    """The test process's environment without keys, endpoints or Prefect settings."""
    dropped = ("PREFECT_", "OPENAI_", "AZURE_OPENAI_", "FTPIPE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        FTPIPE_ENV_FILE=os.devnull,
        FTPIPE_LOCAL_ENGINE="stand-in",  # pipeline tests; real training has tests of its own
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        **extra,
    )
    return env


def wait_until(check: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    """Poll `check` until it returns something truthy; name what never came, with the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s; log tail:\n{tail}")


class Process:
    """A background command with its output in a log file, stopped as a process group."""

    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
    ) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"exited with {self.popen.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._out.close()


class PrefectServer:
    """`prefect server start` with its own PREFECT_HOME (SQLite) on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.url}/api"
        env = clean_environment(
            PREFECT_HOME=str(folder / "prefect-home"),
            PREFECT_UI_API_URL=self.api_url,
            # Fewer runs scheduled ahead (100 by default) keeps SQLite writes short on 2 cores.
            PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="5",
            # A busy SQLite file makes requests wait instead of answering 503 after 10 s.
            PREFECT_SERVER_DATABASE_TIMEOUT="60",
        )
        command = [sys.executable, "-m", "prefect", "server", "start"]
        self.process = Process(
            [*command, "--host", "127.0.0.1", "--port", str(port)], env, folder / "server.log"
        )
        self.api = httpx.Client(base_url=self.api_url, timeout=30)
        try:
            wait_until(self._healthy, 180, "the Prefect server's health check", self.process.log)
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        self.process.check_alive()
        return self.api.get("/health").status_code == 200

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST as Prefect's own clients do: 429/502/503 (a busy SQLite) are tried again."""
        for attempt in range(RETRIES):
            response = self.api.post(path, json=body)
            if response.status_code not in RETRY_STATUSES or attempt == RETRIES - 1:
                return response
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def deployments(self) -> list[dict[str, Any]]:
        response = self.post("/deployments/filter", {})
        response.raise_for_status()
        return response.json()

    def flow_run(self, run_id: str) -> dict[str, Any]:
        response = self.api.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def runs_with(self, description: str) -> list[dict[str, Any]]:
        """Top-level runs whose `description` parameter is this one (subflows have none)."""
        response = self.post("/flow_runs/filter", {})
        response.raise_for_status()
        return [r for r in response.json() if r["parameters"].get("description") == description]

    def wait_for_run(self, run_id: str, timeout: float, log: Path) -> dict[str, Any]:
        """The run once it reached a terminal state."""

        def finished() -> dict[str, Any] | None:
            run = self.flow_run(run_id)
            return run if run["state_type"] in TERMINAL_STATES else None

        return wait_until(finished, timeout, f"flow run {run_id} finishing", log)

    def stop(self) -> None:
        self.api.close()
        self.process.stop()


def start_serve(server: PrefectServer, folder: Path, home: Path, expected: int) -> Process:
    """`ftpipe serve` against `server`, returned once all `expected` deployments exist."""
    env = clean_environment(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(folder / "serve-prefect-home"),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        FTPIPE_HOME=str(home),
    )
    command = [sys.executable, "-c", "from ftpipe.cli import run; run()", "serve"]
    # Runs start in the serve process's folder: relative outputs (data/processed) land there.
    serve = Process(command, env, folder / "serve.log", cwd=folder)

    def registered() -> bool:
        serve.check_alive()
        return len(server.deployments()) >= expected

    try:
        wait_until(registered, 120, "ftpipe serve registering its deployments", serve.log)
    except BaseException:
        serve.stop()
        raise
    return serve


def unique_csv_folder(folder: Path) -> Path:
    """The sample FAQ plus one row no other test has, so the run makes a dataset of its own."""
    folder.mkdir(parents=True)
    target = folder / "faq.csv"
    shutil.copy(SAMPLES / "csv" / "faq.csv", target)
    marker = uuid.uuid4().hex[:8]
    with target.open("a", encoding="utf-8") as out:
        out.write(f'"What is the marker of run {marker}?","The marker is {marker}."\n')
    return folder


def job_described(home: Path, description: str, monkeypatch: pytest.MonkeyPatch) -> JobRecord:
    """The one job in the registry under `home` that carries this description."""
    monkeypatch.setenv("FTPIPE_HOME", str(home))
    [record] = [r for r in default_registry().jobs() if r.description == description]
    return record
