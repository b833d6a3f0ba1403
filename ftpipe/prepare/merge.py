"""Phase 2 of preparation: the sources' parts, replayed in input order, become one dataset.

Dedupe across files (the first occurrence in input order wins), the deterministic split,
rejects.csv and the report's counts all happen here, in one process, so the result does not
depend on where or in which order the parts were made.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftpipe import catalog
from ftpipe.chat_format import RULES as FORMAT_RULES
from ftpipe.estimate import CostEstimate, billed_tokens_per_epoch, cost_for
from ftpipe.prepare import report as reporting
from ftpipe.prepare.dedupe import SeenHashes
from ftpipe.prepare.gx_process import GxProcess, take_early
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.parts import (
    Counters,
    KeepBatch,
    SourcePart,
    parts_dir,
    read_part,
    remove_part,
)
from ftpipe.prepare.rejects import Reject, RejectsWriter
from ftpipe.prepare.split import ValidationPicker
from ftpipe.prepare.validation import DATA_DOCS, SAMPLE_NOTE, RunSamples, validate_run

GX_PROCESS_MIN_BYTES = 16 * 1024 * 1024  # smaller runs validate in this process
RULE_DESCRIPTIONS = {
    "duplicate": "exact duplicate of an earlier example",
    "too_many_tokens": "example over the model's per-example token limit",
}


def token_limit(model: str) -> int | None:
    """The model's per-example training token limit, None when the catalogue does not know."""
    info = catalog.lookup(model)
    return info.training_token_limit if info else None


def _first_user(line: str) -> str:
    """A duplicate's excerpt: its first user message, read back from the rendered line."""
    messages = json.loads(line)["messages"]
    return str(next((m.get("content") for m in messages if m.get("role") == "user"), ""))


def write_lines(handle: BinaryIO, lines: pa.Array) -> None:
    """Each line and a newline, written from one Arrow buffer (no Python string per line)."""
    if len(lines):
        joined = pc.binary_join_element_wise(lines, "\n", "")
        width = np.int64 if pa.types.is_large_string(joined.type) else np.int32
        size = np.dtype(width).itemsize
        offsets = np.frombuffer(joined.buffers()[1], width, len(joined) + 1, joined.offset * size)
        handle.write(memoryview(joined.buffers()[2])[offsets[0] : offsets[-1]])


class TokenCounts:
    """Token counts of the kept examples, in one growing int64 buffer (8 bytes an example;
    no list of batches to concatenate at the end, no Python int per example)."""

    def __init__(self) -> None:
        self._buffer = np.empty(1024, np.int64)
        self.size = 0

    def extend(self, counts: np.ndarray) -> None:
        needed = self.size + len(counts)
        if needed > len(self._buffer):
            grown = np.empty(max(needed, 2 * len(self._buffer)), np.int64)
            grown[: self.size] = self._buffer[: self.size]
            self._buffer = grown
        self._buffer[self.size : needed] = counts
        self.size = needed

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self.size]


