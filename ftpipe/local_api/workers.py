"""Training worker processes of this server: starting, watching and stopping them by pid.

A worker runs `python -m ftpipe.training.worker <job_dir>` in a session of its own, so it outlives
a server that stops; any server on the same store can follow it from its pid, host and process
start time (a reused pid is not mistaken for it). Only the server that started a worker knows
its exit code, and only while its supervisor runs.

How a worker starts is pluggable (`LocalApiSettings.training_executor`): "process" spawns it
here; "prefect" submits a flow run of a `train_model` deployment to GPU machines, through
`ftpipe.flows.train_model`, imported only then (the server runs without Prefect otherwise). A
claim names its executor, and following, signalling and explaining it go to that executor.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import ftpipe
from ftpipe.settings import LocalApiSettings
from ftpipe.training import protocol

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
HOST = socket.gethostname()
_lock = threading.Lock()
_children: dict[int, tuple[subprocess.Popen, str]] = {}  # pid -> (process, owner token)
_live_owners: set[str] = set()
PLUGINS = {"prefect": "ftpipe.flows.train_model"}  # executor -> module, imported when used


def _plugin(worker: dict[str, Any]) -> Any | None:
    """The executor module of a claim; None for a worker process of this store's hosts."""
    name = worker.get("executor", "process")
    return None if name == "process" else importlib.import_module(PLUGINS[name])


def start(job_dir: Path, owner: str, local: LocalApiSettings, *, key: str, tags: list[str]) -> dict:
    """Start the job's worker the configured way; returns the claim recorded in the job row.
    Raises RuntimeError (the plugin's ExecutorError) when it cannot be started."""
    if local.training_executor == "process":
        return spawn(job_dir, owner, threads=local.training_threads)
    plugin = importlib.import_module(PLUGINS[local.training_executor])
    claim = plugin.submit(job_dir, deployment=local.training_deployment, key=key, tags=tags)
    stale = local.training_heartbeat_timeout_s
    return {**claim, "owner": owner, "server_host": HOST, "stale_after_s": stale}


def describe(worker: dict[str, Any]) -> str:
    plugin = _plugin(worker)
    return plugin.describe(worker) if plugin else f"worker process {worker.get('pid')}"


def owns_status(worker: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether status.json belongs to this claim's worker (not to an earlier one of the job)."""
    plugin = _plugin(worker)
    if plugin:
        return bool(plugin.owns_status(worker, status))
    return status.get("pid") in (None, worker.get("pid"))


def failure(worker: dict[str, Any]) -> str | None:
    """Why a worker gone without a final status failed, when its executor knows (a failed flow
    run); None for a death nobody can explain (restarted from its last checkpoint)."""
    plugin = _plugin(worker)
    return plugin.failure(worker) if plugin else None


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
    plugin = _plugin(worker) if worker else None
    if plugin:
        return bool(plugin.alive(worker))
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
    if worker.get("executor", "process") != "process" or worker.get("host") != HOST:
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
    """Signal a worker by its pid, only when it is still the process the claim names; a flow
    run is cancelled instead (once: its worker gets SIGTERM from Prefect)."""
    plugin = _plugin(worker)
    if plugin:
        if not worker.get("cancel_sent"):
            worker["cancel_sent"] = True
            plugin.cancel(worker)
        return
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
