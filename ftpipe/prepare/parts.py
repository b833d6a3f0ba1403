"""What preparing one source hands to the merge: a small summary and a part file on disk.

Phase 1 (one source, anywhere: this process, a thread, a Dask worker) streams its rejects and
its candidate examples to `<work>/parts/<index>.part`, in the order the old single pass met
them; phase 2 replays the files in input order, so dedupe, split and rejects.csv come out the
same whichever way the sources were prepared. Only the summary travels back as a task result.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from ftpipe.prepare.rejects import Reject, excerpt
from ftpipe.prepare.report import RuleOutcome, SourceSummary

PARTS_DIR = "parts"
RuleKey = tuple[str, str, str | None]  # (check, rule, column)
RejectRow = tuple[str, int, str, str, str]  # a Reject as a tuple: quicker to pickle


@dataclass
class Counters:
    """Row counts of the report that one source settles on its own."""

    input_rows: int = 0
    trimmed_cells: int = 0
    truncated: int = 0
    over_limit: int = 0
    redacted: Counter[str] = field(default_factory=Counter)  # replacements per kind

    def add(self, other: Counters) -> None:
        self.input_rows += other.input_rows
        self.trimmed_cells += other.trimmed_cells
        self.truncated += other.truncated
        self.over_limit += other.over_limit
        self.redacted.update(other.redacted)


@dataclass
class KeepBatch:
    """Examples that passed every per-source rule, in source order, with what the merge needs."""

    lines: list[str]
    counts: np.ndarray  # tokens per example
    line_numbers: np.ndarray  # where each example starts in its source
    hashes: np.ndarray  # content hashes, for dedupe and the split


@dataclass
class SourcePart:
    """The picklable result of preparing one source: counts, rules, and where its part file is."""

    index: int
    path: str
    size: int  # bytes of the source
    summary: SourceSummary
    counters: Counters = field(default_factory=Counters)
    rules: dict[RuleKey, RuleOutcome] = field(default_factory=dict)


def parts_dir(work: Path) -> Path:
    return work / PARTS_DIR


def part_path(work: Path, index: int) -> Path:
    return parts_dir(work) / f"{index:06d}.part"


class PartWriter:
    """Appends records (a list of rejects, or a KeepBatch) to a part file, one pickle each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")  # parts/ exists once the run is planned: never created here

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if error is not None:
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()

    def rejects(self, rejects: list[Reject]) -> None:
        """Rejects as rejects.csv will show them (values cut to an excerpt here, not later)."""
        if rejects:
            rows = [(r.source, r.line, r.column, r.rule, excerpt(r.value)) for r in rejects]
            pickle.dump(rows, self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def keep(self, batch: KeepBatch) -> None:
        if batch.lines:
            pickle.dump(batch, self._file, protocol=pickle.HIGHEST_PROTOCOL)


def read_part(path: Path) -> Iterator[list[Reject] | KeepBatch]:
    """The records of a part file, one at a time (memory holds one batch, not the file)."""
    with path.open("rb") as handle:
        while True:
            try:
                record = pickle.load(handle)
            except EOFError:
                return
            if isinstance(record, KeepBatch):
                yield record
            else:
                yield [Reject(*row) for row in record]
