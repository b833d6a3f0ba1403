"""The Prefect API that ad-hoc flow runs (CLI, facade, demo) report to.

Prefect's own fallback starts a temporary server for every process (9-20 s on two cores, a
timeout under load, an orphan after `kill -9`). ftpipe instead keeps ONE long-lived Prefect
server per Prefect home: the first ad-hoc run starts `prefect server start` on a free loopback
port as its own process group, announces it in `$PREFECT_HOME/ftpipe-server.json`, and every
later run finds it there (a health check, no start-up), so its UI shows every ad-hoc run too.
`ftpipe prefect status|start|stop` manage it. With PREFECT_API_URL set, that server is used and
nothing is started.

Example:
    >>> from ftpipe.flows.prefect_api import local_prefect
    >>> with local_prefect():
    ...     finetune(paths=["data/samples/csv"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from filelock import FileLock, Timeout

from ftpipe.atomic import write_text_atomically
from ftpipe.errors import InputError

log = logging.getLogger("ftpipe")

ANNOUNCE_FILE = "ftpipe-server.json"
START_TIMEOUT_S = 300.0  # generous: a first start migrates Prefect's database (minutes when busy)
HEALTH_TIMEOUT_S = 3.0
HOST = "127.0.0.1"


@dataclass(frozen=True)
class LocalPrefectServer:
    """A Prefect server ftpipe started: where it answers and which process group to stop."""

    url: str  # the API URL, ending in /api
    pid: int
    log_file: str

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api")


def prefect_home() -> Path:
    """Prefect's home folder (PREFECT_HOME, default ~/.prefect): its database lives there."""
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()).expanduser()


def configured_api_url() -> str | None:
    """The API URL the user configured (environment or Prefect profile), if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextmanager
def local_prefect() -> Iterator[str]:
    """Run the block's flows against the configured Prefect API, or ftpipe's local server."""
    configured = configured_api_url()
    if configured:
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = ensure_server()
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield server.url


def ensure_server(home: Path | None = None) -> LocalPrefectServer:
    """The announced live server, or a new one started under a lock (so two first runs on a
    fresh Prefect home never race its database set-up); failures are one InputError line."""
    home = home or prefect_home()
    running = find_server(home)
    if running:
        return running
    home.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(home / f"{ANNOUNCE_FILE}.lock", timeout=START_TIMEOUT_S + 30):
            return _adopt_starting(home) or _start(home)
    except Timeout as error:
        raise InputError(
            f"Prefect server in {home}", "another ftpipe process is still starting it"
        ) from error


def find_server(home: Path | None = None) -> LocalPrefectServer | None:
    """The server announced in this Prefect home, when its process lives and it answers."""
    server = _announced(home or prefect_home())
    if server and _group_alive(server.pid) and _healthy(server.url):
        return server
    return None


def stop_server(home: Path | None = None) -> LocalPrefectServer | None:
    """Stop the announced server's whole process group; None when none was announced."""
    home = home or prefect_home()
    server = _announced(home)
    if server is None:
        return None
    _kill_group(server.pid)
    (home / ANNOUNCE_FILE).unlink(missing_ok=True)
    return server


def _announced(home: Path) -> LocalPrefectServer | None:
    try:
        return LocalPrefectServer(**json.loads((home / ANNOUNCE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _adopt_starting(home: Path) -> LocalPrefectServer | None:
    """A server whose starter died (even by `kill -9`) before it answered: wait for it rather
    than start a second one; if it never answers, stop it so nothing is left behind."""
    server = _announced(home)
    if server is None or not _group_alive(server.pid):
        return None
    try:
        _wait_until_healthy(server, None)
    except InputError:
        _kill_group(server.pid)
        return None
    return server


def _start(home: Path) -> LocalPrefectServer:
    """`prefect server start` in its own session, announced at once, ready when it answers."""
    port = _free_port()
    url = f"http://{HOST}:{port}/api"
    log_file = home / "ftpipe-server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST]
    command += ["--port", str(port)]
    log.info("Starting a local Prefect server at %s (once; later runs reuse it)", url)
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_server_environment(home),
            start_new_session=True,  # its own process group: outlives this run, stops as one
        )
    server = LocalPrefectServer(url=url, pid=process.pid, log_file=str(log_file))
    # Announced before it answers, so a run killed while waiting leaves a server the next run
    # adopts (or stops), never an orphan nobody knows about.
    write_text_atomically(home / ANNOUNCE_FILE, json.dumps(asdict(server)))
    try:
        _wait_until_healthy(server, process)
    except BaseException:
        _kill_group(process.pid)
        (home / ANNOUNCE_FILE).unlink(missing_ok=True)
        raise
    log.info(
        "Local Prefect server ready: UI at %s (stop it with `ftpipe prefect stop`)", server.ui_url
    )
    return server


def _server_environment(home: Path) -> dict[str, str]:
    """The server's environment: this one, its home pinned, no telemetry from a loopback
    server, and a patient database (a busy SQLite file otherwise answers 503)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")
    return env


def _wait_until_healthy(
    server: LocalPrefectServer, process: subprocess.Popen[bytes] | None
) -> None:
    """Poll the health endpoint; a server that exits or never answers is one clear line."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        exited = process.poll() is not None if process else not _group_alive(server.pid)
        if exited:
            raise InputError(
                "prefect server start",
                f"exited before answering; see {server.log_file}",
            )
        if _healthy(server.url):
            return
        time.sleep(0.25)
    raise InputError(
        "prefect server start",
        f"did not answer within {START_TIMEOUT_S:.0f} s; see {server.log_file}",
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _kill_group(pid: int) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.1)


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" until reaped; reap it if it is our child.
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True
