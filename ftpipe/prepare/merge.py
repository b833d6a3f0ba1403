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
from typing import Any

import numpy as np

from ftpipe import catalog, tokens
from ftpipe.chat_format import RULES as FORMAT_RULES
from ftpipe.estimate import CostEstimate, billed_tokens_per_epoch, cost_for
from ftpipe.prepare import report as reporting
from ftpipe.prepare.dedupe import SeenHashes
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.parts import Counters, KeepBatch, SourcePart, parts_dir, read_part
from ftpipe.prepare.rejects import Reject, RejectsWriter
from ftpipe.prepare.split import ValidationPicker

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


class Merger:
    """Takes the parts in input order, writing train.jsonl and rejects.csv as it goes."""

    def __init__(self, options: PrepareOptions, work: Path) -> None:
        self.options = options
        self.work = work
        self.limit = token_limit(options.model)
        self.rejects = RejectsWriter(work / "rejects.csv")
        self._train = (work / "train.jsonl").open("w", encoding="utf-8")
        self.picker = ValidationPicker(options.seed, self._write_train)
        self.seen = SeenHashes()
        self.counters = Counters()
        self.duplicates = 0
        self.token_counts: list[np.ndarray] = []
        self.summaries: list[reporting.SourceSummary] = []
        self.rules: dict[tuple[str, str, str | None], reporting.RuleOutcome] = {}
        for code, description in FORMAT_RULES.items():
            self._rule(reporting.RuleOutcome("format", code, description))
        self._rule(
            reporting.RuleOutcome("limits", "too_many_tokens", RULE_DESCRIPTIONS["too_many_tokens"])
        )

    def _write_train(self, lines: list[str]) -> None:
        self._train.writelines(line + "\n" for line in lines)  # no batch-sized joined copy

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
        path = Path(part.path)
        for record in read_part(path):
            if isinstance(record, KeepBatch):
                self._keep(summary, record)
            else:
                self.rejects.add_all(record)
        path.unlink()

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
                    _first_user(batch.lines[i]),
                )
                for i in duplicates
            ]
        )
        kept = np.flatnonzero(first)
        self.picker.add([batch.lines[i] for i in kept], batch.hashes[kept])
        self.token_counts.append(batch.counts[kept])
        summary.examples += len(kept)

    def close(self) -> None:
        self._train.close()
        self.rejects.close()

    def finish(self, dataset_id: str, out_dir: Path, ignored: list[str]) -> dict[str, Any]:
        """Write validation.jsonl, drop the parts folder and return the report."""
        validation = self.picker.finish(self.options.validation_share)
        self.close()
        shutil.rmtree(parts_dir(self.work), ignore_errors=True)
        if validation:
            (self.work / "validation.jsonl").write_text(
                "\n".join(validation) + "\n", encoding="utf-8"
            )
        counts = np.concatenate(self.token_counts) if self.token_counts else np.empty(0, np.int64)
        held_out = [
            tokens.count_example_tokens(json.loads(line), self.options.model) for line in validation
        ]
        train_tokens = billed_tokens_per_epoch(
            counts.tolist(), self.limit
        ) - billed_tokens_per_epoch(held_out, self.limit)
        cost = cost_for(int(counts.size) - len(validation), train_tokens, self.options.model)
        return self._report(dataset_id, out_dir, ignored, counts, cost, len(validation))

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
