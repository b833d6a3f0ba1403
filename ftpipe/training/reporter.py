"""The worker's side of the file protocol: status, events, result CSV and checkpoint records.

One object owns every write, so the files agree with each other (a checkpoint record carries the
metrics of its step, status.json the steps and tokens the events announce).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ftpipe.training import protocol

STATUS_EVERY_S = 1.0  # status.json is replaced at most this often while steps run


class Reporter:
    """Writes a job folder's status.json, events.jsonl, metrics.csv and checkpoints.jsonl."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = Path(job_dir)
        self.status: dict[str, Any] = {
            "state": "running",
            "step": 0,
            "total_steps": None,
            "trained_tokens": 0,
            "estimated_finish": None,
            "error": None,
            "pid": os.getpid(),
            "updated_at": int(time.time()),
        }
        self._written_at = 0.0
        self._rate_from: tuple[float, int] | None = None
        self._csv_columns: tuple[str, ...] = protocol.CSV_COLUMNS

    # status.json
    def update(self, force: bool = False, **values: Any) -> None:
        """Merge `values` into status.json; step updates are throttled unless `force`."""
        self.status.update(values)
        now = time.time()
        if force or now - self._written_at >= STATUS_EVERY_S:
            self.status["updated_at"] = int(now)
            protocol.write_status(self.job_dir, self.status)
            self._written_at = now

    def start_clock(self, step: int) -> None:
        """Measure the step rate from here (training, not model loading)."""
        self._rate_from = (time.time(), step)

    def step(self, step: int, trained_tokens: int) -> None:
        total = self.status.get("total_steps") or 0
        finish = None
        if self._rate_from and step > self._rate_from[1] and total:
            started, first = self._rate_from
            per_step = (time.time() - started) / (step - first)
            finish = int(time.time() + per_step * max(0, total - step))
        self.update(step=step, trained_tokens=trained_tokens, estimated_finish=finish)

    def finish(self, state: str, error: dict[str, Any] | None = None, **values: Any) -> None:
        self.update(force=True, state=state, error=error, estimated_finish=None, **values)

    # events.jsonl
    def message(self, text: str, level: str = "info", **data: Any) -> None:
        protocol.append_event(self.job_dir, text, level=level, data=data or None)

    def metrics(self, metrics: dict[str, Any]) -> None:
        """A metrics event and a result-file row for one step."""
        total = self.status.get("total_steps")
        text = f"Step {metrics['step']}/{total}: training loss={metrics.get('train_loss')}"
        if metrics.get("valid_loss") is not None:
            text += f", validation loss={metrics['valid_loss']}"
        data = {key: metrics.get(key) for key in protocol.METRIC_KEYS}
        protocol.append_event(
            self.job_dir, text, kind="metrics", data={**data, "total_steps": total}
        )
        row = ["" if metrics.get(c) is None else str(metrics[c]) for c in self._csv_columns]
        protocol.append_line(self.job_dir / protocol.METRICS, ",".join(row))

    def start_csv(self, with_validation: bool) -> None:
        """The result file's header (kept as it is when a paused job resumes)."""
        columns = protocol.CSV_COLUMNS + (protocol.CSV_VALID_COLUMNS if with_validation else ())
        self._csv_columns = columns
        path = self.job_dir / protocol.METRICS
        if not path.exists() or not path.stat().st_size:
            protocol.append_line(path, ",".join(columns))

    # checkpoints.jsonl
    def _relative(self, folder: Path) -> str:
        """Relative to the job folder when inside it (the job folder may move), else absolute."""
        try:
            return Path(folder).resolve().relative_to(self.job_dir.resolve()).as_posix()
        except ValueError:
            return os.fspath(Path(folder).resolve())

    def checkpoint(self, step: int, folder: Path, metrics: dict[str, Any]) -> None:
        """A checkpoint record with OpenAI's checkpoint metrics keys (full_* = whole valid set)."""
        record = {
            "created_at": int(time.time()),
            "step_number": step,
            "path": self._relative(folder),
            "metrics": {
                "step": step,
                "train_loss": metrics.get("train_loss"),
                "train_mean_token_accuracy": metrics.get("train_mean_token_accuracy"),
                "valid_loss": metrics.get("valid_loss"),
                "valid_mean_token_accuracy": metrics.get("valid_mean_token_accuracy"),
                "full_valid_loss": metrics.get("valid_loss"),
                "full_valid_mean_token_accuracy": metrics.get("valid_mean_token_accuracy"),
            },
        }
        protocol.append_line(self.job_dir / protocol.CHECKPOINTS, json.dumps(record))
        self.message(f"Checkpoint created at step {step}")
