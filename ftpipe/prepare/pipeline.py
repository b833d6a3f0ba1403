"""Dataset preparation end to end: read, map, validate, clean, count, split, write, report.

CSV batches stay columnar from the reader to the JSONL writer; dialogues and chat JSONL go
example by example. Both meet in `_Run.keep`, which drops duplicates, splits and writes.
Outputs are built in a scratch folder and moved into `<out_root>/<dataset-id>/` only when the
run succeeds; a failed run leaves its report and rejects.csv there but no JSONL.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ftpipe import catalog, tokens
from ftpipe.chat_format import MIN_EXAMPLES, check_example
from ftpipe.chat_format import RULES as FORMAT_RULES
from ftpipe.errors import InputError
from ftpipe.estimate import CostEstimate, billed_tokens_per_epoch, cost_for
from ftpipe.prepare import report as reporting
from ftpipe.prepare.csv_reader import CsvBatch, read_csv_batches, read_csv_text
from ftpipe.prepare.dedupe import SeenHashes, example_hashes
from ftpipe.prepare.dialogues import read_dialogue_file, split_conversations
from ftpipe.prepare.expectations import BatchOutcome, SuiteRunner
from ftpipe.prepare.mapping import (
    ColumnPlan,
    apply_plan,
    plan_columns,
    to_chat_columns,
    trimmed_cells,
)
from ftpipe.prepare.options import PrepareOptions, default_output_root
from ftpipe.prepare.rejects import CLEANUP_RULES, Reject, RejectsWriter
from ftpipe.prepare.render import render_columns, render_example
from ftpipe.prepare.sources import Source, content_digest, resolve_sources
from ftpipe.prepare.split import ValidationPicker

Progress = Callable[[str, int, int], None]  # (what, done bytes, total bytes)
EXAMPLE_CHUNK = 20_000
FORMAT_SPOT_CHECK = 50
RULE_DESCRIPTIONS = {
    "duplicate": "exact duplicate of an earlier example",
    "too_many_tokens": "example over the model's per-example token limit",
}


class PrepareFailed(InputError):
    """The run finished reading but its result must not be used (too many rejects, too few)."""

    def __init__(self, source: str, problem: str, report: dict[str, Any]) -> None:
        super().__init__(source, problem)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.problem, self.report))


@dataclass
class Example:
    """One example from a row-wise source, with where it came from."""

    source: str
    line: int
    messages: list[dict[str, Any]]


@dataclass
class PrepareResult:
    dataset_id: str
    out_dir: Path
    report: dict[str, Any]

    @property
    def train_path(self) -> Path:
        return self.out_dir / "train.jsonl"

    @property
    def validation_path(self) -> Path | None:
        path = self.out_dir / "validation.jsonl"
        return path if path.exists() else None


@dataclass
class _Counters:
    input_rows: int = 0
    trimmed_cells: int = 0
    duplicates: int = 0
    truncated: int = 0
    over_limit: int = 0


@dataclass
class _Run:
    """The state of one preparation run."""

    options: PrepareOptions
    work: Path
    progress: Progress | None
    total_bytes: int
    rejects: RejectsWriter = field(init=False)
    seen: SeenHashes = field(default_factory=SeenHashes)
    counters: _Counters = field(default_factory=_Counters)
    token_counts: list[np.ndarray] = field(default_factory=list)
    rules: dict[tuple[str, str, str | None], reporting.RuleOutcome] = field(default_factory=dict)
    summaries: list[reporting.SourceSummary] = field(default_factory=list)
    runners: dict[str, SuiteRunner] = field(default_factory=dict)
    done_bytes: int = 0

    def __post_init__(self) -> None:
        self.rejects = RejectsWriter(self.work / "rejects.csv")
        self._train = (self.work / "train.jsonl").open("w", encoding="utf-8")
        self.picker = ValidationPicker(self.options.seed, self._write_train)
        info = catalog.lookup(self.options.model)
        self.limit = info.training_token_limit if info else None
        for code, description in FORMAT_RULES.items():
            self.rule("format", code, None, description, 0)
        self.rule("limits", "too_many_tokens", None, RULE_DESCRIPTIONS["too_many_tokens"], 0)
        self.role_tokens = {
            role: tokens.count_tokens(role, self.options.model)
            for role in ("system", "user", "assistant")
        }

    # -- bookkeeping -----------------------------------------------------------------------

    def _write_train(self, lines: list[str]) -> None:
        self._train.writelines(line + "\n" for line in lines)  # no batch-sized joined copy

    def advance(self, source: str, done: int) -> None:
        self.done_bytes = done
        if self.progress:
            self.progress(source, min(done, self.total_bytes), self.total_bytes)

    def runner(self, kind: str) -> SuiteRunner:
        if kind not in self.runners:
            self.runners[kind] = SuiteRunner(kind)
        return self.runners[kind]

    def rule(
        self, check: str, rule: str, column: str | None, description: str, failed: int
    ) -> None:
        key = (check, rule, column)
        outcome = self.rules.setdefault(
            key, reporting.RuleOutcome(check, rule, description, column)
        )
        outcome.failed_rows += failed

    def record_gx(self, kind: str, outcome: BatchOutcome) -> None:
        for item in outcome.outcomes:
            self.rule(f"gx:{kind}", item.rule, item.column, item.description, item.unexpected)

    def reject(self, summary: reporting.SourceSummary, rejects: list[Reject]) -> None:
        self.rejects.add_all(rejects)
        summary.rejected += len({r.line for r in rejects if r.rule not in CLEANUP_RULES})

    # -- the shared tail: limits, duplicates, split ---------------------------------------

    def keep(
        self,
        summary: reporting.SourceSummary,
        lines: list[str],
        counts: np.ndarray,
        line_numbers: np.ndarray,
        excerpts: list[str],
    ) -> None:
        """Drop duplicates of earlier examples, then hand the rest to the split."""
        if not lines:
            return
        hashes = example_hashes(lines)
        first = self.seen.first_seen(hashes)
        duplicates = np.flatnonzero(~first)
        self.counters.duplicates += len(duplicates)
        self.reject(
            summary,
            [
                Reject(summary.name, int(line_numbers[i]), "*", "duplicate", excerpts[i])
                for i in duplicates
            ],
        )
        kept = np.flatnonzero(first)
        self.picker.add([lines[i] for i in kept], hashes[kept])
        self.token_counts.append(counts[kept])
        summary.examples += len(kept)

    def close(self) -> None:
        self._train.close()
        self.rejects.close()


# -- CSV: columnar all the way ------------------------------------------------------------


def _column_tokens(values: pa.Array, model: str) -> np.ndarray:
    """Token counts of a string array, encoding each distinct value once."""
    encoded = pc.dictionary_encode(values)
    distinct = np.asarray(tokens.count_batch(encoded.dictionary.to_pylist(), model), np.int64)
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)] if len(distinct) else distinct


def _example_tokens(run: _Run, columns: dict[str, pa.Array]) -> np.ndarray:
    """OpenAI's per-example count: 3 per message plus role and content tokens, plus 3."""
    rows = len(columns["user"])
    total = np.full(rows, 3, dtype=np.int64)
    for role, values in columns.items():
        total += 3 + run.role_tokens[role] + _column_tokens(values, run.options.model)
        if role == "system":
            total -= np.where(
                pc.equal(values, "").to_numpy(zero_copy_only=False), 3 + run.role_tokens[role], 0
            )
    return total


