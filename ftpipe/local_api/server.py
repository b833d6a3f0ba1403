"""Starting the local server: in a background thread of this process, or in the foreground.

A foreground server (`ftpipe local-api`) announces itself in `<FTPIPE_HOME>/local_api/server.json`
so other processes on the same state folder use it; otherwise each process starts its own
in-process server over the same SQLite store, which is safe for concurrent use. An in-process
server demands a random key of its own unless FTPIPE_LOCAL_API_KEY names one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from ftpipe.atomic import write_text_atomically
from ftpipe.local_api.app import create_app, shutdown_app
from ftpipe.settings import FaultSettings, LocalApiSettings, Settings

log = logging.getLogger("ftpipe")

DISCOVERY_FILE = "server.json"
_lock = threading.Lock()
_running: dict[Path, RunningServer] = {}


@dataclass
class RunningServer:
    """A server started by this process, and how to reach and stop it."""

    url: str
    root: Path
    server: uvicorn.Server
    thread: threading.Thread
    api_key: str | None = field(default=None, repr=False)  # None: any bearer key is accepted

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        shutdown_app(self.server.config.app)
        with _lock:
            if _running.get(self.root) is self:
                del _running[self.root]


def check_loopback(host: str) -> None:
    """The local server never listens beyond this machine."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the local server binds to loopback only; {host!r} is not a loopback address "
            "(use 127.0.0.1, ::1 or localhost)"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and without
    # it every small answer waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn(
    root: Path, local: LocalApiSettings | None, faults: FaultSettings | None
) -> uvicorn.Server:
    app = create_app(root, local, faults)
    # log_config=None: uvicorn must not re-run logging.dictConfig in a process that already has
    # handlers (Prefect's API log handlers would be flushed, seconds each, and shut down).
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", log_config=None
    )
    return uvicorn.Server(config)


def start_in_thread(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    local: LocalApiSettings | None = None,
    faults: FaultSettings | None = None,
) -> RunningServer:
    """Serve the API from a daemon thread; returns once it accepts connections."""
    sock = bind_socket(host, port)
    server = _uvicorn(root, local, faults)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="ftpipe-local-api", daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the local server failed to start on {_url(sock)}")
        threading.Event().wait(0.01)
    key = local.api_key.get_secret_value() if local and local.api_key else None
    return RunningServer(_url(sock), root, server, thread, key)


def discovery_path(root: Path) -> Path:
    return root / DISCOVERY_FILE


def _announced(root: Path) -> str | None:
    """The URL of a live foreground server on this state folder, if one announced itself."""
    marker = discovery_path(root)
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(info, dict) and _ended(info.get("pid")):
        # a server killed without its clean-up (kill -9, a crash): nothing to warn about
        with contextlib.suppress(OSError):
            marker.unlink()
        log.info("Removed %s: the server it names (process %s) has ended", marker, info["pid"])
        return None
    try:
        # 5 s: a busy 2-core machine missed a 2 s health check of a live server
        answer = httpx.get(f"{info['url']}/_ftpipe/health", timeout=5.0).json()
    except (ValueError, KeyError, TypeError, httpx.HTTPError) as error:
        log.warning("Ignoring %s: the server it names did not answer (%s)", marker, error)
        return None
    if answer.get("root") != str(root):
        log.warning("Ignoring %s: the server it names serves %s", marker, answer.get("root"))
        return None
    return info["url"]


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a client reaches the local server, and the key to send (None: any key will do)."""

    base_url: str
    api_key: str | None = field(repr=False)


def _with_own_key(local: LocalApiSettings) -> LocalApiSettings:
    """The in-process server's settings: FTPIPE_LOCAL_API_KEY if set, else a random key, so no
    other program on this machine (nor a web page) can use it without reading our memory."""
    if local.api_key is not None:
        return local
    return local.model_copy(update={"api_key": SecretStr(secrets.token_urlsafe(32))})


def local_endpoint(settings: Settings) -> LocalEndpoint:
    """The local server on this FTPIPE_HOME and its key, starting one in-process if needed."""
    root = settings.state_dir("local_api")
    with _lock:
        running = _running.get(root)
        if running is not None and running.thread.is_alive():
            return LocalEndpoint(running.base_url, running.api_key)
        announced = _announced(root)
        if announced:
            log.info(
                "Using the local OpenAI-compatible server at %s/v1 (state in %s)", announced, root
            )
            configured = settings.local.api_key
            return LocalEndpoint(
                f"{announced}/v1", configured.get_secret_value() if configured else None
            )
        running = start_in_thread(root, local=_with_own_key(settings.local), faults=settings.faults)
        _running[root] = running
    log.info(
        "No OPENAI_API_KEY set: started the local OpenAI-compatible server at %s (state in %s)",
        running.base_url,
        root,
    )
    return LocalEndpoint(running.base_url, running.api_key)


def local_base_url(settings: Settings) -> str:
    """The `/v1` URL of a local server on this FTPIPE_HOME, starting one in-process if needed."""
    return local_endpoint(settings).base_url


def _ended(pid: object) -> bool:
    """Whether the process that wrote an announcement is gone (it was written on this machine:
    the state folder is local)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but another user's
        return False
    return False


def _announce_when_started(server: uvicorn.Server, sock: socket.socket, marker: Path) -> None:
    """Write the discovery file once uvicorn accepts connections: announced earlier, another
    process's health check would be refused and it would start a second server."""
    while not server.started:
        if server.should_exit:
            return
        threading.Event().wait(0.01)
    url, root = _url(sock), marker.parent
    try:  # atomically: a reader never sees half a file (and starts a second server)
        write_text_atomically(
            marker, json.dumps({"url": url, "pid": os.getpid(), "root": str(root)})
        )
    except OSError as error:
        log.error(
            "Cannot announce the server in %s (%s): other processes start their own", marker, error
        )
    log.info("Local OpenAI-compatible server listening on %s/v1 (state in %s)", url, root)


def serve_forever(settings: Settings, host: str, port: int) -> None:
    """Serve in the foreground until interrupted, announced in the discovery file meanwhile."""
    root = settings.state_dir("local_api")
    server = _uvicorn(root, settings.local, settings.faults)  # settings checked before announcing
    sock = bind_socket(host, port)
    marker = discovery_path(root)
    announcer = threading.Thread(
        target=_announce_when_started, args=(server, sock, marker), daemon=True
    )
    announcer.start()
    # uvicorn re-raises SIGTERM after its shutdown; make that an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run(sockets=[sock])
    finally:
        server.should_exit = True
        announcer.join(timeout=5)  # so it cannot announce after the file is taken back
        shutdown_app(server.config.app)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(marker.read_text()).get("pid") == os.getpid():
                marker.unlink()
