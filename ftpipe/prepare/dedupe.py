"""Exact-duplicate detection in flat memory: 8 bytes per example, however large the input.

Examples are hashed (64-bit SipHash via pandas) and kept in a few sorted numpy runs merged
log-structured style, so membership checks stay vectorised and memory stays ~8 bytes a row.
The hash is also the seed of the train/validation split (split.py), so it cannot change
without changing which examples are held out: it is made faster, never different.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

HASH_KEY = "ftpipe-dedupe-v1"


def example_hashes(lines: pa.Array | list[str], key: str = HASH_KEY) -> np.ndarray:
    """64-bit content hashes of rendered example lines (the same line, the same hash).

    pandas hashes a str by its UTF-8 bytes, so handing it the bytes straight from the Arrow
    buffer gives the very same hashes without encoding each Python string first (~6x faster).
    """
    array = lines if isinstance(lines, pa.Array | pa.ChunkedArray) else pa.array(lines, pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    binary = pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary()
    values = array.cast(binary).to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values, hash_key=key[:16].ljust(16, "0"))


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
        """Add hashes none of the runs holds; runs of like size merge (two sorted runs with no
        value in common: a linear merge, one new array, no set operation)."""
        self._runs.append(values)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newest, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([older, newest])
            merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
            self._runs.append(merged)

    def first_seen(self, hashes: np.ndarray) -> np.ndarray:
        """True where a hash occurs for the first time, counting earlier batches and this one."""
        unique, first_index = np.unique(hashes, return_index=True)
        new = ~self._contains(unique)
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first_index[new]] = True
        self._add(unique[new])
        return mask
