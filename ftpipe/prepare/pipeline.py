"""Dataset preparation end to end: read, map, validate, clean, count, split, write, report.

Two phases with one code path, however they are run. `prepare_source` takes one source (a file
or the CSV text) through everything that needs only that source: reading, mapping, the GX
suites, the chat-format rules, token counts and limits. It streams its rejects and surviving
examples to a part file (parts.py). `finish_run` replays the parts in input order: dedupe across
files, the split, rejects.csv and the report (merge.py). `prepare` runs both in this process,
one source after the other; the prepare_dataset flow runs one `prepare_source` task per source.
CSV batches stay columnar from the reader to the JSONL writer; dialogues and chat JSONL go
example by example. Outputs are built in a scratch folder and moved into
`<out_root>/<dataset-id>/` only when the run succeeds; a failed run leaves its report and
rejects.csv there but no JSONL.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ftpipe import tokens
from ftpipe.chat_format import EXAMPLE_KEYS, MIN_EXAMPLES, check_example, is_function_calling
from ftpipe.chat_format import RULES as FORMAT_RULES
from ftpipe.errors import InputError
from ftpipe.prepare import parallel
from ftpipe.prepare import report as reporting
from ftpipe.prepare.columnar import Check
from ftpipe.prepare.csv_reader import (
    CsvBatch,
    csv_text_header,
    read_csv_batches,
    read_csv_text,
    read_text_lines,
)
from ftpipe.prepare.dedupe import example_hashes
from ftpipe.prepare.dialogues import (
    DROP_RULES,
    SENTIMENT_FILTERED,
    DialogueFile,
    jsonl_records,
    read_dialogue_log,
    split_conversations,
)
from ftpipe.prepare.expectations import BatchOutcome
from ftpipe.prepare.mapping import (
    ColumnPlan,
    apply_plan,
    is_label_header,
    plan_columns,
    to_chat_columns,
    trimmed_cells,
)
from ftpipe.prepare.merge import RULE_DESCRIPTIONS, Merger, token_limit
from ftpipe.prepare.options import PrepareOptions, default_output_root
from ftpipe.prepare.parts import (
    Counters,
    KeepBatch,
    PartWriter,
    RuleKey,
    SourcePart,
    part_path,
    parts_dir,
)
from ftpipe.prepare.redaction import KINDS as REDACTION_KINDS
from ftpipe.prepare.rejects import CLEANUP_RULES, READ_RULES, Reject
from ftpipe.prepare.render import render_columns, render_example
from ftpipe.prepare.report import REDACTION_NAMES
from ftpipe.prepare.sources import (
    Resolved,
    Source,
    content_digest,
    resolve_sources,
)
from ftpipe.prepare.validation import SourceSample, SourceValidator
from ftpipe.settings import path_kind, unusable_folder

Progress = Callable[[str, int, int], None]  # (what, done bytes, total bytes)
SourceProgress = Callable[[int], None]  # bytes of one source read so far
EXAMPLE_CHUNK = 20_000
FORMAT_SPOT_CHECK = 50

__all__ = [
    "PrepareFailed",
    "PrepareResult",
    "Progress",
    "RunPlan",
    "SourcePart",
    "check_paths",
    "discard_run",
    "finish_run",
    "input_problem",
    "plan_run",
    "prepare",
    "prepare_source",
]


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
    extras: dict[str, Any] = field(default_factory=dict)  # tools, functions, parallel_tool_calls


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


@dataclass(frozen=True)
class RunPlan:
    """What is fixed before any source is read: the sources, the dataset id, the folders."""

    dataset_id: str
    sources: list[Source]
    sizes: list[int]
    ignored: list[str]
    options: PrepareOptions
    out_root: Path
    created_root: bool
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}, for people

    @property
    def out_dir(self) -> Path:
        return self.out_root / self.dataset_id

    @property
    def work(self) -> Path:
        """The scratch folder: absolute, so a worker in another process finds the same one, and
        one per run, so two runs on the same data (a double submit) never share it."""
        return (self.out_root / f".{self.dataset_id}.{self.run_id}.partial").absolute()

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


@dataclass
class _SourceRun:
    """The state of preparing one source."""

    options: PrepareOptions
    source: Source
    writer: PartWriter
    progress: SourceProgress | None
    counters: Counters = field(default_factory=Counters)
    rules: dict[RuleKey, reporting.RuleOutcome] = field(default_factory=dict)
    runners: dict[str, SourceValidator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.summary = reporting.SourceSummary(self.source.name, self.source.kind)
        self.size = self.source.size
        self.limit = token_limit(self.options.model)
        # resolved once: finding a local model reads the settings (more than a count costs)
        self.count_example = tokens.example_counter(self.options.model)
        self.role_tokens = {
            role: tokens.count_tokens(role, self.options.model)
            for role in ("system", "user", "assistant")
        }

    # -- bookkeeping -----------------------------------------------------------------------

    def advance(self, done: int) -> None:
        if self.progress:
            self.progress(min(done, self.size))

    def runner(self, kind: str) -> SourceValidator:
        if kind not in self.runners:
            self.runners[kind] = SourceValidator(kind)
        return self.runners[kind]

    def rule(
        self,
        check: str,
        rule: str,
        column: str | None,
        description: str,
        failed: int = 0,
        *,
        checked: int = 0,
        built: int = 0,
        sampled: int = 0,
    ) -> None:
        """Count a rule's failures and the rows it covered (run on, or true by construction)."""
        key = (check, rule, column)
        outcome = self.rules.setdefault(
            key, reporting.RuleOutcome(check, rule, description, column)
        )
        outcome.add(
            reporting.RuleOutcome(check, rule, description, column, failed, checked, built, sampled)
        )

    def cover_format(self, *, checked: int = 0, built: int = 0, sampled: int = 0) -> None:
        """The chat-format rules ran on `checked` rows, or hold for `built` rows (`sampled`
        of them spot-checked)."""
        for code, description in FORMAT_RULES.items():
            self.rule(
                "format", code, None, description, checked=checked, built=built, sampled=sampled
            )

    def cover_limit(self, checked: int) -> None:
        """The token limit was compared with `checked` examples (none when it is unknown)."""
        if self.limit:
            rule = "too_many_tokens"
            self.rule("limits", rule, None, RULE_DESCRIPTIONS[rule], checked=checked)

    def record_gx(self, kind: str, outcome: BatchOutcome) -> None:
        for item in outcome.outcomes:
            self.rule(
                f"gx:{kind}",
                item.rule,
                item.column,
                item.description,
                item.unexpected,
                checked=outcome.rows,
            )

    def reject(self, rejects: list[Reject]) -> None:
        self.writer.rejects(rejects)
        self.summary.rejected += len({r.line for r in rejects if r.rule not in CLEANUP_RULES})

    def keep(self, lines: pa.Array, counts: np.ndarray, line_numbers: np.ndarray) -> None:
        """Hand examples that passed this source's rules to the merge (dedupe, split)."""
        if len(lines):
            self.writer.keep(KeepBatch(lines, counts, line_numbers, example_hashes(lines)))


