"""The TrainerCallback that turns the Trainer's loop into ftpipe's job files and obeys control.

It asks for evaluations and checkpoints itself (epoch ends, pause), reads cancel/pause at every
step end (cancel also between micro-batches) and keeps the last N checkpoint folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.training.hyperparameters import Plan
from ftpipe.training.reporter import Reporter

CHECKPOINT = re.compile(r"^step-(\d+)$")
PROGRESS_FILE = "ftpipe_progress.json"


@dataclass
class Counter:
    """What the worker learns from the run: tokens trained, how it ended, its last checkpoint."""

    trained_tokens: int = 0
    outcome: str = "succeeded"
    last_checkpoint: str | None = None


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def make_callback(
    *,
    reporter: Reporter,
    stop: Any,
    plan: Plan,
    checkpoints_dir: Path,
    checkpoints_kept: int,
    has_validation: bool,
    eval_steps: int | None,
) -> tuple[Any, Counter]:
    """Build the callback (transformers is imported here, not at module import)."""
    from transformers import TrainerCallback

    counter = Counter()

    class JobCallback(TrainerCallback):
        def __init__(self) -> None:
            self.pending: dict[str, Any] | None = None
            self.last_metrics: dict[str, Any] = {}

        def _flush(self) -> None:
            if self.pending is not None:
                reporter.metrics(self.pending)
                self.last_metrics, self.pending = self.pending, None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.max_steps != plan.total_steps:
                reporter.message(
                    f"The trainer plans {state.max_steps} steps, not {plan.total_steps}",
                    level="warn",
                )
            reporter.start_csv(has_validation)
            reporter.update(
                force=True,
                total_steps=state.max_steps,
                step=state.global_step,
                trained_tokens=counter.trained_tokens,
            )
            reporter.start_clock(state.global_step)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()

        def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if stop.requested() == "cancel":
                counter.outcome = "cancelled"
                control.should_training_stop = True

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            reporter.step(step, counter.trained_tokens)
            action = stop.requested()
            if action == "cancel":
                counter.outcome = "cancelled"
                control.should_training_stop = True
                control.should_save = control.should_evaluate = False
                return
            epoch_end = step % plan.steps_per_epoch == 0 or step >= state.max_steps
            evaluate = has_validation and (epoch_end or bool(eval_steps and step % eval_steps == 0))
            if epoch_end or evaluate:
                control.should_log = True
            if evaluate:
                control.should_evaluate = True
            if epoch_end:
                control.should_save = True
            if action == "pause" and step < state.max_steps:
                counter.outcome = "paused"
                control.should_save = control.should_log = True
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any):
            logs = logs or {}
            step = state.global_step
            if "loss" in logs:
                self._flush()
                self.pending = {
                    "step": step,
                    "train_loss": _round(logs["loss"]),
                    "train_mean_token_accuracy": _round(logs.get("mean_token_accuracy")),
                }
            if "eval_loss" in logs:
                if self.pending is None or self.pending["step"] != step:
                    self._flush()
                    self.pending = {"step": step}
                self.pending["valid_loss"] = _round(logs["eval_loss"])
                self.pending["valid_mean_token_accuracy"] = _round(
                    logs.get("eval_mean_token_accuracy")
                )

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()
            step = state.global_step
            saved = Path(args.output_dir) / f"checkpoint-{step}"
            folder = checkpoints_dir / f"step-{step}"
            checkpoints_dir.mkdir(parents=True, exist_ok=True)
            if folder.exists():
                shutil.rmtree(folder)
            (saved / PROGRESS_FILE).write_text(
                json.dumps({"trained_tokens": counter.trained_tokens, "step": step})
            )
            shutil.move(str(saved), str(folder))
            metrics = self.last_metrics if self.last_metrics.get("step") == step else {}
            reporter.checkpoint(step, folder, metrics)
            counter.last_checkpoint = os.fspath(folder)
            self._prune()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()
            reporter.update(
                force=True, step=state.global_step, trained_tokens=counter.trained_tokens
            )

        def _prune(self) -> None:
            folders = sorted(
                (int(match.group(1)), path)
                for path in checkpoints_dir.iterdir()
                if (match := CHECKPOINT.match(path.name)) and path.is_dir()
            )
            for _step, path in folders[:-checkpoints_kept]:
                shutil.rmtree(path, ignore_errors=True)

    return JobCallback(), counter
