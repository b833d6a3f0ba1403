"""How a run validates its rows: the suites' rules on every row, and GX's own result on a sample.

Every row is checked by the column-wise checks (columnar.py) read from the suites, batch by
batch, in whatever process prepares the source, without importing GX. GX then validates the run
once per suite, in the merge, on a sample of it, and writes GX Data Docs; the two are required to
agree row for row on that sample, else the run stops (the column-wise reading of a rule is wrong).

Why a sample rather than GX on every row, or on a frame of per-row outcomes: GX on every row is
the cost this design removes (and would need the whole run in one pandas frame, or a GX run per
batch); a frame of per-row outcomes would have GX validate booleans under derived expectations,
not the suites' own expectations on the data. A sample of real rows lets GX run the declared
suite unchanged and its Data Docs show real values: every source's first failing rows of each
rule (FAILING_PER_RULE) and its first passing rows of each batch (PASSING_PER_BATCH, at most
PASSING_PER_SOURCE; rows under PASSING_ROW_BYTES), within RUN_SAMPLE_ROWS and RUN_SAMPLE_BYTES.
The report's rule table counts every row; the Data Docs say how many rows GX saw.

A suite that the column-wise checks cannot take is run by GX on every batch, as before, and
sampled the same way. Cells reach the sample as text (`None` as null), as rejects.csv shows them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ftpipe.prepare.columnar import Check, ColumnarRunner, suite_checks, text_table
from ftpipe.prepare.expectations import BatchOutcome, SuiteRunner, expectations_dir
from ftpipe.prepare.gx_process import GxProcess

FAILING_PER_RULE = 3
PASSING_PER_BATCH = 10
PASSING_PER_SOURCE = 200
PASSING_ROW_BYTES = 16 * 1024
RUN_SAMPLE_ROWS = 2_000  # passing rows per suite for the whole run
RUN_SAMPLE_BYTES = 32 * 1024 * 1024
DATA_DOCS = "data_docs"
SAMPLE_NOTE = (
    "GX validated a sample of the run's rows: every source's first failing rows of each rule "
    "and first passing rows of each batch. The rules table counts every row, checked with the "
    "same suites column-wise (which agreed with GX row for row on the sample), or by GX itself "
    "on every batch for a suite the column-wise checks cannot take."
)


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


@dataclass
class BatchSample:
    """One batch's candidates for the sample: its first failing rows of each rule, with which
    rule picked each, and its first small passing rows; never fewer than a source takes."""

    failing: pa.Table | None = None
    picks: list[tuple[int, str]] = field(default_factory=list)  # (row of `failing`, rule)
    passing: pa.Table | None = None

    @classmethod
    def of(cls, table: pa.Table, outcome: BatchOutcome) -> BatchSample:
        per_rule: Counter[str] = Counter()
        picks = []
        for failure in outcome.failures:
            if per_rule[failure.rule] < FAILING_PER_RULE:
                per_rule[failure.rule] += 1
                picks.append((failure.row, failure.rule))
        rows = sorted({row for row, _ in picks})
        position = {row: index for index, row in enumerate(rows)}
        failing = table.take(pa.array(rows, pa.int64())) if rows else None
        passing_rows = _small_passing_rows(table, outcome, PASSING_PER_BATCH)
        passing = table.take(pa.array(passing_rows)) if len(passing_rows) else None
        return cls(failing, [(position[row], rule) for row, rule in picks], passing)


@dataclass
class SourceSample:
    """The rows of one source, for one suite, that GX will validate at the end of the run:
    batch samples taken in batch order while the source's room lasts."""

    pieces: list[BatchSample] = field(default_factory=list)
    by_rule: Counter[str] = field(default_factory=Counter)
    passing_rows: int = 0

    def add(self, batch: BatchSample) -> None:
        """Take what the source still has room for, as if its batches came one by one."""
        picks = []
        for row, rule in batch.picks:
            if self.by_rule[rule] < FAILING_PER_RULE:
                self.by_rule[rule] += 1
                picks.append((row, rule))
        rows = sorted({row for row, _ in picks})
        failing = batch.failing.take(pa.array(rows, pa.int64())) if rows and batch.failing else None
        room = PASSING_PER_SOURCE - self.passing_rows
        passing = batch.passing.slice(0, room) if batch.passing is not None and room > 0 else None
        self.passing_rows += passing.num_rows if passing is not None else 0
        position = {row: index for index, row in enumerate(rows)}
        taken = [(position[row], rule) for row, rule in picks]
        if failing is not None or passing is not None:
            self.pieces.append(BatchSample(failing, taken, passing))

    def absorb(self, later: SourceSample) -> None:
        """Fold in the sample of the batches that follow (a worker's share of a large file)."""
        for piece in later.pieces:
            self.add(piece)

    def tables(self) -> tuple[pa.Table | None, pa.Table | None]:
        """(failing rows, passing rows), each as one table."""
        failing = [p.failing for p in self.pieces if p.failing is not None]
        passing = [p.passing for p in self.pieces if p.passing is not None]
        return _concat(failing), _concat(passing)


