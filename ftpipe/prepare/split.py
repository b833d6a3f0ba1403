"""A deterministic train/validation split that needs one pass and bounded memory.

Each example gets a seeded 64-bit key; the validation set is the examples with the smallest
keys. At most 1000 candidates are held back at any time, so everything else streams straight
to train.jsonl. Lines stay Arrow strings throughout: no Python string per example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

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


def _empty_lines() -> pa.Array:
    return pa.array([], pa.string())


def _as_lines(lines: pa.Array | list[str]) -> pa.Array:
    """Lines as one Arrow string array (32-bit offsets: a batch is far below 2 GB)."""
    array = lines if isinstance(lines, pa.Array) else pa.array(lines, pa.string())
    return array if array.type == pa.string() else array.cast(pa.string())


@dataclass
class ValidationPicker:
    """Holds the examples with the smallest keys; hands every other one to `to_train`."""

    seed: int
    to_train: Callable[[pa.Array], None]
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    lines: pa.Array = field(default_factory=_empty_lines)
    tokens: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    order: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    seen: int = 0

    def add(
        self,
        lines: pa.Array | list[str],
        hashes: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
    ) -> None:
        """Take a batch of rendered examples, in source order, with their content hashes (when
        the caller has them, so nothing is hashed twice) and token counts (for the report)."""
        lines = _as_lines(lines)
        if not len(lines):
            return
        content = example_hashes(lines) if hashes is None else hashes
        counts = np.zeros(len(lines), np.int64) if tokens is None else np.asarray(tokens)
        keys = np.concatenate([self.keys, split_keys(content, self.seed)])
        order = np.concatenate([self.order, np.arange(self.seen, self.seen + len(lines))])
        self.seen += len(lines)
        held = len(self.keys)
        keep = (
            np.argpartition(keys, MAX_VALIDATION)[:MAX_VALIDATION]
            if len(keys) > MAX_VALIDATION
            else np.arange(len(keys))
        )
        kept = np.zeros(len(keys), dtype=bool)
        kept[keep] = True
        # every held example came before this batch: the ones let go, in input order, and then
        # the batch's own in its order (a filter, not a take, over the big part)
        let_go = np.flatnonzero(~kept[:held])
        self.to_train(self.lines.take(let_go[np.argsort(self.order[let_go])]))
        self.to_train(lines.filter(pa.array(~kept[held:])))
        earlier, fresh = keep[keep < held], keep[keep >= held]
        self.lines = pa.concat_arrays([self.lines.take(earlier), lines.take(fresh - held)])
        chosen = np.concatenate([earlier, fresh])
        tokens_pool = np.concatenate([self.tokens, counts])
        self.keys, self.order, self.tokens = keys[chosen], order[chosen], tokens_pool[chosen]

    def finish(self, share: float) -> tuple[pa.Array, np.ndarray]:
        """Release the held examples: the validation set (lines and token counts, in input
        order) is returned, the rest go to train."""
        size = validation_size(self.seen, share)
        ranked = np.argsort(self.keys, kind="stable")
        validation, rest = ranked[:size], ranked[size:]
        self.to_train(self.lines.take(rest[np.argsort(self.order[rest])]))
        chosen = validation[np.argsort(self.order[validation])]
        return self.lines.take(chosen), self.tokens[chosen]
