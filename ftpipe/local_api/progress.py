"""How fast a local fine-tuning job moves, moto-style: at once, after N reads, or over N seconds.

A job's progress is a number from 0 to 1 derived from stored facts (reads, elapsed seconds), so
any process sharing the store sees the same state without a background worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SpeedMode = Literal["immediate", "retrieves", "seconds"]

QUEUED_FROM = 0.0  # any progress past creation leaves validating_files
RUNNING_FROM = 0.3  # share of the progress spent queued before training starts


@dataclass(frozen=True)
class Speed:
    """A parsed `FTPIPE_LOCAL_JOB_SPEED` value."""

    mode: SpeedMode
    amount: float = 0.0

    def progress(self, retrieves: int, active_seconds: float) -> float:
        """Progress in [0, 1] after `retrieves` reads and `active_seconds` unpaused seconds."""
        if self.mode == "immediate":
            return 1.0 if retrieves > 0 or active_seconds > 0 else 0.0
        if self.mode == "seconds":
            return min(1.0, active_seconds / self.amount)
        return _by_reads(retrieves, int(self.amount))


def _by_reads(reads: int, needed: int) -> float:
    """Read 1 shows the job queued, reads 2..N-1 running, read N done: every stage is seen."""
    if reads <= 0:
        return 0.0
    if reads >= needed:
        return 1.0
    if reads == 1:
        return RUNNING_FROM / 2
    return RUNNING_FROM + (reads - 1) / (needed - 1) * (1.0 - RUNNING_FROM)


def parse_speed(value: str) -> Speed:
    """Parse 'immediate', 'retrieves:N' or 'seconds:N'; a clear ValueError otherwise."""
    text = value.strip().lower()
    if text == "immediate":
        return Speed("immediate")
    mode, _, amount = text.partition(":")
    if mode in ("retrieves", "seconds"):
        try:
            number = float(amount)
        except ValueError:
            number = -1.0
        if number > 0 and (mode == "seconds" or number.is_integer()):
            return Speed(mode, number)  # type: ignore[arg-type]
    raise ValueError(
        f"job speed {value!r} is not one of 'immediate', 'retrieves:N' (N a whole number > 0) "
        "or 'seconds:N' (N > 0)"
    )


def training_step(progress: float, total_steps: int) -> int:
    """How many training steps are done at a given progress (0 before training starts)."""
    if progress < RUNNING_FROM:
        return 0
    share = (progress - RUNNING_FROM) / (1.0 - RUNNING_FROM)
    return min(total_steps, int(share * total_steps))
