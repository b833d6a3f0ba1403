"""A deterministic train/validation split that needs one pass and bounded memory.

Each example gets a seeded 64-bit key; the validation set is the examples with the smallest
keys. At most 1000 candidates are held back at any time, so everything else streams straight
to train.jsonl.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ftpipe.prepare.dedupe import example_hashes

MAX_VALIDATION = 1000
MIN_TRAINING = 10


def validation_size(total: int, share: float) -> int:
    """The guide's split: `share` of the examples, at most 1000, leaving at least 10 to train."""
    if share <= 0:
        return 0
    return max(0, min(round(total * share), MAX_VALIDATION, total - MIN_TRAINING))


def split_keys(hashes: np.ndarray, seed: int) -> np.ndarray:
    """A seeded shuffle of content hashes (splitmix64), so the seed picks the validation set."""
    with np.errstate(over="ignore"):
        z = hashes.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass
class ValidationPicker:
    """Holds the examples with the smallest keys; hands every other one to `to_train`."""

    seed: int
    to_train: Callable[[list[str]], None]
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    lines: list[str] = field(default_factory=list)
    order: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    seen: int = 0

    def add(self, lines: list[str], hashes: np.ndarray | None = None) -> None:
        """Take a batch of rendered examples, in source order (with their content hashes, when
        the caller has them, so nothing is hashed twice)."""
        if not lines:
            return
        content = example_hashes(lines) if hashes is None else hashes
        keys = np.concatenate([self.keys, split_keys(content, self.seed)])
        order = np.concatenate([self.order, np.arange(self.seen, self.seen + len(lines))])
        pool = self.lines + lines
        self.seen += len(lines)
        keep = (
            np.argpartition(keys, MAX_VALIDATION)[:MAX_VALIDATION]
            if len(keys) > MAX_VALIDATION
            else np.arange(len(keys))
        )
        dropped = np.setdiff1d(np.arange(len(pool)), keep)
        self.to_train([pool[i] for i in dropped[np.argsort(order[dropped])]])
        self.keys, self.order = keys[keep], order[keep]
        self.lines = [pool[i] for i in keep]

    def finish(self, share: float) -> list[str]:
        """Release the held examples: the validation set is returned, the rest go to train."""
        size = validation_size(self.seen, share)
        ranked = np.argsort(self.keys, kind="stable")
        validation, rest = ranked[:size], ranked[size:]
        self.to_train([self.lines[i] for i in rest[np.argsort(self.order[rest])]])
        chosen = validation[np.argsort(self.order[validation])]
        return [self.lines[i] for i in chosen]
