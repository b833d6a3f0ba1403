"""OpenAI's "auto" hyperparameters resolved into a concrete plan, in pure Python.

The server shows the resolved values on the job before the worker starts, and the worker trains
with exactly these numbers, so both sides import this module (no torch here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from ftpipe.estimate import default_epochs
from ftpipe.training.spec import TrainingSpec

# OpenAI does not publish its base rates; these are the usual ones for each method.
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 1e-5}
MAX_AUTO_BATCH = 8  # "auto" batch stays small: CPU steps are slow and datasets are small


def auto_batch_size(examples: int) -> int:
    """One example in ten per batch, between 1 and 8 (OpenAI scales with the data too)."""
    return min(MAX_AUTO_BATCH, max(1, examples // 10))


def split_batch(
    batch_size: int, max_micro_batch: int, accumulation: int | Literal["auto"] = "auto"
) -> tuple[int, int]:
    """(micro batch, gradient accumulation) whose product is the effective batch.

    "auto": the largest divisor of the batch that fits `max_micro_batch`, so the effective batch
    equals the requested one exactly. A fixed accumulation rounds the micro batch up.
    """
    if accumulation != "auto":
        return math.ceil(batch_size / accumulation), accumulation
    micro = max(d for d in range(1, min(batch_size, max_micro_batch) + 1) if batch_size % d == 0)
    return micro, batch_size // micro


def steps_per_epoch(examples: int, micro_batch: int, accumulation: int) -> int:
    """Optimizer steps in one epoch, counted as the transformers Trainer counts them."""
    batches = math.ceil(examples / micro_batch)
    return max(1, math.ceil(batches / accumulation))


@dataclass(frozen=True)
class Plan:
    """The numbers a job trains with; `asdict` of it goes into events and the job's record."""

    examples: int
    n_epochs: int
    batch_size: int
    micro_batch_size: int
    gradient_accumulation: int
    learning_rate_multiplier: float
    learning_rate: float
    steps_per_epoch: int
    total_steps: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def resolve(
    *,
    examples: int,
    method: Literal["lora", "full"] = "lora",
    n_epochs: int | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    learning_rate_multiplier: float | Literal["auto"] = "auto",
    max_micro_batch: int = 4,
    gradient_accumulation: int | Literal["auto"] = "auto",
) -> Plan:
    """Resolve "auto" values: epochs by the data-prep guide, batch by `auto_batch_size`,
    learning rate = multiplier (auto 1.0) x the method's base rate."""
    if examples < 1:
        raise ValueError("a training file needs at least one example")
    epochs = default_epochs(examples) if n_epochs == "auto" else int(n_epochs)
    batch = auto_batch_size(examples) if batch_size == "auto" else int(batch_size)
    micro, accumulation = split_batch(batch, max_micro_batch, gradient_accumulation)
    multiplier = 1.0 if learning_rate_multiplier == "auto" else float(learning_rate_multiplier)
    per_epoch = steps_per_epoch(examples, micro, accumulation)
    return Plan(
        examples=examples,
        n_epochs=epochs,
        batch_size=micro * accumulation,
        micro_batch_size=micro,
        gradient_accumulation=accumulation,
        learning_rate_multiplier=multiplier,
        learning_rate=multiplier * BASE_LEARNING_RATE[method],
        steps_per_epoch=per_epoch,
        total_steps=per_epoch * epochs,
    )


def resolve_spec(spec: TrainingSpec, examples: int) -> Plan:
    """`resolve` with a TrainingSpec's values."""
    return resolve(
        examples=examples,
        method=spec.method,
        n_epochs=spec.n_epochs,
        batch_size=spec.batch_size,
        learning_rate_multiplier=spec.learning_rate_multiplier,
        max_micro_batch=spec.max_micro_batch,
        gradient_accumulation=spec.gradient_accumulation,
    )