# -- CSV: columnar all the way ------------------------------------------------------------


def _column_tokens(values: pa.Array, model: str) -> np.ndarray:
    """Token counts of a string array, encoding each distinct value once."""
    encoded = pc.dictionary_encode(values)
    distinct = np.asarray(tokens.count_batch(encoded.dictionary.to_pylist(), model), np.int64)
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)] if len(distinct) else distinct


def _templated_tokens(
    count: Callable[[Mapping[str, Any]], int], columns: dict[str, pa.Array]
) -> np.ndarray:
    """Exact counts for a model whose template is not additive per cell (a local model)."""
    cells = {
        role: columns[role].to_pylist()
        for role in ("system", "user", "assistant")
        if role in columns
    }

    def messages(i: int) -> list[dict[str, Any]]:
        return [{"role": r, "content": v[i]} for r, v in cells.items() if v[i] != ""]

    return np.fromiter(
        (count({"messages": messages(i)}) for i in range(len(columns["user"]))),
        np.int64,
        count=len(columns["user"]),
    )


def _example_tokens(run: _SourceRun, columns: dict[str, pa.Array]) -> np.ndarray:
    """OpenAI's per-example count: 3 per message plus role and content tokens, plus 3; a local
    model's examples are counted one by one through its chat template."""
    if not tokens.uses_openai_rule(run.options.model):
        return _templated_tokens(run.count_example, columns)
    rows = len(columns["user"])
    total = np.full(rows, 3, dtype=np.int64)
    for role, values in columns.items():
        total += 3 + run.role_tokens[role] + _column_tokens(values, run.options.model)
        if role == "system":
            total -= np.where(
                pc.equal(values, "").to_numpy(zero_copy_only=False), 3 + run.role_tokens[role], 0
            )
    return total


