"""What preparing one source hands to the merge: a small summary and a part file on disk.

Phase 1 (one source, anywhere: this process, a thread, a Dask worker) streams its rejects and
its candidate examples to `<work>/parts/<index>.part` and `<index>.rejects`, in the order the
old single pass met them; phase 2 replays the files in input order, so dedupe, split and
rejects.csv come out the same whichever way the sources were prepared. Only the summary travels
back as a task result.

Both files are Arrow IPC streams: a kept batch's rendered lines go from the renderer to
train.jsonl as one Arrow buffer, never as Python strings. Each rejects batch records how many
kept batches came before it, which is all the merge needs to replay the two in their order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa

from ftpipe.prepare.rejects import Reject, excerpt
from ftpipe.prepare.report import RuleOutcome, SourceSummary
from ftpipe.prepare.validation import SourceSample

PARTS_DIR = "parts"
RuleKey = tuple[str, str, str | None]  # (check, rule, column)
KEEP_SCHEMA = pa.schema(
    [
        ("line", pa.string()),
        ("tokens", pa.int64()),
        ("line_number", pa.int64()),
        ("hash", pa.uint64()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),
        ("column", pa.string()),
        ("rule", pa.string()),
        ("value", pa.string()),
        ("after", pa.int64()),  # kept batches written before this one
    ]
)


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

    lines: pa.Array  # rendered JSON lines, Arrow strings
    counts: np.ndarray  # tokens per example
    line_numbers: np.ndarray  # where each example starts in its source
    hashes: np.ndarray  # content hashes, for dedupe and the split

    def record_batch(self) -> pa.RecordBatch:
        lines = self.lines if self.lines.type == pa.string() else self.lines.cast(pa.string())
        columns = [lines, self.counts, self.line_numbers, self.hashes]
        return pa.record_batch([pa.array(c) for c in columns], schema=KEEP_SCHEMA)

    @classmethod
    def from_record_batch(cls, batch: pa.RecordBatch) -> KeepBatch:
        numbers = [batch.column(name).to_numpy() for name in ("tokens", "line_number", "hash")]
        return cls(batch.column("line"), *numbers)


@dataclass
class SourcePart:
    """The picklable result of preparing one source: counts, rules, and where its part file is."""

    index: int
    path: str
    size: int  # bytes of the source
    summary: SourceSummary
    counters: Counters = field(default_factory=Counters)
    rules: dict[RuleKey, RuleOutcome] = field(default_factory=dict)
    samples: dict[str, SourceSample] = field(default_factory=dict)  # per suite, for GX
    more_paths: list[str] = field(default_factory=list)  # a large file's later batches' parts

    @property
    def paths(self) -> list[str]:
        """The part files in the order the merge replays them."""
        return [self.path, *self.more_paths]

    def absorb(self, later: SourcePart) -> None:
        """Fold in the part of this source's next batches (prepared by another process), as
        if this part's run had gone on through them."""
        self.more_paths += later.paths
        self.summary.rows += later.summary.rows
        self.summary.rejected += later.summary.rejected
        self.counters.add(later.counters)
        for key, outcome in later.rules.items():
            if key in self.rules:
                self.rules[key].add(outcome)
            else:
                self.rules[key] = outcome
        for kind, sample in later.samples.items():
            self.samples.setdefault(kind, SourceSample()).absorb(sample)


def parts_dir(work: Path) -> Path:
    return work / PARTS_DIR


def part_path(work: Path, index: int) -> Path:
    return parts_dir(work) / f"{index:06d}.part"


def rejects_path(path: Path) -> Path:
    """The rejects stream beside a part file."""
    return path.with_suffix(".rejects")


class PartWriter:
    """Appends kept batches and rejects to a part's two Arrow IPC streams, in the order met."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # parts/ exists once the run is planned: never created here
        self._keeps = pa.ipc.new_stream(str(path), KEEP_SCHEMA)
        self._rejects = pa.ipc.new_stream(str(rejects_path(path)), REJECT_SCHEMA)
        self._kept_batches = 0

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
            remove_part(self.path)

    def close(self) -> None:
        self._keeps.close()
        self._rejects.close()

    def rejects(self, rejects: list[Reject]) -> None:
        """Rejects as rejects.csv will show them (values cut to an excerpt here, not later)."""
        if rejects:
            columns = [
                [r.source for r in rejects],
                [r.line for r in rejects],
                [r.column for r in rejects],
                [r.rule for r in rejects],
                [excerpt(r.value) for r in rejects],
                [self._kept_batches] * len(rejects),
            ]
            self._rejects.write_batch(pa.record_batch(columns, schema=REJECT_SCHEMA))

    def keep(self, batch: KeepBatch) -> None:
        if len(batch.lines):
            self._keeps.write_batch(batch.record_batch())
            self._kept_batches += 1


def remove_part(path: Path) -> None:
    path.unlink(missing_ok=True)
    rejects_path(path).unlink(missing_ok=True)


def _rejects(batch: pa.RecordBatch) -> list[Reject]:
    columns = [batch.column(name).to_pylist() for name in REJECT_SCHEMA.names[:5]]
    return [Reject(*row) for row in zip(*columns, strict=True)]


def read_part(path: Path) -> Iterator[list[Reject] | KeepBatch]:
    """The records of a part, in the order they were written (memory holds one batch)."""
    with (
        pa.OSFile(str(path)) as keep_file,
        pa.OSFile(str(rejects_path(path))) as reject_file,
        pa.ipc.open_stream(keep_file) as keeps,
        pa.ipc.open_stream(reject_file) as rejects,
    ):
        replayed = 0
        for batch in rejects:
            for _ in range(batch.column("after")[0].as_py() - replayed):
                yield KeepBatch.from_record_batch(keeps.read_next_batch())
            replayed = batch.column("after")[0].as_py()
            yield _rejects(batch)
        for batch in keeps:
            yield KeepBatch.from_record_batch(batch)