class Merger:
    """Takes the parts in input order, writing train.jsonl and rejects.csv as it goes."""

    def __init__(self, options: PrepareOptions, work: Path, input_bytes: int = 0) -> None:
        """`input_bytes`: the run's size, which decides where GX validates (gx_process.py)."""
        self.options = options
        self.work = work
        self.gx = take_early()
        if self.gx is None and input_bytes >= GX_PROCESS_MIN_BYTES:
            self.gx = GxProcess.start()
        self.limit = token_limit(options.model)
        self.rejects = RejectsWriter(work / "rejects.csv")
        self._train = (work / "train.jsonl").open("wb")
        self.picker = ValidationPicker(options.seed, self._write_train)
        self.seen = SeenHashes()
        self.counters = Counters()
        self.duplicates = 0
        self.token_counts = TokenCounts()
        self.samples = RunSamples()
        self.summaries: list[reporting.SourceSummary] = []
        self.rules: dict[tuple[str, str, str | None], reporting.RuleOutcome] = {}
        for code, description in FORMAT_RULES.items():
            self._rule(reporting.RuleOutcome("format", code, description))
        self._rule(
            reporting.RuleOutcome("limits", "too_many_tokens", RULE_DESCRIPTIONS["too_many_tokens"])
        )

    def _write_train(self, lines: pa.Array) -> None:
        write_lines(self._train, lines)

    def _rule(self, outcome: reporting.RuleOutcome) -> None:
        """Sum a rule's failures; the table keeps the order rules were first met in."""
        key = (outcome.check, outcome.rule, outcome.column)
        if key in self.rules:
            self.rules[key].add(outcome)
        else:
            self.rules[key] = replace(outcome)

    def add(self, part: SourcePart) -> None:
        """Replay one source's part file (rejects and kept batches, in its order), then drop it."""
        summary = replace(part.summary, notes=list(part.summary.notes))
        self.summaries.append(summary)
        self.counters.add(part.counters)
        for outcome in part.rules.values():
            self._rule(outcome)
        for kind, sample in part.samples.items():
            self.samples.add(kind, sample)
        for name in part.paths:
            path = Path(name)
            for record in read_part(path):
                if isinstance(record, KeepBatch):
                    self._keep(summary, record)
                else:
                    self.rejects.add_all(record)
            remove_part(path)

    def _keep(self, summary: reporting.SourceSummary, batch: KeepBatch) -> None:
        """Drop duplicates of earlier examples, then hand the rest to the split."""
        first = self.seen.first_seen(batch.hashes)
        duplicates = np.flatnonzero(~first)
        self.duplicates += len(duplicates)
        self.rejects.add_all(
            [
                Reject(
                    summary.name,
                    int(batch.line_numbers[i]),
                    "*",
                    "duplicate",
                    _first_user(batch.lines[int(i)].as_py()),
                )
                for i in duplicates
            ]
        )
        if len(duplicates):
            lines, counts = batch.lines.filter(pa.array(first)), batch.counts[first]
            hashes = batch.hashes[first]
        else:
            lines, counts, hashes = batch.lines, batch.counts, batch.hashes
        self.picker.add(lines, hashes, counts)
        self.token_counts.extend(counts)
        summary.examples += len(counts)

    def close(self) -> None:
        self._close_files()
        if self.gx is not None:
            self.gx.close()

    def _close_files(self) -> None:
        self._train.close()
        self.rejects.close()

    def finish(self, dataset_id: str, out_dir: Path, ignored: list[str]) -> dict[str, Any]:
        """Write validation.jsonl, drop the parts folder, have GX validate the run's sample
        and return the report."""
        validation, held_out = self.picker.finish(self.options.validation_share)
        self._close_files()
        shutil.rmtree(parts_dir(self.work), ignore_errors=True)
        if len(validation):
            with (self.work / "validation.jsonl").open("wb") as handle:
                write_lines(handle, validation)
        counts = self.token_counts.values
        train_tokens = billed_tokens_per_epoch(counts, self.limit) - billed_tokens_per_epoch(
            held_out, self.limit
        )
        cost = cost_for(int(counts.size) - len(validation), train_tokens, self.options.model)
        report = self._report(dataset_id, out_dir, ignored, counts, cost, len(validation))
        self._validate_with_gx(report, out_dir)
        return report

    def _validate_with_gx(self, report: dict[str, Any], out_dir: Path) -> None:
        """GX's validation of the run's sample, per suite, with Data Docs beside the outputs."""
        pa.default_memory_pool().release_unused()  # the batches are gone; GX's import is not
        gx, self.gx = self.gx, None
        try:
            validations = validate_run(self.samples, self.work / DATA_DOCS, gx)
        finally:
            if gx is not None:
                gx.close()  # a run with no sample never asked it
        docs = f"{DATA_DOCS}/index.html" if validations else None  # in the dataset's folder
        report["great_expectations"] = {
            "data_docs": docs,
            "validations": validations,
            "note": SAMPLE_NOTE,
        }
        report["outputs"]["data_docs"] = str(out_dir / docs) if docs else None

    def _report(
        self,
        dataset_id: str,
        out_dir: Path,
        ignored: list[str],
        counts: np.ndarray,
        cost: CostEstimate,
        validation: int,
    ) -> dict[str, Any]:
        c = self.counters
        kept = int(counts.size)
        return {
            "dataset_id": dataset_id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "status": "ok",
            "error": None,
            "options": self.options.model_dump(mode="json"),
            "counts": {
                "input_rows": c.input_rows,
                "rejected": self.rejects.counted,
                "duplicates_dropped": self.duplicates,
                "truncated": c.truncated,
                "over_token_limit_rejected": c.over_limit,
                "examples": kept,
                "train": kept - validation,
                "validation": validation,
            },
            "rejects_by_rule": dict(sorted(self.rejects.by_rule.items())),
            "sources": [asdict(s) for s in self.summaries],
            "ignored_files": ignored,
            "cleanup": [
                {"step": "trim whitespace (cells changed)", "count": c.trimmed_cells},
                {"step": "drop exact duplicates", "count": self.duplicates},
                {"step": "truncate examples over the token limit", "count": c.truncated},
                {"step": "reject examples over the token limit", "count": c.over_limit},
            ],
            "rules": [r.as_dict() for r in self.rules.values()],
            "redaction": reporting.redaction_dict(self.options.redact, c.redacted),
            "tokens": reporting.token_summary(counts, self.limit),
            "cost": reporting.cost_dict(cost),
            "outputs": {
                "train": str(out_dir / "train.jsonl"),
                "validation": str(out_dir / "validation.jsonl") if validation else None,
                "rejects": str(out_dir / "rejects.csv"),
                "report_json": str(out_dir / "report.json"),
                "report_md": str(out_dir / "report.md"),
            },
        }