def _spot_check(run: _Run, lines: list[str]) -> None:
    """CSV examples are well-formed by construction; a sample per batch proves it stays so."""
    for line in lines[:FORMAT_SPOT_CHECK]:
        issues = check_example(json.loads(line))
        if issues:
            raise AssertionError(f"rendered an invalid example ({issues[0].code}): {line[:200]}")


def _csv_rows(source: Source) -> Iterator[CsvBatch]:
    if source.text is not None:
        return read_csv_text(source.text, name=source.name)
    assert source.path is not None
    return read_csv_batches(source.path)


def _gx_rejects(plan: ColumnPlan, batch: CsvBatch, outcome: BatchOutcome) -> list[Reject]:
    return [
        Reject(
            batch.source,
            int(batch.lines[f.row]),
            plan.columns.get(f.column, f.column),
            f.rule,
            f.value,
        )
        for f in outcome.failures
    ]


def _over_limit(
    run: _Run, columns: dict[str, pa.Array], counts: np.ndarray, lines: list[str]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Truncate (when asked) or mark for rejection the examples over the token limit."""
    over = np.flatnonzero(counts > run.limit) if run.limit else np.empty(0, np.int64)
    dropped = np.zeros(len(lines), dtype=bool)
    for i in over:
        messages = [
            {"role": role, "content": columns[role][i].as_py()}
            for role in ("system", "user", "assistant")
            if role in columns and columns[role][i].as_py() != ""
        ]
        fitted = _truncate(run, messages) if run.options.truncate else None
        if fitted is None:
            dropped[i] = True
            run.counters.over_limit += 1
            continue
        run.counters.truncated += 1
        lines[i] = render_example(fitted)
        counts[i] = tokens.count_message_tokens(fitted, run.options.model)
    return counts, lines, dropped


def _truncate(run: _Run, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Cut the last message so the example fits the limit; None when nothing is left of it."""
    assert run.limit is not None
    model = run.options.model
    last = messages[-1]
    budget = tokens.count_tokens(last["content"], model)
    while budget > 0:
        excess = tokens.count_message_tokens(messages, model) - run.limit
        if excess <= 0:
            return messages
        budget -= excess
        if budget <= 0:
            return None
        last = {
            **last,
            "content": tokens.truncate_to_tokens(messages[-1]["content"], budget, model),
        }
        messages = [*messages[:-1], last]
    return None


def _prepare_csv(run: _Run, source: Source) -> None:
    summary = reporting.SourceSummary(source.name, source.kind)
    run.summaries.append(summary)
    plan: ColumnPlan | None = None
    start, read = run.done_bytes, 0
    for batch in _csv_rows(source):
        if plan is None:
            plan = plan_columns(source.name, batch.columns, run.options)
            summary.notes.append(f"columns: {plan.describe()}")
            if batch.dialect.note:
                summary.notes.append(batch.dialect.note)
            if batch.dialect.delimiter != ",":
                summary.notes.append(f"delimiter {batch.dialect.delimiter!r}")
        _prepare_csv_batch(run, summary, plan, batch)
        read += _batch_bytes(batch.table)
        run.advance(source.name, start + min(read, source.size))
    run.advance(source.name, start + source.size)


def _batch_bytes(table: pa.Table) -> int:
    """About how many bytes of the source a batch covered (cells, delimiters, newlines)."""
    cells = sum(pc.sum(pc.binary_length(column)).as_py() or 0 for column in table.columns)
    return cells + table.num_rows * max(1, table.num_columns)


def _prepare_csv_batch(
    run: _Run, summary: reporting.SourceSummary, plan: ColumnPlan, batch: CsvBatch
) -> None:
    rows = batch.table.num_rows
    summary.rows += rows
    run.counters.input_rows += rows
    run.counters.trimmed_cells += trimmed_cells(plan, batch.table)
    mapped = apply_plan(plan, batch.table)
    outcome = run.runner(plan.kind).validate(mapped.to_pandas())
    run.record_gx(plan.kind, outcome)
    run.reject(summary, _gx_rejects(plan, batch, outcome))
    good = np.ones(rows, dtype=bool)
    good[list(outcome.failed_rows)] = False
    if not good.any():
        return
    kept = mapped.filter(pa.array(good))
    line_numbers = batch.lines[good]
    columns = to_chat_columns(plan, kept)
    lines = render_columns(columns).to_pylist()
    counts = _example_tokens(run, columns)
    counts, lines, dropped = _over_limit(run, columns, counts, lines)
    user = columns["user"]
    over = [
        Reject(
            batch.source,
            int(line_numbers[i]),
            "*",
            "too_many_tokens",
            f"{counts[i]} tokens > {run.limit}: {user[i].as_py()}",
        )
        for i in np.flatnonzero(dropped)
    ]
    _count_format_rules(run, over)
    run.reject(summary, over)
    _spot_check(run, lines)
    survivors = np.flatnonzero(~dropped)
    if len(survivors) < len(lines):
        lines = [lines[i] for i in survivors]
        user = user.take(pa.array(survivors))
    run.keep(summary, lines, counts[survivors], line_numbers[survivors], user.to_pylist())


# -- dialogues and chat JSONL: example by example -------------------------------------------


def _jsonl_examples(source: Source) -> Iterator[tuple[int, Any]]:
    """(line, parsed object or the parse error text) for each non-blank line."""
    assert source.path is not None
    with source.path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield number, error


def _turn_frame(examples: list[Example]) -> tuple[pd.DataFrame, list[int]]:
    """One row per message (role, content, sentiment) and the example each row belongs to."""
    roles, contents, sentiments, owners = [], [], [], []
    for position, example in enumerate(examples):
        for message in example.messages:
            roles.append(message.get("role"))
            content = message.get("content")
            contents.append(content if isinstance(content, str) else json.dumps(content))
            sentiments.append(message.get("sentiment"))
            owners.append(position)
    frame = pd.DataFrame({"role": roles, "content": contents, "sentiment": sentiments})
    return frame, owners


def _prepare_examples(run: _Run, summary: reporting.SourceSummary, examples: list[Example]) -> None:
    """GX over the turns, the chat-format rules, token limits, then the shared tail."""
    if not examples:
        return
    frame, owners = _turn_frame(examples)
    bad: dict[int, Reject] = {}
    if len(frame):
        outcome = run.runner("dialogues").validate(frame)
        run.record_gx("dialogues", outcome)
        for failure in outcome.failures:
            example = examples[owners[failure.row]]
            bad.setdefault(
                owners[failure.row],
                Reject(example.source, example.line, failure.column, failure.rule, failure.value),
            )
    lines: list[str] = []
    counts: list[int] = []
    line_numbers: list[int] = []
    excerpts: list[str] = []
    for position, example in enumerate(examples):
        if position in bad:
            continue
        messages = [{k: v for k, v in m.items() if k != "sentiment"} for m in example.messages]
        issues = check_example({"messages": messages})
        if issues:
            bad[position] = Reject(
                example.source, example.line, "messages", issues[0].code, issues[0].message
            )
            continue
        count = tokens.count_message_tokens(messages, run.options.model)
        if run.limit and count > run.limit:
            fitted = _truncate(run, messages) if run.options.truncate else None
            if fitted is None:
                run.counters.over_limit += 1
                bad[position] = Reject(
                    example.source,
                    example.line,
                    "*",
                    "too_many_tokens",
                    f"{count} tokens > {run.limit}",
                )
                continue
            run.counters.truncated += 1
            messages, count = fitted, tokens.count_message_tokens(fitted, run.options.model)
        lines.append(render_example(messages))
        counts.append(count)
        first_user = next((m.get("content") for m in messages if m.get("role") == "user"), "")
        line_numbers.append(example.line)
        excerpts.append(str(first_user))
    _count_format_rules(run, list(bad.values()))
    run.reject(summary, sorted(bad.values(), key=lambda r: r.line))
    run.keep(summary, lines, np.asarray(counts, np.int64), np.asarray(line_numbers), excerpts)


def _count_format_rules(run: _Run, rejects: list[Reject]) -> None:
    """Chat-format issues join the GX rules in the report's rule table."""
    for reject in rejects:
        if reject.rule in FORMAT_RULES:
            run.rule("format", reject.rule, None, FORMAT_RULES[reject.rule], 1)
        elif reject.rule == "too_many_tokens":
            run.rule("limits", reject.rule, None, RULE_DESCRIPTIONS[reject.rule], 1)


def _trimmed(run: _Run, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Message contents without surrounding whitespace, counted like trimmed CSV cells."""
    result = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and content != content.strip():
            run.counters.trimmed_cells += 1
            message = {**message, "content": content.strip()}
        result.append(message)
    return result


def _prepare_jsonl(run: _Run, source: Source) -> None:
    summary = reporting.SourceSummary(source.name, source.kind)
    run.summaries.append(summary)
    chunk: list[Example] = []
    parse_errors: list[Reject] = []
    for number, parsed in _jsonl_examples(source):
        summary.rows += 1
        run.counters.input_rows += 1
        if isinstance(parsed, Exception):
            parse_errors.append(Reject(source.name, number, "*", "invalid_json", str(parsed)))
            continue
        messages = parsed.get("messages") if isinstance(parsed, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            issue = check_example(parsed)
            code, message = (issue[0].code, issue[0].message) if issue else ("data_type", "")
            parse_errors.append(Reject(source.name, number, "messages", code, message))
            continue
        chunk.append(Example(source.name, number, _trimmed(run, messages)))
        if len(chunk) >= EXAMPLE_CHUNK:
            _prepare_examples(run, summary, chunk)
            chunk = []
    _count_format_rules(run, parse_errors)
    run.reject(summary, parse_errors)
    _prepare_examples(run, summary, chunk)
    run.advance(source.name, run.done_bytes + source.size)


def _prepare_dialogues(run: _Run, source: Source) -> None:
    assert source.path is not None
    summary = reporting.SourceSummary(source.name, source.kind)
    run.summaries.append(summary)
    turns = read_dialogue_file(source.path)
    summary.rows = len(turns)
    run.counters.input_rows += len(turns)
    sentiments = set(run.options.sentiments) if run.options.sentiments else None
    result = split_conversations(
        turns, source.name, sentiments=sentiments, redact=run.options.redact
    )
    run.reject(
        summary, [Reject(d.source, d.turn, d.field, d.rule, d.value) for d in result.dropped]
    )
    for dropped in result.dropped:
        run.rule("dialogues", dropped.rule, dropped.field, "dialogue clean-up", 1)
    examples = [Example(c.source, c.first_turn, c.messages) for c in result.conversations]
    if run.options.redact:
        summary.notes.append("e-mails, phone numbers and card numbers redacted")
    _prepare_examples(run, summary, examples)
    run.advance(source.name, run.done_bytes + source.size)


PREPARERS: dict[str, Callable[[_Run, Source], None]] = {
    "csv": _prepare_csv,
    "csv_text": _prepare_csv,
    "jsonl": _prepare_jsonl,
    "dialogues": _prepare_dialogues,
}


# -- the run as a whole ---------------------------------------------------------------------


def _finish(run: _Run, dataset_id: str, out_dir: Path, ignored: list[str]) -> dict[str, Any]:
    validation = run.picker.finish(run.options.validation_share)
    run.close()
    if validation:
        (run.work / "validation.jsonl").write_text("\n".join(validation) + "\n", encoding="utf-8")
    counts = np.concatenate(run.token_counts) if run.token_counts else np.empty(0, np.int64)
    held_out = [
        tokens.count_message_tokens(json.loads(line)["messages"], run.options.model)
        for line in validation
    ]
    train_tokens = billed_tokens_per_epoch(counts.tolist(), run.limit) - billed_tokens_per_epoch(
        held_out, run.limit
    )
    cost = cost_for(int(counts.size) - len(validation), train_tokens, run.options.model)
    return _report(run, dataset_id, out_dir, ignored, counts, cost, len(validation))


def _report(
    run: _Run,
    dataset_id: str,
    out_dir: Path,
    ignored: list[str],
    counts: np.ndarray,
    cost: CostEstimate,
    validation: int,
) -> dict[str, Any]:
    c = run.counters
    kept = int(counts.size)
    return {
        "dataset_id": dataset_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "ok",
        "error": None,
        "options": run.options.model_dump(mode="json"),
        "counts": {
            "input_rows": c.input_rows,
            "rejected": run.rejects.counted,
            "duplicates_dropped": c.duplicates,
            "truncated": c.truncated,
            "over_token_limit_rejected": c.over_limit,
            "examples": kept,
            "train": kept - validation,
            "validation": validation,
        },
        "rejects_by_rule": dict(sorted(run.rejects.by_rule.items())),
        "sources": [asdict(s) for s in run.summaries],
        "ignored_files": ignored,
        "cleanup": [
            {"step": "trim whitespace (cells changed)", "count": c.trimmed_cells},
            {"step": "drop exact duplicates", "count": c.duplicates},
            {"step": "truncate examples over the token limit", "count": c.truncated},
            {"step": "reject examples over the token limit", "count": c.over_limit},
        ],
        "rules": [
            {
                "check": r.check,
                "rule": r.rule,
                "column": r.column,
                "description": r.description,
                "failed_rows": r.failed_rows,
                "success": r.success,
            }
            for r in run.rules.values()
        ],
        "tokens": reporting.token_summary(counts, run.limit),
        "cost": reporting.cost_dict(cost),
        "outputs": {
            "train": str(out_dir / "train.jsonl"),
            "validation": str(out_dir / "validation.jsonl") if validation else None,
            "rejects": str(out_dir / "rejects.csv"),
            "report_json": str(out_dir / "report.json"),
            "report_md": str(out_dir / "report.md"),
        },
    }


def _check_outcome(report: dict[str, Any], options: PrepareOptions, out_dir: Path) -> str | None:
    counts = report["counts"]
    allowed = options.max_rejects
    if allowed is None:
        allowed = counts["input_rows"] // 10
    if counts["rejected"] > allowed:
        return (
            f"{counts['rejected']} of {counts['input_rows']} rows were rejected, more than the "
            f"{allowed} allowed (--max-rejects); see {out_dir / 'rejects.csv'}"
        )
    if counts["train"] < MIN_EXAMPLES:
        return (
            f"only {counts['train']} training examples remain after validation and clean-up; "
            f"OpenAI needs at least {MIN_EXAMPLES}; see {out_dir / 'rejects.csv'}"
        )
    return None


def _publish(work: Path, out_dir: Path, report: dict[str, Any], failed: bool) -> None:
    """Move the outputs into place; a failed run keeps only its report and rejects."""
    if failed:
        for name in ("train.jsonl", "validation.jsonl"):
            (work / name).unlink(missing_ok=True)
            report["outputs"][name.split(".")[0]] = None
    reporting.write_json(work / "report.json", report)
    (work / "report.md").write_text(reporting.markdown(report), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work.rename(out_dir)


def prepare(
    inputs: Sequence[str | Path],
    options: PrepareOptions | None = None,
    *,
    csv_text: str | None = None,
    out_root: Path | None = None,
    progress: Progress | None = None,
) -> PrepareResult:
    """Prepare a dataset; raises InputError for unreadable input and PrepareFailed when the
    result breaks the rules (too many rejects, too few examples)."""
    options = options or PrepareOptions()
    out_root = out_root or default_output_root()
    resolved = resolve_sources(inputs, csv_text, exclude=out_root)
    dataset_id = content_digest(resolved.sources, options.fingerprint())
    out_dir = out_root / dataset_id
    work = out_root / f".{dataset_id}.partial"
    if work.exists():
        shutil.rmtree(work)
    created_root = not out_root.exists()
    work.mkdir(parents=True)
    total = sum(source.size for source in resolved.sources)
    run = _Run(options, work, progress, total)
    try:
        for source in resolved.sources:
            PREPARERS[source.kind](run, source)
        report = _finish(run, dataset_id, out_dir, resolved.ignored)
    except BaseException:
        run.close()
        shutil.rmtree(work, ignore_errors=True)
        if created_root and not any(out_root.iterdir()):
            out_root.rmdir()
        raise
    problem = _check_outcome(report, options, out_dir)
    if problem:
        report.update(status="failed", error=problem)
    _publish(work, out_dir, report, failed=problem is not None)
    if problem:
        raise PrepareFailed(f"dataset {dataset_id}", problem, report)
    return PrepareResult(dataset_id, out_dir, report)
