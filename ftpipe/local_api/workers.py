"""Training worker processes of this server: starting, watching and stopping them by pid.

A worker runs `python -m ftpipe.training.worker <job_dir>` in a session of its own, so it outlives
a server that stops; any server on the same store can follow it from its pid, host and process
start time (a reused pid is not mistaken for it). Only the server that started a worker knows
its exit code, and only while its supervisor runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import ftpipe
from ftpipe.training import protocol

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
HOST = socket.gethostname()
_lock = threading.Lock()
_children: dict[int, tuple[subprocess.Popen, str]] = {}  # pid -> (process, owner token)
_live_owners: set[str] = set()


def register_owner(token: str) -> None:
    with _lock:
        _live_owners.add(token)


def release_owner(token: str) -> None:
    """A stopped supervisor's workers keep running; their deaths become 'unexplained'."""
    with _lock:
        _live_owners.discard(token)


def reap() -> None:
    """Collect finished children (no zombies that look alive)."""
    with _lock:
        for process, _owner in list(_children.values()):
            process.poll()


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def alive(worker: dict[str, Any] | None) -> bool:
    """Whether the worker a claim names still runs (a claim from another host counts as alive)."""
    if not worker or not worker.get("pid"):
        return False
    if worker.get("host") != HOST:
        return True
    pid = int(worker["pid"])
    with _lock:
        child = _children.get(pid)
    if child is not None:
        return child[0].poll() is None
    if not protocol.pid_alive(pid) or _zombie(pid):
        return False
    start = process_start(pid)
    return start is None or worker.get("start") in (None, start)


def exit_code(worker: dict[str, Any]) -> int | None:
    """The exit code of a finished worker this process started under a supervisor still
    running; None when unknown (another process started it, or its supervisor stopped)."""
    if worker.get("host") != HOST:
        return None
    with _lock:
        child = _children.get(int(worker["pid"]))
        if child is None or child[1] not in _live_owners:
            return None
    return child[0].poll()


def spawn(job_dir: Path, owner: str, *, threads: int) -> dict[str, Any]:
    """Start a worker on `job_dir`; returns its claim {pid, host, start, owner, server_pid}."""
    package_parent = str(Path(ftpipe.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        **OFFLINE,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": package_parent + (os.pathsep + path if path else ""),
    }
    with (job_dir / protocol.LOG).open("ab") as log:
        process = subprocess.Popen(  # our own module, no shell
            [sys.executable, "-m", "ftpipe.training.worker", str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=job_dir,
            start_new_session=True,
        )
    with _lock:
        _children[process.pid] = (process, owner)
    return {
        "pid": process.pid,
        "host": HOST,
        "start": process_start(process.pid),
        "owner": owner,
        "server_pid": os.getpid(),
    }


def send(worker: dict[str, Any], signum: int) -> None:
    """Signal a worker by its pid, only when it is still the process the claim names."""
    if worker.get("host") != HOST or not alive(worker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(worker["pid"]), signum)


def log_tail(job_dir: Path, chars: int = 600) -> str:
    try:
        text = (job_dir / protocol.LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


SIGKILL = -signal.SIGKILL
