"""Confidence intervals, so that "the tuned model is better" means better than noise.

A bootstrap statistic is a callable of an index array (the resampled examples). It may also
carry `batched`: a callable of a 2-D index matrix (one resample a row) returning one value per
row, which the bootstrap then uses instead of a Python loop (`mean_of` provides it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]

_Z95 = 1.959963984540054
_CELLS_PER_CHUNK = 4_000_000  # resampled indices held at once (32 MB), whatever n is


@dataclass(frozen=True)
class Interval:
    """A range a score plausibly lies in."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether `value` is plausible, e.g. whether 0 is a plausible difference."""
        return self.low <= value <= self.high


def wilson(successes: float, n: int, *, z: float = _Z95) -> Interval:
    """Interval of a proportion that stays sensible at 0/n, n/n and small n (unlike p +- z*se).

    `successes` may be fractional (a sum of per-example scores in [0, 1]).
    """
    if n < 1:
        raise ValueError(f"a proportion needs at least one example, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    spread = z * z / n
    center = (p + spread / 2) / (1 + spread)
    half = z * math.sqrt(p * (1 - p) / n + spread / (4 * n)) / (1 + spread)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(low, high)


def _check(n: int, resamples: int, level: float) -> None:
    """Reject settings that would give an empty or meaningless resample."""
    if n < 1:
        raise ValueError(f"the bootstrap needs at least one example, got n={n}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _resamples(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Index matrices (one resample a row), in chunks so that a large n stays in memory.

    The chunks depend only on (n, resamples, seed), so paired statistics see the same resamples.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, _CELLS_PER_CHUNK // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def _evaluate(statistic: Statistic, indices: np.ndarray) -> np.ndarray:
    """One value per resample row, through the statistic's `batched` path when it has one."""
    batched = getattr(statistic, "batched", None)
    if batched is not None:
        return np.asarray(batched(indices), dtype=float)
    return np.fromiter((statistic(row) for row in indices), dtype=float, count=len(indices))


def _percentiles(values: np.ndarray, level: float) -> Interval:
    """The central `level` share of the resampled values."""
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(low), float(high))


def bootstrap(
    statistic: Statistic,
    n: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile interval of any statistic of n examples; the same seed gives the same interval."""
    _check(n, resamples, level)
    values = [_evaluate(statistic, chunk) for chunk in _resamples(n, resamples, seed)]
    return _percentiles(np.concatenate(values), level)


def paired_difference(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Interval of a - b on the same resampled examples, since both models answered the same ones.

    Pairing removes the examples' own difficulty from the noise; an interval above 0 means a
    is better than b beyond chance.
    """
    _check(n, resamples, level)
    values = [
        _evaluate(statistic_a, chunk) - _evaluate(statistic_b, chunk)
        for chunk in _resamples(n, resamples, seed)
    ]
    return _percentiles(np.concatenate(values), level)


class _Mean:
    """The mean of fixed per-example values over resampled indices."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = np.asarray(values, dtype=float)

    def __call__(self, indices: np.ndarray) -> float:
        return float(self.values[indices].mean())

    def batched(self, indices: np.ndarray) -> np.ndarray:
        return self.values[indices].mean(axis=1)


def mean_of(values: Sequence[float]) -> Statistic:
    """A bootstrap statistic for per-example scores (match, token F1); vectorised via `batched`."""
    return _Mean(values)


def sign_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact sign test of paired scores (McNemar's exact test for 0/1 scores): the
    chance of a split at least this lopsided among the examples where the two models differ,
    if neither were better. Exact at any n, so a handful of examples never looks decisive."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} and {len(b)}")
    wins = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    losses = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