def _spot_check(run: _SourceRun, lines: pa.Array) -> None:
    """CSV examples are well-formed by construction; a sample per batch proves it stays so, and
    the report says exactly that rather than claiming every row was checked."""
    sample = lines.slice(0, FORMAT_SPOT_CHECK).to_pylist()
    for line in sample:
        issues = check_example(json.loads(line))
        if issues:
            raise AssertionError(f"rendered an invalid example ({issues[0].code}): {line[:200]}")
    run.cover_format(built=len(lines), sampled=len(sample))


def _csv_rows(run: _SourceRun) -> Iterator[CsvBatch]:
    source = run.source
    if source.text is not None:
        if _headerless(source.text, run.options):
            run.summary.notes.append("no header row: every line is a text")
            return read_text_lines(source.text, name=source.name)
        return read_csv_text(source.text, name=source.name)
    assert source.path is not None
    return read_csv_batches(source.path, encoding=run.options.encoding)


def _headerless(text: str, options: PrepareOptions) -> bool:
    """Label-mode CSV text whose first line names no text column is texts only, one a line:
    with one label for all there is nothing else a line could hold."""
    if not options.label_mode or options.label is None or options.label_column:
        return False
    if options.column_map:
        return False
    header = csv_text_header(text)
    return header is None or not is_label_header(header, options)


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
    run: _SourceRun, columns: dict[str, pa.Array], counts: np.ndarray, lines: pa.Array
) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """Truncate (when asked) or mark for rejection the examples over the token limit."""
    over = np.flatnonzero(counts > run.limit) if run.limit else np.empty(0, np.int64)
    dropped = np.zeros(len(lines), dtype=bool)
    fitted_lines: dict[int, str] = {}
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
        fitted_lines[int(i)] = render_example(fitted)
        counts[i] = run.count_example({"messages": fitted})
    if fitted_lines:
        mask = np.zeros(len(lines), dtype=bool)
        mask[list(fitted_lines)] = True
        lines = pc.replace_with_mask(lines, mask, pa.array(list(fitted_lines.values())))
    return counts, lines, dropped


def _truncate(
    run: _SourceRun, messages: list[dict[str, Any]], extras: dict[str, Any] | None = None
) -> list[dict[str, Any]] | None:
    """Cut the last message so the example fits the limit; None when nothing is left of it or
    it has no text to cut (an assistant turn that only calls tools)."""
    assert run.limit is not None
    model = run.options.model
    last = messages[-1]
    if not isinstance(last.get("content"), str):
        return None
    budget = tokens.count_tokens(last["content"], model)
    while budget > 0:
        excess = run.count_example({"messages": messages, **(extras or {})})
        excess -= run.limit
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


def _prepare_csv(run: _SourceRun) -> None:
    batches = _csv_rows(run)
    first = next(batches, None)
    if first is not None:
        prepare_batches(run, _plan_for(run, first), itertools.chain([first], batches))


def prepare_batches(run: _SourceRun, plan: ColumnPlan, batches: Iterable[CsvBatch]) -> None:
    """Every batch of a CSV source in this process, the source's progress advancing."""
    read = 0
    for batch in batches:
        _prepare_csv_batch(run, plan, batch)
        read += _batch_bytes(batch.table)
        run.advance(read)


