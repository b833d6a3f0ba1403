"""Training on a work pool of GPU machines: the `train_model` flow and the Prefect executor.

The flow runs `python -m ftpipe.training.worker <job_dir>` on the machine of the Prefect worker
that picked the run, streams the job's events into the run log and its steps into a progress
artifact. The job folder is the same file protocol as on one machine, so it must lie on storage
that the server and every GPU machine reach at the same absolute path (FTPIPE_HOME).

The local server imports this module only when `FTPIPE_LOCAL_TRAINING_EXECUTOR=prefect`
(`ftpipe.local_api.workers`): `submit` starts a flow run, `alive`, `owns_status`, `failure` and
`cancel` follow and stop it through the flow run's state and the heartbeat file `executor.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.runtime import flow_run as current_run
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Cancelling

from ftpipe.atomic import write_text_atomically
from ftpipe.training import protocol

HEARTBEAT = "executor.json"  # written by the flow: its run id, host, the worker's pid, updated_at
POLL_S = 1.0
STOP_WAIT_S = 60.0  # a stopped flow gives its worker this long to leave a final status
STATE_CACHE_S = 2.0  # the server asks the Prefect API about a run at most this often
LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
RUNNING_TYPES = frozenset(
    {
        StateType.SCHEDULED,
        StateType.PENDING,
        StateType.RUNNING,
        StateType.PAUSED,
        StateType.CANCELLING,  # its worker still runs until it leaves a cancelled status
    }
)


class ExecutorError(RuntimeError):
    """The Prefect executor cannot start a run (no API, no such deployment); said plainly."""


class TrainingFailed(RuntimeError):
    """The job failed: the flow run fails with the job's own error message."""


# The flow, on a GPU machine


@flow(
    name="train_model",
    description="Train one real fine-tuning job of the local server (its job folder) here.",
    retries=0,
)
def train_model(job_dir: str) -> dict[str, Any]:
    """Run the training worker on `job_dir` to its final status; a failed job fails the run."""
    folder = Path(job_dir)
    logger = get_run_logger()
    if not (folder / protocol.SPEC).is_file():
        raise TrainingFailed(
            f"{folder / protocol.SPEC} is not there: the job folder must be on storage this "
            f"machine ({socket.gethostname()}) reaches at the same path as the server "
            "(FTPIPE_HOME on shared storage)"
        )
    offset = len(protocol.read_lines(folder / protocol.EVENTS))  # earlier runs of this job
    child = _start_worker(folder)
    beat = _heartbeat(folder, child.pid)
    logger.info("Training worker %s started on %s for %s", child.pid, socket.gethostname(), folder)
    progress = _Progress(folder)
    try:
        while child.poll() is None:
            beat()
            offset = _stream(folder, offset, logger)
            progress.update()
            time.sleep(POLL_S)
    except BaseException:  # cancelled (SIGTERM) or crashed: the worker stops at its next step
        _stop(child)
        raise
    finally:
        _stream(folder, offset, logger)
        progress.update()
    status = _final_status(folder, child)
    state = status["state"]
    summary = {k: status.get(k) for k in ("state", "step", "trained_tokens", "checkpoint")}
    if state == "failed":
        error = status.get("error") or {}
        raise TrainingFailed(f"{error.get('code')}: {error.get('message')}")
    if state == "cancelled":
        return Cancelled(message=f"fine-tuning job cancelled at step {status.get('step')}")
    logger.info("Training ended: %s", summary)
    return summary