def _small_passing_rows(table: pa.Table, outcome: BatchOutcome, room: int) -> np.ndarray:
    """The first `room` rows that broke no rule and are small enough to show in Data Docs."""
    size = np.zeros(table.num_rows, np.int64)
    for column in table.columns:
        size += pc.binary_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    ok = size <= PASSING_ROW_BYTES
    ok[list(outcome.failed_rows)] = False
    return np.flatnonzero(ok)[:room]


def _as_texts(frame: pd.DataFrame) -> pa.Table:
    """A frame GX had to validate (cells that are not text) as text, for the sample."""
    columns = {
        str(name): pa.array(
            [None if _missing(v) else str(v) for v in frame.iloc[:, i].tolist()], pa.string()
        )
        for i, name in enumerate(frame.columns)
    }
    return pa.table(columns)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class SourceValidator:
    """One source's validation against one suite: the column-wise checks on every batch when
    the suite allows (GX per batch otherwise), and the sample for the run's GX validation."""

    def __init__(self, kind: str, checks: list[Check] | Literal["read"] | None = "read") -> None:
        """`checks`: the suite's, read from its file when not given (a worker is given them)."""
        self.kind = kind
        checks = suite_checks(kind) if checks == "read" else checks
        self.columnar = ColumnarRunner(kind, checks) if checks is not None else None
        self._gx: SuiteRunner | None = None
        self.sample = SourceSample()

    def validate(self, data: pa.Table | pd.DataFrame) -> BatchOutcome:
        """Every rule of the suite on every row of a batch; ValueError for a missing column."""
        table = _frame_table(data) if isinstance(data, pd.DataFrame) else text_table(data)
        if self.columnar is not None and table is not None:
            outcome = self.columnar.validate(table)
        else:
            frame = data if isinstance(data, pd.DataFrame) else data.to_pandas()
            outcome = self._gx_runner().validate(frame)
            table = table if table is not None else _as_texts(frame)
        self.sample.add(BatchSample.of(table, outcome))
        return outcome

    def _gx_runner(self) -> SuiteRunner:
        if self._gx is None:
            self._gx = SuiteRunner(self.kind)
        return self._gx


def _frame_table(frame: pd.DataFrame) -> pa.Table | None:
    """A pandas frame (dialogue turns) as a table of text columns, or None when it is not one."""
    if len(set(map(str, frame.columns))) != len(frame.columns):
        return None
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return None
    return text_table(table)


@dataclass
class RunSamples:
    """The sources' samples, in input order, within the run's bounds, per suite."""

    failing: dict[str, list[pa.Table]] = field(default_factory=dict)
    passing: dict[str, list[pa.Table]] = field(default_factory=dict)
    passing_rows: Counter[str] = field(default_factory=Counter)
    size: int = 0

    def add(self, kind: str, sample: SourceSample) -> None:
        failing, passing = sample.tables()
        if failing is not None and self._fits(failing):
            self.failing.setdefault(kind, []).append(failing)
        if passing is not None and self.passing_rows[kind] < RUN_SAMPLE_ROWS:
            passing = passing.slice(0, RUN_SAMPLE_ROWS - self.passing_rows[kind])
            if self._fits(passing):
                self.passing.setdefault(kind, []).append(passing)
                self.passing_rows[kind] += passing.num_rows

    def _fits(self, table: pa.Table) -> bool:
        if self.size + table.nbytes > RUN_SAMPLE_BYTES:
            return False
        self.size += table.nbytes
        return True

    def tables(self) -> dict[str, pa.Table]:
        """One table per suite: failing rows first, then passing rows, in input order."""
        kinds = list(dict.fromkeys([*self.failing, *self.passing]))
        found = {k: _concat(self.failing.get(k, []) + self.passing.get(k, [])) for k in kinds}
        return {kind: table for kind, table in found.items() if table is not None}


def validate_run(
    samples: RunSamples, folder: Path, gx: GxProcess | None = None
) -> list[dict[str, Any]]:
    """GX's validation of each suite's sample (in the `gx` process when given), written as
    Data Docs under `folder`, checked against the column-wise checks row for row; what
    report.json lists of it."""
    tables = samples.tables()
    if not tables:
        return []
    if gx is not None:
        results = gx.validate(tables, folder, expectations_dir())
    else:
        from ftpipe.prepare.expectations import validate_samples

        results = validate_samples({k: t.to_pandas() for k, t in tables.items()}, folder)
    for kind, result in results.items():
        _check_agreement(kind, tables[kind], result.failures)
    return [
        {
            "suite": kind,
            "rows": result.rows,
            "failing_rows": len(result.failed_rows),
            "success": not result.failures,
            "evaluated_expectations": len(result.outcomes),
        }
        for kind, result in results.items()
    ]


def _check_agreement(kind: str, table: pa.Table, failures: list[Any]) -> None:
    """GX and the column-wise checks must name the same rows for every rule of the sample."""
    checks = suite_checks(kind)
    usable = text_table(table)
    if checks is None or usable is None:
        return  # GX ran every batch of this suite itself
    mine = {(f.row, f.rule) for f in ColumnarRunner(kind, checks).validate(usable).failures}
    theirs = {(f.row, f.rule) for f in failures}
    if mine != theirs:
        differ = sorted({rule for _, rule in mine ^ theirs})
        raise RuntimeError(
            f"the {kind} suite's column-wise checks disagree with Great Expectations on rule(s) "
            f"{', '.join(differ)} in the run's sample; please report this"
        )
