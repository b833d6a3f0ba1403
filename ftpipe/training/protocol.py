"""The files through which the server and a training worker talk, and nothing else.

The worker only appends whole lines (events.jsonl, checkpoints.jsonl, metrics.csv) or replaces
files atomically (status.json); the server only writes spec.json and control.json. A reader
ignores a last line without its newline (a write in progress). No torch, no FastAPI here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from ftpipe.atomic import write_text_atomically

SPEC = "spec.json"
STATUS = "status.json"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
METRICS = "metrics.csv"
CONTROL = "control.json"
LOG = "worker.log"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"

State = Literal["queued", "running", "succeeded", "failed", "cancelled", "paused"]
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "paused"})
METRIC_KEYS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)
# The stand-in's result file columns (ftpipe/local_api/jobs.py); valid_* only with validation.
CSV_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy")
CSV_VALID_COLUMNS = ("valid_loss", "valid_mean_token_accuracy")


def append_line(path: Path, line: str) -> None:
    """Append one whole line in a single write, so readers see all of it or none of it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[str]:
    """Complete lines of an append-only file (a trailing partial line is left for later)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [line for line in lines[:-1] if line.strip()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


def event(
    message: str,
    *,
    level: Literal["info", "warn", "error"] = "info",
    kind: Literal["message", "metrics"] = "message",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAI fine_tuning.job.event without id/object (the server adds those)."""
    return {
        "created_at": int(time.time()),
        "level": level,
        "message": message,
        "type": kind,
        "data": data or {},
    }


def append_event(job_dir: Path, message: str, **kwargs: Any) -> None:
    append_line(Path(job_dir) / EVENTS, json.dumps(event(message, **kwargs)))


def write_status(job_dir: Path, status: dict[str, Any]) -> None:
    write_text_atomically(Path(job_dir) / STATUS, json.dumps(status, indent=2))


def read_status(job_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(job_dir) / STATUS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def request(job_dir: Path, action: Literal["cancel", "pause"]) -> None:
    """What the server calls to cancel or pause a running job."""
    write_text_atomically(Path(job_dir) / CONTROL, json.dumps({"action": action}))


def requested_action(job_dir: Path) -> str | None:
    """The action in control.json, if any."""
    try:
        return json.loads((Path(job_dir) / CONTROL).read_text(encoding="utf-8")).get("action")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def error_object(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's job `error`: {code, message, param}."""
    return {"code": code, "message": message, "param": param}


def pid_alive(pid: int | None) -> bool:
    """Whether a worker process still exists (the server fails a 'running' job whose is gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
