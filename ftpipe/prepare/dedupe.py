"""Exact-duplicate detection in flat memory: 8 bytes per example, however large the input.

Examples are hashed (64-bit SipHash via pandas) and kept in a few sorted numpy runs merged
log-structured style, so membership checks stay vectorised and memory stays ~8 bytes a row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def example_hashes(lines: list[str], key: str = "ftpipe-dedupe-v1") -> np.ndarray:
    """64-bit content hashes of rendered example lines (the same line, the same hash)."""
    return pd.util.hash_array(np.asarray(lines, dtype=object), hash_key=key[:16].ljust(16, "0"))


class SeenHashes:
    """The set of hashes seen so far, answering 'first time?' for a whole batch at once."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def _contains(self, values: np.ndarray) -> np.ndarray:
        found = np.zeros(len(values), dtype=bool)
        for run in self._runs:
            positions = np.searchsorted(run, values)
            inside = positions < len(run)
            found[inside] |= run[positions[inside]] == values[inside]
        return found

    def _add(self, values: np.ndarray) -> None:
        self._runs.append(values)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newest, older = self._runs.pop(), self._runs.pop()
            self._runs.append(np.union1d(older, newest))

    def first_seen(self, hashes: np.ndarray) -> np.ndarray:
        """True where a hash occurs for the first time, counting earlier batches and this one."""
        unique, first_index = np.unique(hashes, return_index=True)
        new = ~self._contains(unique)
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first_index[new]] = True
        self._add(unique[new])
        return mask
