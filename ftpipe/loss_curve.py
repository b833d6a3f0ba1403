"""A fine-tuning job's loss curve: its result file (step metrics CSV) fetched and plotted.

`ftpipe jobs show` and the `finetune` flow write the same `loss.png` next to the CSV, under
`<FTPIPE_HOME>/jobs/<job id>/`; matplotlib draws off-screen (Agg), so no display is needed.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.atomic import write_bytes_atomically
from ftpipe.settings import Settings, get_settings

METRICS_FILE = "step_metrics.csv"
PLOT_FILE = "loss.png"


class NoMetrics(LookupError):
    """The job has no result file yet (not finished, or an endpoint that writes none)."""


@dataclass
class LossCurve:
    """Train (and valid) loss per step, read from a step-metrics CSV."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float | None] = field(default_factory=list)

    @property
    def has_valid(self) -> bool:
        return any(value is not None for value in self.valid_loss)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def parse_metrics(text: str) -> LossCurve:
    """Rows with a step and a train loss; empty cells (no validation that step) stay None."""
    curve = LossCurve()
    for row in csv.DictReader(io.StringIO(text)):
        step, loss = _number(row.get("step")), _number(row.get("train_loss"))
        if step is None or loss is None:
            continue
        curve.steps.append(int(step))
        curve.train_loss.append(loss)
        curve.valid_loss.append(_number(row.get("valid_loss")))
    return curve


def job_dir(job_id: str, settings: Settings | None = None) -> Path:
    """`<FTPIPE_HOME>/jobs/<job id>/`, created on first use."""
    return (settings or get_settings()).state_dir("jobs", job_id)


def download_metrics(client: Any, job: Any, folder: Path) -> Path:
    """The job's result file saved as `step_metrics.csv` in `folder`."""
    files = list(getattr(job, "result_files", None) or [])
    if not files:
        raise NoMetrics(f"job {job.id} has no result file yet (status {job.status})")
    content = client.files.content(files[0]).content
    path = folder / METRICS_FILE
    write_bytes_atomically(path, content)
    return path


def plot(curve: LossCurve, target: Path, title: str) -> Path:
    """Train (and valid) loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    axes.plot(
        curve.steps,
        curve.train_loss,
        label="train loss",
        marker="." if len(curve.steps) < 50 else None,
    )
    if curve.has_valid:
        points = [
            (s, v) for s, v in zip(curve.steps, curve.valid_loss, strict=True) if v is not None
        ]
        axes.plot(*zip(*points, strict=True), label="valid loss", marker="o")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomically(target, buffer.getvalue())
    return target


@dataclass(frozen=True)
class SavedCurve:
    """Where a job's loss curve went, and the figures for a summary."""

    metrics: Path
    png: Path
    curve: LossCurve


def save_loss_curve(client: Any, job: Any, settings: Settings | None = None) -> SavedCurve:
    """Fetch the job's step metrics and plot them, both under `<FTPIPE_HOME>/jobs/<job id>/`."""
    folder = job_dir(job.id, settings)
    metrics = download_metrics(client, job, folder)
    curve = parse_metrics(metrics.read_text(encoding="utf-8"))
    if not curve.steps:
        raise NoMetrics(f"job {job.id}: its result file {metrics} holds no step with a loss")
    png = plot(curve, folder / PLOT_FILE, f"{job.id} ({job.fine_tuned_model or job.model})")
    return SavedCurve(metrics, png, curve)


def markdown_summary(job_id: str, saved: SavedCurve, rows: int = 10) -> str:
    """A small loss table (at most `rows` steps, evenly spread, the last one included)."""
    curve = saved.curve
    count = len(curve.steps)
    picks = sorted({round(i * (count - 1) / max(rows - 1, 1)) for i in range(min(rows, count))})
    header = "| step | train loss |" + (" valid loss |" if curve.has_valid else "")
    lines = [f"### Loss curve of `{job_id}`", "", header,
             "|---|---|" + ("---|" if curve.has_valid else "")]  # fmt: skip
    for i in picks:
        cells = [str(curve.steps[i]), f"{curve.train_loss[i]:.4f}"]
        if curve.has_valid:
            valid = curve.valid_loss[i]
            cells.append("" if valid is None else f"{valid:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Plot: `{saved.png}`", f"Step metrics: `{saved.metrics}`"]
    return "\n".join(lines) + "\n"
