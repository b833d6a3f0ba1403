"""The long-lived local Prefect server that ad-hoc runs share: started once under a lock, found
again, adopted after its starter was killed, stopped as a process group, failures in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ftpipe.flows.prefect_api import ANNOUNCE_FILE, find_server, stop_server

pytestmark = pytest.mark.slow

ENSURE = (
    "from ftpipe.flows.prefect_api import ensure_server\n"
    "from ftpipe.errors import InputError\n"
    "try:\n"
    "    print(ensure_server().url, flush=True)\n"
    "except InputError as error:\n"
    "    print(f'error: {error}', flush=True)\n"
    "    raise SystemExit(1)\n"
)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh Prefect home whose server (if any) is stopped after the test."""
    folder = tmp_path / "prefect-home"
    yield folder
    stop_server(folder)


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | extra


def ensure(home: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENSURE],
        env=environment(home, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def prefect_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ftpipe prefect ARGS` against this Prefect home."""
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", "prefect", *args],
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_first_runs_share_one_server_and_later_runs_find_it(home: Path) -> None:
    first, second = ensure(home), ensure(home)
    urls = {first.communicate(timeout=300)[0].strip(), second.communicate(timeout=300)[0].strip()}
    assert first.returncode == 0 and second.returncode == 0
    assert len(urls) == 1  # the lock made the second wait for the first one's server
    [url] = urls
    server = find_server(home)
    assert server is not None and server.url == url
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200

    again = ensure(home)
    assert again.communicate(timeout=60)[0].strip() == url  # found, not started
    shown = prefect_cli(home, "status")
    assert shown.returncode == 0 and server.ui_url in shown.stdout
    stopped = prefect_cli(home, "stop")  # `ftpipe prefect stop`: the whole process group goes
    assert stopped.returncode == 0 and f"pid {server.pid}" in stopped.stdout
    assert not group_alive(server.pid)
    assert not (home / ANNOUNCE_FILE).exists()
    assert prefect_cli(home, "status").returncode == 3


def test_a_starter_killed_mid_start_leaves_a_server_the_next_run_adopts(home: Path) -> None:
    starter = ensure(home)
    announce = home / ANNOUNCE_FILE
    deadline = time.monotonic() + 60
    while not announce.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert announce.exists()
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    pid = json.loads(announce.read_text())["pid"]

    follower = prefect_cli(home, "start")  # `ftpipe prefect start` finds the orphan
    assert follower.returncode == 0, follower.stderr
    assert json.loads(announce.read_text())["pid"] == pid  # adopted, not a second server
    assert json.loads(announce.read_text())["url"] in follower.stdout
    stop_server(home)
    assert not group_alive(pid)


def test_a_server_that_cannot_start_is_one_line_and_leaves_nothing(home: Path) -> None:
    broken = ensure(home, PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:////proc/no/db")
    out, err = broken.communicate(timeout=300)
    assert broken.returncode == 1
    assert out.startswith("error: prefect server start: exited before answering; see ")
    assert "Traceback" not in out + err
    assert not (home / ANNOUNCE_FILE).exists()


def test_a_configured_api_url_is_used_and_nothing_is_started(home: Path) -> None:
    code = (
        "from ftpipe.flows.prefect_api import local_prefect\n"
        "with local_prefect() as url:\n"
        "    print(url)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment(home, PREFECT_API_URL="http://127.0.0.1:9/api"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "http://127.0.0.1:9/api"
    assert not (home / ANNOUNCE_FILE).exists()
