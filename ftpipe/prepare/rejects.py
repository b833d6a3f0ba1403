"""rejects.csv: every row that did not become an example, with where it came from and why."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

EXCERPT_CHARS = 200
HEADER = ("source", "line", "column", "rule", "value")
# Clean-up and filters asked for, not data errors: listed, but not counted against max_rejects.
CLEANUP_RULES = frozenset({"duplicate", "sentiment_filtered"})
ROW_TOO_LONG = "row_too_long"
# Rows the CSV reader itself turns away, before any column is mapped: rule -> description.
READ_RULES = {
    ROW_TOO_LONG: "The row must fit the CSV reader's block (4 MiB of text by default); a longer "
    "one is not read, and the rows around it are.",
}


@dataclass(frozen=True)
class Reject:
    source: str
    line: int
    column: str
    rule: str
    value: str


def excerpt(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


class RejectsWriter:
    """Streams rejects to CSV and counts them by rule."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_rule: Counter[str] = Counter()
        self._rejected_rows: set[tuple[str, int]] = set()
        self._file = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(HEADER)

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def add(self, reject: Reject) -> None:
        self.by_rule[reject.rule] += 1
        if reject.rule not in CLEANUP_RULES:
            self._rejected_rows.add((reject.source, reject.line))
        self._csv.writerow(
            (reject.source, reject.line, reject.column, reject.rule, excerpt(reject.value))
        )

    def add_all(self, rejects: list[Reject]) -> None:
        for reject in rejects:
            self.add(reject)

    @property
    def counted(self) -> int:
        """Rows rejected for breaking a rule (a row breaking two counts once; clean-up drops
        do not count): what max_rejects is compared with."""
        return len(self._rejected_rows)

    @property
    def total(self) -> int:
        return sum(self.by_rule.values())