def _start_worker(folder: Path) -> subprocess.Popen:
    """The worker in this flow's process group: a cancelled run takes it down with it."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    (folder / protocol.STATUS).unlink(missing_ok=True)
    with (folder / protocol.LOG).open("ab") as log:
        return subprocess.Popen(  # our own module, no shell
            [sys.executable, "-m", "ftpipe.training.worker", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )


def _heartbeat(folder: Path, pid: int) -> Any:
    """executor.json every few seconds: which run owns the job now, and that it is alive."""
    record = {
        "flow_run_id": str(current_run.get_id() or ""),
        "host": socket.gethostname(),
        "worker_pid": pid,
    }
    last = 0.0

    def beat(force: bool = False) -> None:
        nonlocal last
        if force or time.time() - last >= 5:
            last = time.time()
            payload = json.dumps({**record, "updated_at": last})
            write_text_atomically(folder / HEARTBEAT, payload)

    beat(force=True)
    return beat


def _stream(folder: Path, offset: int, logger: Any) -> int:
    """New lines of events.jsonl as run log lines; returns the new offset."""
    lines = protocol.read_lines(folder / protocol.EVENTS)
    for line in lines[offset:]:
        event = json.loads(line)
        logger.log(LEVELS.get(event.get("level"), logging.INFO), "%s", event.get("message", ""))
    return len(lines)


class _Progress:
    """A progress artifact of the job's steps (step / total_steps from status.json)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shown: float | None = None
        self.id = create_progress_artifact(0.0, description=f"Training steps of {folder.name}")

    def update(self) -> None:
        status = protocol.read_status(self.folder) or {}
        total, step = status.get("total_steps"), status.get("step") or 0
        if not total or not self.id:
            return
        value = round(min(100.0, 100.0 * step / total), 1)
        if value != self.shown:
            update_progress_artifact(
                self.id, value, description=f"{self.folder.name}: step {step}/{total}"
            )
            self.shown = value


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM (the worker cancels at its next step), then SIGKILL if it lingers."""
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)


def _final_status(folder: Path, child: subprocess.Popen) -> dict[str, Any]:
    """The worker's final status.json; one written here when it died without leaving one (as
    the server does for a local worker: SIGKILL reads as the out-of-memory killer)."""
    status = protocol.read_status(folder) or {}
    if status.get("pid") == child.pid and status.get("state") in protocol.FINAL_STATES:
        return status
    code = child.returncode
    if code == -signal.SIGKILL:
        error = protocol.error_object(
            "out_of_memory",
            "the training worker was killed (SIGKILL), most likely by the out-of-memory "
            "killer: try a smaller batch_size, max_seq_length or base model",
        )
    else:
        tail = _log_tail(folder)
        error = protocol.error_object(
            "training_failed",
            f"the training worker exited with code {code} without finishing: {tail}",
        )
    status = {**status, "state": "failed", "error": error, "pid": child.pid}
    status.update(estimated_finish=None, updated_at=int(time.time()))
    protocol.write_status(folder, status)
    return status


def _log_tail(folder: Path, chars: int = 300) -> str:
    try:
        return (folder / protocol.LOG).read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


# The executor, in the local server


def submit(job_dir: Path, *, deployment: str, key: str, tags: list[str]) -> dict[str, Any]:
    """A flow run of `deployment` for `job_dir`, not waited for; returns the claim's fields."""
    if not PREFECT_API_URL.value():
        raise ExecutorError(
            "the 'prefect' training executor needs PREFECT_API_URL (the Prefect server that "
            "the GPU machines' workers poll)"
        )
    try:
        run = run_deployment(
            deployment,
            parameters={"job_dir": str(job_dir)},
            timeout=0,
            idempotency_key=key,  # a submit repeated after a failed commit finds the same run
            tags=tags,
            as_subflow=False,
        )
    except Exception as error:
        raise ExecutorError(f"cannot start deployment {deployment!r}: {error}") from error
    return {
        "executor": "prefect",
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "deployment": deployment,
        "job_dir": str(job_dir),
        "submitted_at": time.time(),
    }


_states: dict[str, tuple[float, Any]] = {}


def _state(claim: dict[str, Any]) -> Any:
    """The flow run's state, asked at most every STATE_CACHE_S; None when the API fails."""
    run_id = claim["flow_run_id"]
    cached = _states.get(run_id)
    if cached and time.monotonic() - cached[0] < STATE_CACHE_S:
        return cached[1]
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
    except Exception:  # an API blip must not read as a dead worker
        logging.getLogger("ftpipe.local_api").warning("cannot read flow run %s", run_id)
        return None
    _states[run_id] = (time.monotonic(), state)
    return state


def _beat(claim: dict[str, Any]) -> dict[str, Any] | None:
    try:
        beat = json.loads((Path(claim["job_dir"]) / HEARTBEAT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return beat if beat.get("flow_run_id") == claim["flow_run_id"] else None


def alive(claim: dict[str, Any]) -> bool:
    """Running while its flow run is not terminal and its heartbeat (once started) is fresh."""
    state = _state(claim)
    if state is not None and state.type not in RUNNING_TYPES:
        return False
    beat = _beat(claim)
    if beat is not None and state is not None and state.type == StateType.RUNNING:
        return time.time() - float(beat["updated_at"]) < float(claim.get("stale_after_s", 300))
    return True


def owns_status(claim: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether status.json was written by this run's worker (not by an earlier run's)."""
    beat = _beat(claim)
    return beat is not None and status.get("pid") in (None, beat.get("worker_pid"))


def failure(claim: dict[str, Any]) -> str | None:
    """Why a run ended without a final status, when its state says it failed or crashed."""
    state = _state(claim)
    if state is None or state.type not in (StateType.FAILED, StateType.CRASHED):
        return None
    return (
        f"the training flow run {claim.get('flow_run_name')} ({claim['flow_run_id']}) ended "
        f"{state.type.value}: {state.message or 'no message'} (the job folder must be on storage "
        "the GPU machines reach at the same path)"
    )


def cancel(claim: dict[str, Any]) -> None:
    """Ask Prefect to cancel the run (its worker gets SIGTERM and leaves a cancelled status)."""
    state = _state(claim)
    if state is not None and state.type not in RUNNING_TYPES:
        return
    run_id = UUID(claim["flow_run_id"])
    with get_client(sync_client=True) as client:
        scheduled = state is not None and state.type == StateType.SCHEDULED
        client.set_flow_run_state(run_id, Cancelled() if scheduled else Cancelling(), force=True)
    _states.pop(claim["flow_run_id"], None)


def describe(claim: dict[str, Any]) -> str:
    return f"flow run {claim.get('flow_run_name')} ({claim['flow_run_id']})"