def _plan_for(run: _SourceRun, batch: CsvBatch) -> ColumnPlan:
    """The file's column plan, made from its first batch and noted in the source's summary."""
    summary = run.summary
    plan = plan_columns(run.source.name, batch.columns, run.options)
    summary.notes.append(f"columns: {plan.describe()}")
    if batch.dialect.note:
        summary.notes.append(batch.dialect.note)
    if batch.dialect.delimiter != ",":
        summary.notes.append(f"delimiter {batch.dialect.delimiter!r}")
    return plan


def prepare_batch_part(
    options: PrepareOptions,
    source: Source,
    plan: ColumnPlan,
    batch: CsvBatch,
    path: Path,
    checks: list[Check] | None,
) -> SourcePart:
    """One batch of a large CSV into a part file of its own (a worker's share, parallel.py),
    checked with the suite's `checks` as read by the run; what it adds to the source's counts,
    rules and sample comes back as a SourcePart."""
    with PartWriter(path) as writer:
        run = _SourceRun(options, source, writer, None)
        run.runners[plan.kind] = SourceValidator(plan.kind, checks)
        _prepare_csv_batch(run, plan, batch)
    samples = {kind: validator.sample for kind, validator in run.runners.items()}
    return SourcePart(-1, str(path), 0, run.summary, run.counters, run.rules, samples)


def _batch_bytes(table: pa.Table) -> int:
    """About how many bytes of the source a batch covered (cells, delimiters, newlines)."""
    cells = sum(pc.sum(pc.binary_length(column)).as_py() or 0 for column in table.columns)
    return cells + table.num_rows * max(1, table.num_columns)


def _read_rejects(run: _SourceRun, batch: CsvBatch) -> None:
    """Rows the reader turned away (too long to read) are input rows, rejected under a rule that
    ran on every row read."""
    read = batch.table.num_rows + len(batch.rejects)
    for rule, description in READ_RULES.items():
        failed = sum(1 for reject in batch.rejects if reject.rule == rule)
        run.rule("read", rule, None, description, failed, checked=read)
    run.summary.rows += len(batch.rejects)
    run.counters.input_rows += len(batch.rejects)
    run.reject(batch.rejects)


def _prepare_csv_batch(run: _SourceRun, plan: ColumnPlan, batch: CsvBatch) -> None:
    _read_rejects(run, batch)
    rows = batch.table.num_rows
    if not rows:
        return
    run.summary.rows += rows
    run.counters.input_rows += rows
    run.counters.trimmed_cells += trimmed_cells(plan, batch.table)
    mapped = apply_plan(plan, batch.table)
    outcome = run.runner(plan.kind).validate(mapped)
    run.record_gx(plan.kind, outcome)
    run.reject(_gx_rejects(plan, batch, outcome))
    good = np.ones(rows, dtype=bool)
    good[list(outcome.failed_rows)] = False
    if not good.any():
        return
    kept = mapped.filter(pa.array(good))
    line_numbers = batch.lines[good]
    columns = to_chat_columns(plan, kept)
    lines = render_columns(columns)
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
    run.cover_limit(len(lines))
    run.reject(over)
    _spot_check(run, lines)
    if dropped.any():
        lines, counts, line_numbers = (
            lines.filter(pa.array(~dropped)),
            counts[~dropped],
            line_numbers[~dropped],
        )
    run.keep(lines, counts, line_numbers)


# -- dialogues and chat JSONL: example by example -------------------------------------------


def _jsonl_examples(source: Source) -> Iterator[tuple[int, Any]]:
    """(line, parsed object or the parse error) for each non-blank line."""
    assert source.path is not None
    return jsonl_records(source.path)


def _turn_frame(examples: list[Example]) -> tuple[pd.DataFrame, list[int]]:
    """One row per message (role, content, sentiment) and the example each row belongs to."""
    roles, contents, sentiments, owners = [], [], [], []
    for position, example in enumerate(examples):
        for message in example.messages:
            if is_function_calling(message):  # calls and results: only the format rules fit them
                continue
            roles.append(message.get("role"))
            content = message.get("content")
            contents.append(content if isinstance(content, str) else json.dumps(content))
            sentiments.append(message.get("sentiment"))
            owners.append(position)
    frame = pd.DataFrame({"role": roles, "content": contents, "sentiment": sentiments})
    return frame, owners


