"""The suites' per-row rules checked column-wise with pyarrow, with GX's meaning, on every row.

GX costs ~57 ms a batch plus ~6.4 ms per 1,000 rows and a pandas copy of the batch; the four
column-map expectation types the suites use are plain enough to evaluate with pyarrow kernels
instead. The rules stay declared only in the suite files: each check here is one expectation
read from its suite, with its `meta.rule` and description. Only the types and arguments in
SUPPORTED are taken; a suite holding anything else is run by GX on every batch (validation.py),
so a rule added to a suite is never skipped nor half understood. GX still validates every run,
on a sample, and the two must agree row for row there (validation.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftpipe.prepare.expectations import (
    EXISTS,
    NULL_TEXT,
    BatchOutcome,
    ExpectationOutcome,
    RowFailure,
    read_suite,
)

NOT_NULL = "expect_column_values_to_not_be_null"
LENGTHS = "expect_column_value_lengths_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
SUPPORTED: dict[str, frozenset[str]] = {  # expectation type -> the arguments understood
    EXISTS: frozenset({"column"}),
    NOT_NULL: frozenset({"column"}),
    LENGTHS: frozenset({"column", "min_value", "max_value", "strict_min", "strict_max"}),
    IN_SET: frozenset({"column", "value_set"}),
}
TEXT_TYPES = (pa.string(), pa.large_string())


@dataclass(frozen=True)
class Check:
    """One expectation of a suite, as its file declares it."""

    rule: str
    description: str
    expectation: str
    column: str
    kwargs: Mapping[str, Any]


def _is_bound(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _understood(expectation: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether the arguments are exactly ones this module evaluates as GX does."""
    if not set(kwargs) <= SUPPORTED[expectation] or not isinstance(kwargs.get("column"), str):
        return False
    if expectation == LENGTHS:
        bounds = (kwargs.get("min_value"), kwargs.get("max_value"))
        flags = (kwargs.get("strict_min", False), kwargs.get("strict_max", False))
        return (
            all(map(_is_bound, bounds))
            and bounds != (None, None)
            and all(isinstance(flag, bool) for flag in flags)
        )
    if expectation == IN_SET:
        values = kwargs.get("value_set")
        return isinstance(values, list) and all(isinstance(v, str) for v in values)
    return True


def suite_checks(kind: str) -> list[Check] | None:
    """The suite's expectations as column-wise checks, or None when any of them is not one
    this module understands (then GX runs the suite on every batch)."""
    _, data = read_suite(kind)
    checks = []
    for item in data["expectations"]:
        expectation, kwargs = item.get("type"), item.get("kwargs") or {}
        if expectation not in SUPPORTED or not isinstance(kwargs, dict):
            return None
        if not _understood(expectation, kwargs):
            return None
        meta = item["meta"]
        checks.append(
            Check(meta["rule"], meta["description"], expectation, kwargs["column"], kwargs)
        )
    return checks


def text_table(table: pa.Table) -> pa.Table | None:
    """The table with every column as text (all-null columns made text), or None when a column
    holds anything else or a name repeats: then only GX can say what its rules make of it."""
    names = table.column_names
    if len(set(names)) != len(names):
        return None
    columns = []
    for column in table.columns:
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())
        elif column.type not in TEXT_TYPES:
            return None
        columns.append(column.combine_chunks())
    return pa.table(columns, names=names)


def _unexpected(check: Check, values: pa.Array) -> np.ndarray:
    """Rows that break the check; like GX, value rules pass nulls (not-null rules catch them)."""
    if check.expectation == NOT_NULL:
        return values.is_null().to_numpy(zero_copy_only=False)
    if check.expectation == LENGTHS:
        return _bad_length(check.kwargs, pc.utf8_length(values))
    found = pc.is_in(values, value_set=pa.array(check.kwargs["value_set"], values.type))
    return pc.and_(values.is_valid(), pc.invert(found)).to_numpy(zero_copy_only=False)


def _bad_length(kwargs: Mapping[str, Any], lengths: pa.Array) -> np.ndarray:
    bad = np.zeros(len(lengths), dtype=bool)
    known = lengths.is_valid().to_numpy(zero_copy_only=False)
    chars = lengths.fill_null(0).to_numpy(zero_copy_only=False)
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None:
        bad |= chars <= low if kwargs.get("strict_min") else chars < low
    if high is not None:
        bad |= chars >= high if kwargs.get("strict_max") else chars > high
    return bad & known


def _as_text(value: str | None) -> str:
    return NULL_TEXT if value is None else value


class ColumnarRunner:
    """Runs a suite's checks on Arrow batches of text columns, answering as SuiteRunner does."""

    def __init__(self, kind: str, checks: list[Check]) -> None:
        self.kind = kind
        self.checks = checks
        self.required = [c.column for c in checks if c.expectation == EXISTS]

    def validate(self, table: pa.Table) -> BatchOutcome:
        """Every check on every row; ValueError when a required column is absent. `table` must
        be a `text_table`."""
        columns = set(table.column_names)
        missing = [column for column in self.required if column not in columns]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise ValueError(f"missing required column{'s' if len(missing) > 1 else ''} {names}")
        outcomes, failures = [], []
        for check in self.checks:
            if check.column not in columns:
                continue  # an optional column this input does not have
            outcome, found = self._run(check, table)
            outcomes.append(outcome)
            failures += found
        failures.sort(key=lambda failure: failure.row)  # stable: suite order within a row
        return BatchOutcome(rows=table.num_rows, failures=failures, outcomes=outcomes)

    def _run(self, check: Check, table: pa.Table) -> tuple[ExpectationOutcome, list[RowFailure]]:
        rows = np.empty(0, np.int64)
        if check.expectation != EXISTS:
            values = table.column(check.column)
            values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            rows = np.flatnonzero(_unexpected(check, values))
        outcome = ExpectationOutcome(
            rule=check.rule,
            expectation=check.expectation,
            column=check.column,
            success=not len(rows),
            unexpected=len(rows),
            description=check.description,
        )
        if not len(rows):
            return outcome, []
        cells = values.take(pa.array(rows)).to_pylist()
        return outcome, [
            RowFailure(int(row), check.column, check.rule, _as_text(cell))
            for row, cell in zip(rows, cells, strict=True)
        ]