def _prepare_examples(run: _SourceRun, examples: list[Example]) -> None:
    """GX over the turns, the chat-format rules, token limits, then on to the merge."""
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
    checked = limited = 0
    for position, example in enumerate(examples):
        if position in bad:
            continue
        messages = [{k: v for k, v in m.items() if k != "sentiment"} for m in example.messages]
        issues = check_example({"messages": messages, **example.extras})
        checked += 1
        if issues:
            bad[position] = Reject(
                example.source, example.line, "messages", issues[0].code, issues[0].message
            )
            continue
        limited += 1
        count = run.count_example({"messages": messages, **example.extras})
        if run.limit and count > run.limit:
            fitted = _truncate(run, messages, example.extras) if run.options.truncate else None
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
            messages = fitted
            count = run.count_example({"messages": messages, **example.extras})
        lines.append(render_example(messages, example.extras))
        counts.append(count)
        line_numbers.append(example.line)
    _count_format_rules(run, list(bad.values()))
    run.cover_format(checked=checked)
    run.cover_limit(limited)
    run.reject(sorted(bad.values(), key=lambda r: r.line))
    numbers = np.asarray(line_numbers, np.int64)
    run.keep(pa.array(lines, pa.string()), np.asarray(counts, np.int64), numbers)


def _count_format_rules(run: _SourceRun, rejects: list[Reject]) -> None:
    """Chat-format issues join the GX rules in the report's rule table."""
    for reject in rejects:
        if reject.rule in FORMAT_RULES:
            run.rule("format", reject.rule, None, FORMAT_RULES[reject.rule], 1)
        elif reject.rule == "too_many_tokens":
            run.rule("limits", reject.rule, None, RULE_DESCRIPTIONS[reject.rule], 1)


def _trimmed(run: _SourceRun, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Message contents without surrounding whitespace, counted like trimmed CSV cells."""
    result = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and content != content.strip():
            run.counters.trimmed_cells += 1
            message = {**message, "content": content.strip()}
        result.append(message)
    return result


def _prepare_jsonl(run: _SourceRun) -> None:
    source, summary = run.source, run.summary
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
        extras = {key: parsed[key] for key in EXAMPLE_KEYS if key in parsed}
        chunk.append(Example(source.name, number, _trimmed(run, messages), extras))
        if len(chunk) >= EXAMPLE_CHUNK:
            _prepare_examples(run, chunk)
            chunk = []
    _count_format_rules(run, parse_errors)
    run.cover_format(checked=len(parse_errors))
    run.reject(parse_errors)
    _prepare_examples(run, chunk)


def _prepare_dialogues(run: _SourceRun) -> None:
    source, summary = run.source, run.summary
    assert source.path is not None
    log = read_dialogue_log(source.path)
    summary.rows = len(log.turns) + len(log.bad_lines)
    run.counters.input_rows += summary.rows
    sentiments = set(run.options.sentiments) if run.options.sentiments else None
    result = split_conversations(
        log.turns, source.name, sentiments=sentiments, redact=run.options.redact
    )
    dropped = sorted(log.bad_lines + result.dropped, key=lambda d: d.line)  # in file order
    run.reject([Reject(d.source, d.line, d.field, d.rule, d.value) for d in dropped])
    _cover_dialogue_rules(run, log, sentiments is not None)
    for drop in dropped:
        run.rule("dialogues", drop.rule, drop.field, DROP_RULES[drop.rule][1], 1)
    examples = [
        Example(c.source, c.first_line, c.labelled_messages()) for c in result.conversations
    ]
    if run.options.redact:
        run.counters.redacted.update(result.redactions)
        summary.notes.append(_redaction_note(result.redactions))
    _prepare_examples(run, examples)


def _cover_dialogue_rules(run: _SourceRun, log: DialogueFile, filtered: bool) -> None:
    """Every clean-up rule ran over every turn (line checks over every line of a JSONL log)."""
    for rule, (field_name, description) in DROP_RULES.items():
        if rule == SENTIMENT_FILTERED and not filtered:
            continue
        if field_name == "*":  # a line check: only JSONL logs have lines that can fail it
            if not (run.source.path and run.source.path.suffix.lower() == ".jsonl"):
                continue
            rows = len(log.turns) + len(log.bad_lines)
        else:
            rows = len(log.turns)
        run.rule("dialogues", rule, field_name, description, checked=rows)


def _redaction_note(found: Counter[str]) -> str:
    """What redaction replaced in one source, per kind, or that it found nothing."""
    if not sum(found.values()):
        return "redaction found no e-mail addresses, phone or card numbers to replace"
    parts = [f"{REDACTION_NAMES[kind]} {found[kind]}" for kind in REDACTION_KINDS]
    return "redacted: " + ", ".join(parts)


PREPARERS: dict[str, Callable[[_SourceRun], None]] = {
    "csv": _prepare_csv,
    "csv_text": _prepare_csv,
    "jsonl": _prepare_jsonl,
    "dialogues": _prepare_dialogues,
}


def prepare_source(
    index: int,
    source: Source,
    options: PrepareOptions,
    work: Path,
    progress: SourceProgress | None = None,
) -> SourcePart:
    """Phase 1 for one source, into `<work>/parts/`; deterministic and self-contained, so any
    process that sees `work` may run it. Raises InputError for a source that cannot be read."""
    path = part_path(work, index)
    with PartWriter(path) as writer:
        run = _SourceRun(options, source, writer, progress)
        part = SourcePart(index, str(path), run.size, run.summary, run.counters, run.rules)
        workers = parallel.workers_for(source, options)
        if workers > 1:
            parallel.prepare_csv(run, workers, part, work)  # the batches' parts join `part`
        else:
            PREPARERS[source.kind](run)
        run.advance(run.size)
    for kind, validator in run.runners.items():
        part.samples.setdefault(kind, SourceSample()).absorb(validator.sample)
    return part


# -- the run as a whole ---------------------------------------------------------------------


PIPE_PROBLEM = (
    "is a pipe (process substitution such as <(cat x.csv)?), not a file: ftpipe reads an "
    "input more than once, so give the file itself, or the CSV as text (--csv-text)"
)
OTHER_KINDS = "not .csv, .tsv, .json or .jsonl"


def input_problem(path: Path) -> str | None:
    """Why a named input cannot be read as a file or folder, or None; reads no content."""
    if not os.path.lexists(path):
        return "does not exist"
    if path.is_dir():
        return None
    if path.is_file():
        return _unreadable(path)
    kind = path_kind(path)
    return PIPE_PROBLEM if kind == "a pipe" else f"is {kind}, not a file or folder"


def _unreadable(path: Path) -> str | None:
    """Why a file cannot be opened for reading (permissions, a vanished mount), or None."""
    try:
        with path.open("rb"):
            return None
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"


def check_paths(inputs: Sequence[str | Path], out_root: Path | None = None) -> None:
    """Every named input is a readable file or a folder and the output root can be a folder;
    checked before anything is read, as one line naming the path."""
    for given in inputs:
        problem = input_problem(Path(given))
        if problem:
            raise InputError(str(given), problem)
    problem = unusable_folder(out_root) if out_root is not None else None
    if problem:
        raise InputError(f"output root {out_root}", problem)


def _odd_entries(folder: Path, exclude: Path) -> list[dict[str, str]]:
    """What a folder's listing holds that is neither a file nor a folder (links to nothing,
    pipes, sockets), which the folder scan would otherwise pass over without a word."""
    found = []
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if hidden or path.is_dir() or path.is_file():
            continue
        if path.parent.resolve().is_relative_to(exclude.resolve()):
            continue
        found.append({"path": str(path), "reason": path_kind(path)})
    return found


def _resolve(
    inputs: Sequence[str | Path], csv_text: str | None, out_root: Path
) -> tuple[Resolved, list[dict[str, str]]]:
    """The sources, less unreadable files found in folders, and every input found but skipped
    with why (report.md and the console list them, not only report.json)."""
    folders = [Path(given) for given in inputs if Path(given).is_dir()]
    odd = {str(folder): _odd_entries(folder, out_root) for folder in folders}
    try:
        resolved = resolve_sources(inputs, csv_text, exclude=out_root)
    except InputError as error:
        first = (odd.get(error.source) or [None])[0]
        if first is None:
            raise
        # a folder of broken links: say so, not only that it holds no CSV
        problem = f"{error.problem}; skipped {first['path']}: {first['reason']}"
        raise InputError(error.source, problem) from None
    skipped = [{"path": path, "reason": OTHER_KINDS} for path in resolved.ignored]
    skipped += [entry for entries in odd.values() for entry in entries]
    kept = []
    for source in resolved.sources:
        problem = _unreadable(source.path) if source.path else None
        if problem:
            skipped.append({"path": source.name, "reason": problem})
        else:
            kept.append(source)
    if not kept:
        raise InputError(skipped[0]["path"], skipped[0]["reason"])
    skipped.sort(key=lambda entry: entry["path"])
    ignored = resolved.ignored + [e["path"] for e in skipped if e["reason"] != OTHER_KINDS]
    return Resolved(kept, ignored), skipped


def plan_run(
    inputs: Sequence[str | Path],
    options: PrepareOptions,
    *,
    csv_text: str | None = None,
    out_root: Path | None = None,
) -> RunPlan:
    """Check the paths, resolve the sources, compute the dataset id and make a fresh scratch
    folder for it."""
    out_root = out_root or default_output_root()
    check_paths(inputs, out_root)
    resolved, skipped = _resolve(inputs, csv_text, out_root)
    dataset_id = content_digest(resolved.sources, options.fingerprint())
    plan = RunPlan(
        dataset_id=dataset_id,
        sources=resolved.sources,
        sizes=[source.size for source in resolved.sources],
        ignored=resolved.ignored,
        options=options,
        out_root=out_root,
        created_root=not out_root.exists(),
        skipped=skipped,
    )
    parts_dir(plan.work).mkdir(parents=True)
    return plan


def discard_run(plan: RunPlan) -> None:
    """A run that stopped early leaves nothing behind (nor an output root it created)."""
    shutil.rmtree(plan.work, ignore_errors=True)
    if plan.created_root and plan.out_root.exists() and not any(plan.out_root.iterdir()):
        plan.out_root.rmdir()


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


def finish_run(plan: RunPlan, parts: Iterable[SourcePart]) -> PrepareResult:
    """Phase 2: merge the parts (given in input order), write the report and publish; raises
    PrepareFailed, after publishing the report and rejects, when the result breaks the rules."""
    merger: Merger | None = None
    try:
        merger = Merger(plan.options, plan.work, plan.total_bytes)
        for part in parts:
            merger.add(part)
        report = merger.finish(plan.dataset_id, plan.out_dir, plan.ignored)
        report["skipped_inputs"] = plan.skipped
    except BaseException:
        if merger is not None:
            merger.close()
        discard_run(plan)
        raise
    problem = _check_outcome(report, plan.options, plan.out_dir)
    if problem:
        report.update(status="failed", error=problem)
    _publish(plan.work, plan.out_dir, report, failed=problem is not None)
    if problem:
        raise PrepareFailed(f"dataset {plan.dataset_id}", problem, report)
    return PrepareResult(plan.dataset_id, plan.out_dir, report)


def _source_progress(progress: Progress, name: str, start: int, total: int) -> SourceProgress:
    """One source's bytes as a share of the whole run, for the caller's progress callback."""
    return lambda done: progress(name, min(start + done, total), total)


def _each_part(plan: RunPlan, progress: Progress | None) -> Iterator[SourcePart]:
    """Phase 1 source by source, lazily: the merge drops each part before the next is made."""
    start, total = 0, plan.total_bytes
    for index, (source, size) in enumerate(zip(plan.sources, plan.sizes, strict=True)):
        report = _source_progress(progress, source.name, start, total) if progress else None
        yield prepare_source(index, source, plan.options, plan.work, report)
        start += size


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
    plan = plan_run(inputs, options or PrepareOptions(), csv_text=csv_text, out_root=out_root)
    return finish_run(plan, _each_part(plan, progress))
